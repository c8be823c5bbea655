package vma

import (
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"dj/internal/zeros"
)

// Writer writes a VMA stream: NewWriter writes the header, WriteCluster
// each cluster of each disk (in any order), Close the last extent after
// checking that every cluster was written.
type Writer struct {
	w     io.Writer
	h     Header
	dev   [MaxDevices + 1]*devState
	ext   [extentHeaderSize]byte
	data  []byte
	infos []uint64
	err   error
}

// NewWriter checks h and writes it to w as a VMA header.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	vw := &Writer{w: w, h: h, data: make([]byte, 0, ClustersPerExtent*ClusterSize)}
	head, err := vw.header()
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(head); err != nil {
		return nil, err
	}
	return vw, nil
}

func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00") && len(s) < 65535
}

// header encodes the header.
func (w *Writer) header() ([]byte, error) {
	if len(w.h.Configs) > MaxConfigs {
		return nil, fmt.Errorf("vma: %d configs, at most %d fit", len(w.h.Configs), MaxConfigs)
	}
	if len(w.h.Devices) == 0 {
		return nil, errors.New("vma: an archive needs a device")
	}
	blobs := []byte{0} // offset 0 means none
	add := func(b []byte) (uint32, error) {
		if len(b) > 65535 {
			return 0, fmt.Errorf("vma: a header blob of %d bytes does not fit (at most 65535)", len(b))
		}
		ptr := uint32(len(blobs))
		blobs = binary.LittleEndian.AppendUint16(blobs, uint16(len(b)))
		blobs = append(blobs, b...)
		return ptr, nil
	}
	addString := func(s string) (uint32, error) { return add(append([]byte(s), 0)) }

	be := binary.BigEndian
	fixed := make([]byte, headerFixedSize)
	copy(fixed, headerMagic[:])
	be.PutUint32(fixed[4:], 1)
	copy(fixed[8:24], w.h.UUID[:])
	be.PutUint64(fixed[24:], uint64(w.h.CTime))
	names := map[string]bool{}
	for i, c := range w.h.Configs {
		if !validName(c.Name) || names[c.Name] {
			return nil, fmt.Errorf("vma: config name %q is empty, invalid or repeated", c.Name)
		}
		names[c.Name] = true
		nptr, err := addString(c.Name)
		if err != nil {
			return nil, err
		}
		dptr, err := add(c.Data)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", c.Name, err)
		}
		be.PutUint32(fixed[2044+4*i:], nptr)
		be.PutUint32(fixed[3068+4*i:], dptr)
	}
	names = map[string]bool{}
	for _, d := range w.h.Devices {
		switch {
		case d.ID == 0:
			return nil, fmt.Errorf("vma: device %q has id 0 (ids are 1 to 255)", d.Name)
		case w.dev[d.ID] != nil:
			return nil, fmt.Errorf("vma: device id %d comes twice", d.ID)
		case !validName(d.Name) || names[d.Name]:
			return nil, fmt.Errorf("vma: device name %q is empty, invalid or repeated", d.Name)
		case d.Size == 0 || d.Size > maxDeviceSize:
			return nil, fmt.Errorf("vma: device %s has size %d", d.Name, d.Size)
		}
		names[d.Name] = true
		ptr, err := addString(d.Name)
		if err != nil {
			return nil, err
		}
		info := fixed[4096+32*int(d.ID):]
		be.PutUint32(info, ptr)
		be.PutUint64(info[8:], d.Size)
		w.dev[d.ID] = &devState{d: d, n: d.Clusters(), seen: map[uint32]*[1024]uint64{}}
	}
	size := headerFixedSize + (len(blobs)+511)/512*512
	if size > maxHeaderSize {
		return nil, fmt.Errorf("vma: header of %d bytes is too large", size)
	}
	be.PutUint32(fixed[48:], headerFixedSize)
	be.PutUint32(fixed[52:], uint32(len(blobs)))
	be.PutUint32(fixed[56:], uint32(size))
	head := make([]byte, size)
	copy(head, fixed)
	copy(head[headerFixedSize:], blobs)
	sum := md5.Sum(head)
	copy(head[32:48], sum[:])
	return head, nil
}

// WriteCluster adds cluster num of device dev. data holds the cluster's
// bytes, at most ClusterSize; a shorter data (the end of a disk) is
// padded with zeros. Blocks of zeros are not stored.
func (w *Writer) WriteCluster(dev uint8, num uint32, data []byte) error {
	if w.err != nil {
		return w.err
	}
	s := w.dev[dev]
	switch {
	case s == nil:
		return fmt.Errorf("vma: no device %d", dev)
	case uint64(num) >= s.n:
		return fmt.Errorf("vma: cluster %d is past the end of %s (%d clusters)", num, s.d.Name, s.n)
	case len(data) > ClusterSize:
		return fmt.Errorf("vma: a cluster of %d bytes (at most %d)", len(data), ClusterSize)
	case s.mark(num):
		return fmt.Errorf("vma: cluster %d of %s written twice", num, s.d.Name)
	}
	var mask uint16
	for i := 0; i < 16 && i*BlockSize < len(data); i++ {
		blk := data[i*BlockSize : min(len(data), (i+1)*BlockSize)]
		if zeros.All(blk) {
			continue
		}
		mask |= 1 << i
		w.data = append(w.data, blk...)
		if pad := BlockSize - len(blk); pad > 0 {
			w.data = append(w.data, make([]byte, pad)...)
		}
	}
	w.infos = append(w.infos, uint64(mask)<<48|uint64(dev)<<32|uint64(num))
	if len(w.infos) == ClustersPerExtent {
		return w.flush()
	}
	return nil
}

// flush writes the extent collected so far.
func (w *Writer) flush() error {
	h := w.ext[:]
	clear(h)
	copy(h, extentMagic[:])
	be := binary.BigEndian
	be.PutUint16(h[6:], uint16(len(w.data)/BlockSize))
	copy(h[8:24], w.h.UUID[:])
	for i, info := range w.infos {
		be.PutUint64(h[40+8*i:], info)
	}
	sum := md5.Sum(h)
	copy(h[24:40], sum[:])
	if _, err := w.w.Write(h); err != nil {
		w.err = err
		return err
	}
	if _, err := w.w.Write(w.data); err != nil {
		w.err = err
		return err
	}
	w.infos, w.data = w.infos[:0], w.data[:0]
	return nil
}

// Close writes the last extent. It fails, after writing it, when a
// cluster of a disk was not written: such a stream does not restore.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if len(w.infos) > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.err = errors.New("vma: writer is closed")
	for _, s := range w.dev {
		if s != nil && s.count != s.n {
			return fmt.Errorf("vma: %d of the %d clusters of %s were written", s.count, s.n, s.d.Name)
		}
	}
	return nil
}
