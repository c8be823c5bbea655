// Package pve backs up and restores Proxmox VE guests: a VMA archive (what
// `vzdump --stdout` writes for a QEMU guest) is stored as a directory of
// its configuration files and one fixed-chunked image per disk, so that
// daily dumps of a guest deduplicate against each other, and written back
// as a valid VMA stream for qmrestore.
package pve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"dj/internal/zeros"
	"dj/pve/vma"
	"dj/repo/archiver"
	"dj/repo/chunker"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// DiskSuffix ends the name of a disk image inside a stored VMA directory
// (drive-scsi0.raw); the other files are the guest's configuration.
const DiskSuffix = ".raw"

// ChunkSize is the fixed chunk size of the disks of a VMA archive (16
// clusters of the stream): the fixed chunker's, so that a disk backed up
// from a dump and the same disk backed up as an image or a device share
// their chunks.
const ChunkSize = chunker.FixedSize

// clustersPerChunk is how many clusters of a stream make one chunk.
const clustersPerChunk = ChunkSize / vma.ClusterSize

// defaultMemChunks is how many chunks being assembled are held in memory
// by default (128 MiB); the clusters of further ones wait in a spill file.
const defaultMemChunks = 128 << 20 / ChunkSize

// Sniff reports whether the stream br starts with a valid VMA header,
// without consuming anything. br must buffer at least MaxPeek bytes.
func Sniff(br *bufio.Reader) bool {
	b, err := br.Peek(60)
	if err != nil || !vma.Magic(b) {
		return false
	}
	size := int(binary.BigEndian.Uint32(b[56:]))
	if size > br.Size() {
		return false
	}
	h, err := br.Peek(size)
	if err != nil {
		return false
	}
	_, err = vma.NewReader(bytes.NewReader(h))
	return err == nil
}

// MaxPeek is the buffer size Sniff needs.
const MaxPeek = 4 << 20

// BackupOptions configure BackupVMA.
type BackupOptions struct {
	// Archiver are the options of the backup run.
	Archiver archiver.Options
	// SpillDir is where clusters that arrive far ahead of their chunk's
	// others wait (os.TempDir() when empty).
	SpillDir string
	// MemoryChunks is how many chunks being assembled are held in memory
	// (128 MiB of them when 0); vzdump sends each disk nearly in order, so
	// few are.
	MemoryChunks int
	// Finish, when set, is called after the stream is read whole and
	// before the snapshot is written; its error aborts the backup (a
	// failed vzdump never becomes a snapshot).
	Finish func() error
}

// BackupVMA backs up the VMA stream r as a directory named name at the
// root of a new snapshot: the archive's configuration files, and each disk
// as NAME.raw cut into fixed chunks of ChunkSize bytes. Clusters may arrive
// in any order; chunks are saved as soon as they are whole. A stream that
// is cut short or damaged fails the backup and writes no snapshot.
func BackupVMA(ctx context.Context, repo archiver.Repository, r io.Reader, name string, opts BackupOptions) (*snapshot.Snapshot, error) {
	name = strings.Trim(name, "/")
	if err := tree.ValidName(name); err != nil {
		return nil, fmt.Errorf("archive name: %w", err)
	}
	vr, err := vma.NewReader(r)
	if err != nil {
		return nil, err
	}
	aopts := opts.Archiver
	aopts.FixedChunkSize = ChunkSize
	s := archiver.NewStream(ctx, repo, aopts)
	defer s.Close()
	imp := &importer{s: s, vr: vr, h: vr.Header(), memChunks: opts.MemoryChunks}
	if imp.memChunks <= 0 {
		imp.memChunks = defaultMemChunks
	}
	if err := imp.run(opts.SpillDir); err != nil {
		return nil, err
	}
	if opts.Finish != nil {
		if err := opts.Finish(); err != nil {
			return nil, err
		}
	}
	dir, err := imp.tree(name)
	if err != nil {
		return nil, err
	}
	id, err := s.SaveTree(&tree.Tree{Nodes: []*tree.Node{dir}})
	if err != nil {
		return nil, err
	}
	return s.Finish([]string{"/" + name}, id)
}

// importer assembles a stream's clusters into chunks.
type importer struct {
	s    *archiver.Stream
	vr   *vma.Reader
	h    vma.Header
	devs map[uint8]*disk
	// open are the chunks being assembled; free are spare buffers.
	open             map[chunkKey]*assembly
	free             [][]byte
	inMem, memChunks int
	spill            *os.File
}

type chunkKey struct {
	dev   uint8
	chunk uint32
}

// disk is one device of the archive.
type disk struct {
	d      vma.Device
	base   int64 // its offset in the spill file
	chunks []*archiver.Pending
	// stored counts the bytes of its non-zero 4 KiB blocks.
	stored uint64
}

// chunkLen returns the length of chunk i of the disk.
func (d *disk) chunkLen(i uint32) int {
	start := int64(i) * ChunkSize
	return int(min(int64(ChunkSize), int64(d.d.Size)-start))
}

// assembly is a chunk whose clusters are arriving.
type assembly struct {
	buf     []byte // nil when its clusters go to the spill file
	have    uint64 // a bit per cluster
	need    int
	got     int
	nonzero bool
}

