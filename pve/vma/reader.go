package vma

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strings"
)

// Cluster is one cluster of a disk as the stream delivers it.
type Cluster struct {
	// Device is the disk's id (Header.Devices).
	Device uint8
	// Num is the cluster's number: it holds the disk's bytes from
	// Num*ClusterSize on.
	Num uint32
	// Data is the cluster's ClusterSize bytes, zeros where the stream
	// stored none. It is valid until the next call of Next.
	Data []byte
	// Zero reports that the stream stored no block of the cluster: Data is
	// all zeros.
	Zero bool
}

// Reader reads a VMA stream: NewReader reads and checks its header, Next
// returns the disks' clusters in the order the stream has them.
type Reader struct {
	r      io.Reader
	h      Header
	dev    [MaxDevices + 1]*devState
	ext    [extentHeaderSize]byte
	data   []byte // the current extent's blocks
	infos  []uint64
	next   int // index into infos
	off    int // offset in data of the next cluster's first block
	cl     []byte
	offset int64 // bytes of the stream read
}

// devState follows which clusters of a disk have come.
type devState struct {
	d     Device
	n     uint64                   // clusters in the disk
	seen  map[uint32]*[1024]uint64 // pages of 65536 clusters, made when touched
	count uint64
}

func (s *devState) mark(num uint32) (dup bool) {
	page := s.seen[num>>16]
	if page == nil {
		page = new([1024]uint64)
		s.seen[num>>16] = page
	}
	w, b := (num&0xffff)>>6, uint64(1)<<(num&63)
	if page[w]&b != 0 {
		return true
	}
	page[w] |= b
	s.count++
	return false
}

// NewReader reads the header of the VMA stream r and checks it.
func NewReader(r io.Reader) (*Reader, error) {
	vr := &Reader{r: r}
	if err := vr.readHeader(); err != nil {
		return nil, err
	}
	return vr, nil
}

// Header returns the stream's header.
func (r *Reader) Header() Header { return r.h }

// Offset returns the number of bytes of the stream read so far.
func (r *Reader) Offset() int64 { return r.offset }

func (r *Reader) readFull(b []byte) error {
	n, err := io.ReadFull(r.r, b)
	r.offset += int64(n)
	return err
}

func (r *Reader) readHeader() error {
	fixed := make([]byte, headerFixedSize)
	if err := r.readFull(fixed[:60]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return formatError("stream ends within its header")
		}
		return err
	}
	if !Magic(fixed) {
		return formatError("no VMA magic or version 1 at its start")
	}
	be := binary.BigEndian
	blobOff, blobSize, headerSize := be.Uint32(fixed[48:]), be.Uint32(fixed[52:]), be.Uint32(fixed[56:])
	switch {
	case headerSize < headerFixedSize || headerSize > maxHeaderSize:
		return formatError("header size %d is outside %d to %d", headerSize, headerFixedSize, maxHeaderSize)
	case headerSize%512 != 0:
		return formatError("header size %d is not a multiple of 512", headerSize)
	case blobOff < headerFixedSize || uint64(blobOff)+uint64(blobSize) > uint64(headerSize):
		return formatError("blob buffer at %d, %d bytes, is outside the header of %d bytes", blobOff, blobSize, headerSize)
	}
	head := make([]byte, headerSize)
	copy(head, fixed[:60])
	if err := r.readFull(head[60:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return formatError("stream ends within its header")
		}
		return err
	}
	var sum [16]byte
	copy(sum[:], head[32:48])
	clear(head[32:48])
	if md5.Sum(head) != sum {
		return formatError("header checksum does not match")
	}
	copy(head[32:48], sum[:])

	copy(r.h.UUID[:], head[8:24])
	r.h.CTime = int64(be.Uint64(head[24:]))
	blobs := head[blobOff : blobOff+blobSize]
	blob := func(ptr uint32, what string) ([]byte, error) {
		if ptr == 0 || uint64(ptr)+2 > uint64(len(blobs)) {
			return nil, formatError("%s at %d is outside the blob buffer of %d bytes", what, ptr, len(blobs))
		}
		n := uint32(binary.LittleEndian.Uint16(blobs[ptr:]))
		if uint64(ptr)+2+uint64(n) > uint64(len(blobs)) {
			return nil, formatError("%s at %d, %d bytes, runs past the blob buffer", what, ptr, n)
		}
		return blobs[ptr+2 : ptr+2+n], nil
	}
	str := func(ptr uint32, what string) (string, error) {
		b, err := blob(ptr, what)
		if err != nil {
			return "", err
		}
		if len(b) < 2 || b[len(b)-1] != 0 {
			return "", formatError("%s at %d is not a string", what, ptr)
		}
		s := string(b[:len(b)-1])
		if strings.ContainsAny(s, "/\x00") || s == "." || s == ".." {
			return "", formatError("%s %q is not a valid name", what, s)
		}
		return s, nil
	}
	names := map[string]bool{}
	for i := 0; i < MaxConfigs; i++ {
		nptr, dptr := be.Uint32(head[2044+4*i:]), be.Uint32(head[3068+4*i:])
		if nptr == 0 && dptr == 0 {
			continue
		}
		name, err := str(nptr, "config name")
		if err != nil {
			return err
		}
		data, err := blob(dptr, "config "+name)
		if err != nil {
			return err
		}
		if names[name] {
			return formatError("config %q comes twice", name)
		}
		names[name] = true
		r.h.Configs = append(r.h.Configs, Config{Name: name, Data: bytes.Clone(data)})
	}
	names = map[string]bool{}
	for id := 1; id <= MaxDevices; id++ {
		info := head[4096+32*id:]
		nptr, size := be.Uint32(info), be.Uint64(info[8:])
		if nptr == 0 && size == 0 {
			continue
		}
		name, err := str(nptr, fmt.Sprintf("device %d name", id))
		if err != nil {
			return err
		}
		if size == 0 || size > maxDeviceSize {
			return formatError("device %s has size %d", name, size)
		}
		if names[name] {
			return formatError("device %q comes twice", name)
		}
		names[name] = true
		d := Device{ID: uint8(id), Name: name, Size: size}
		r.h.Devices = append(r.h.Devices, d)
		r.dev[id] = &devState{d: d, n: d.Clusters(), seen: map[uint32]*[1024]uint64{}}
	}
	if len(r.h.Devices) == 0 {
		return formatError("header names no device")
	}
	return nil
}