func (imp *importer) run(spillDir string) error {
	imp.devs = map[uint8]*disk{}
	imp.open = map[chunkKey]*assembly{}
	var base int64
	for _, d := range imp.h.Devices {
		n := (d.Size + ChunkSize - 1) / ChunkSize
		imp.devs[d.ID] = &disk{d: d, base: base, chunks: make([]*archiver.Pending, n)}
		base += int64(n) * ChunkSize
	}
	defer func() {
		if imp.spill != nil {
			imp.spill.Close()
		}
	}()
	for {
		c, err := imp.vr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := imp.s.Context().Err(); err != nil {
			return err
		}
		if err := imp.add(c, spillDir); err != nil {
			return err
		}
	}
	if len(imp.open) != 0 { // the reader checked every cluster came
		return fmt.Errorf("vma: %d chunks left incomplete", len(imp.open))
	}
	return nil
}

// add places one cluster in its chunk and saves the chunk once whole.
func (imp *importer) add(c vma.Cluster, spillDir string) error {
	d := imp.devs[c.Device]
	key := chunkKey{c.Device, c.Num / clustersPerChunk}
	a := imp.open[key]
	if a == nil {
		n := d.chunkLen(key.chunk)
		a = &assembly{need: (n + vma.ClusterSize - 1) / vma.ClusterSize}
		if imp.inMem < imp.memChunks {
			if k := len(imp.free); k > 0 {
				a.buf, imp.free = imp.free[k-1][:n], imp.free[:k-1]
			} else {
				a.buf = make([]byte, n, ChunkSize)
			}
			imp.inMem++
		}
		imp.open[key] = a
	}
	within := int(c.Num%clustersPerChunk) * vma.ClusterSize
	data := c.Data[:min(vma.ClusterSize, d.chunkLen(key.chunk)-within)]
	if !c.Zero {
		a.nonzero = true
		for b := 0; b < len(data); b += vma.BlockSize {
			blk := data[b:min(len(data), b+vma.BlockSize)]
			if !zeros.All(blk) {
				d.stored += uint64(len(blk))
			}
		}
	}
	if a.buf != nil {
		copy(a.buf[within:], data)
	} else if !c.Zero {
		if err := imp.spillWrite(d.base+int64(key.chunk)*ChunkSize+int64(within), data, spillDir); err != nil {
			return err
		}
	}
	a.have |= 1 << (c.Num % clustersPerChunk)
	a.got++
	if a.got < a.need {
		return nil
	}
	delete(imp.open, key)
	return imp.save(d, key.chunk, a)
}

// save hands a whole chunk to the stream.
func (imp *importer) save(d *disk, i uint32, a *assembly) error {
	buf, err := imp.s.Buffer()
	if err != nil {
		return err
	}
	n := d.chunkLen(i)
	buf = buf[:0]
	switch {
	case a.buf != nil:
		buf = append(buf, a.buf...)
		imp.free = append(imp.free, a.buf[:0])
		imp.inMem--
	case !a.nonzero:
		buf = append(buf, make([]byte, n)...)
	default:
		buf = append(buf, make([]byte, n)...)
		off := d.base + int64(i)*ChunkSize
		if _, err := imp.spill.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			imp.s.ReleaseBuffer(buf)
			return fmt.Errorf("read spilled clusters: %w", err)
		}
		// Give the space back; a file system without hole punching keeps it
		// until the end.
		_ = unix.Fallocate(int(imp.spill.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, int64(n))
	}
	d.chunks[i] = imp.s.SaveChunk(buf)
	return nil
}

func (imp *importer) spillWrite(off int64, data []byte, dir string) error {
	if imp.spill == nil {
		f, err := os.CreateTemp(dir, "dj-vma-spill-")
		if err != nil {
			return fmt.Errorf("spill file: %w", err)
		}
		_ = os.Remove(f.Name()) // gone when closed, whatever happens
		imp.spill = f
	}
	if _, err := imp.spill.WriteAt(data, off); err != nil {
		return fmt.Errorf("spill file: %w", err)
	}
	return nil
}

// tree builds the archive's directory node once every chunk is saved.
func (imp *importer) tree(name string) (*tree.Node, error) {
	t := time.Unix(imp.h.CTime, 0)
	var nodes []*tree.Node
	names := map[string]bool{}
	for _, d := range imp.h.Devices {
		dk := imp.devs[d.ID]
		n := &tree.Node{Name: d.Name + DiskSuffix, Type: tree.File, Mode: 0o600, Size: d.Size, Links: 1, FixedChunk: ChunkSize}
		archiver.NodeMeta(n, t)
		for _, p := range dk.chunks {
			id, err := p.Wait()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n.Name, err)
			}
			n.Content = append(n.Content, id)
		}
		// Fewer blocks than the size marks the image sparse: restore
		// writes its zero blocks as holes.
		n.Blocks = (dk.stored + 511) / 512
		names[n.Name] = true
		nodes = append(nodes, n)
		imp.s.FileDone("/"+name+"/"+n.Name, n)
	}
	for _, c := range imp.h.Configs {
		if names[c.Name] || strings.HasSuffix(c.Name, DiskSuffix) {
			return nil, fmt.Errorf("vma: config %q has the name of a disk image", c.Name)
		}
		ids, size, err := imp.s.SaveFile(bytes.NewReader(c.Data), 0)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", c.Name, err)
		}
		n := &tree.Node{Name: c.Name, Type: tree.File, Mode: 0o600, Size: size, Blocks: (size + 511) / 512, Links: 1, Content: ids}
		archiver.NodeMeta(n, t)
		nodes = append(nodes, n)
		imp.s.FileDone("/"+name+"/"+n.Name, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	sub, err := imp.s.SaveTree(&tree.Tree{Nodes: nodes})
	if err != nil {
		return nil, err
	}
	dir := &tree.Node{Name: name, Type: tree.Dir, Mode: os.ModeDir | 0o700, Subtree: &sub}
	archiver.NodeMeta(dir, t)
	return dir, nil
}