// Next returns the next cluster of the stream. At the stream's end it
// checks that every cluster of every disk came and returns io.EOF; a
// stream cut short is an error wrapping ErrFormat.
func (r *Reader) Next() (Cluster, error) {
	for r.next >= len(r.infos) {
		if err := r.readExtent(); err != nil {
			return Cluster{}, err
		}
	}
	info := r.infos[r.next]
	r.next++
	mask := uint16(info >> 48)
	c := Cluster{Device: uint8(info >> 32), Num: uint32(info), Zero: mask == 0}
	if r.cl == nil {
		r.cl = make([]byte, ClusterSize)
	}
	for i := 0; i < 16; i++ {
		blk := r.cl[i*BlockSize : (i+1)*BlockSize]
		if mask&(1<<i) == 0 {
			clear(blk)
			continue
		}
		copy(blk, r.data[r.off:r.off+BlockSize])
		r.off += BlockSize
	}
	c.Data = r.cl
	return c, nil
}

// readExtent reads the next extent header and its blocks; at the end of
// the stream it checks completeness.
func (r *Reader) readExtent() error {
	start := r.offset
	n, err := io.ReadFull(r.r, r.ext[:])
	r.offset += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		return r.complete()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return formatError("stream ends within the extent header at offset %d", start)
	case err != nil:
		return err
	}
	h := r.ext[:]
	if [4]byte(h[:4]) != extentMagic {
		return formatError("no extent magic at offset %d", start)
	}
	if [16]byte(h[8:24]) != r.h.UUID {
		return formatError("extent at offset %d belongs to another archive (its UUID differs)", start)
	}
	var sum [16]byte
	copy(sum[:], h[24:40])
	clear(h[24:40])
	if md5.Sum(h) != sum {
		return formatError("checksum of the extent header at offset %d does not match", start)
	}
	be := binary.BigEndian
	blocks := int(be.Uint16(h[6:]))
	r.infos = r.infos[:0]
	total := 0
	for i := 0; i < ClustersPerExtent; i++ {
		info := be.Uint64(h[40+8*i:])
		if info == 0 {
			continue
		}
		dev, num := uint8(info>>32), uint32(info)
		s := r.dev[dev]
		if dev == 0 || s == nil {
			return formatError("extent at offset %d has a cluster of device %d, which the header does not name", start, dev)
		}
		if uint64(num) >= s.n {
			return formatError("extent at offset %d has cluster %d of %s, which has %d", start, num, s.d.Name, s.n)
		}
		if s.mark(num) {
			return formatError("cluster %d of %s comes twice (again at offset %d)", num, s.d.Name, start)
		}
		total += bits.OnesCount16(uint16(info >> 48))
		r.infos = append(r.infos, info)
	}
	if total != blocks {
		return formatError("extent at offset %d says %d blocks, its clusters hold %d", start, blocks, total)
	}
	if cap(r.data) < blocks*BlockSize {
		r.data = make([]byte, blocks*BlockSize)
	}
	r.data = r.data[:blocks*BlockSize]
	if err := r.readFull(r.data); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return formatError("stream ends within the extent at offset %d", start)
		}
		return err
	}
	r.next, r.off = 0, 0
	return nil
}

// complete checks at the stream's end that every disk is whole.
func (r *Reader) complete() error {
	for _, s := range r.dev {
		if s != nil && s.count != s.n {
			return formatError("stream ends with %d of the %d clusters of %s", s.count, s.n, s.d.Name)
		}
	}
	return io.EOF
}
