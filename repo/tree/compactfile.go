package tree

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"dj/repo/crypto"
)

// SpillOptions say when a Compact moves from memory to files: a directory
// of a million files makes a Compact of about 165 MB, more than a small
// cache budget holds, and its records, names and ids then live in
// temporary files read through a small page cache (FilePageMemory), so
// the tree costs a few MiB of memory whatever its size.
type SpillOptions struct {
	// Dir is where the files are made; empty means os.TempDir(). They are
	// removed from the directory as soon as they are open, so nothing is
	// left behind by a crash.
	Dir string
	// Above is the size in bytes (records, names and ids) past which a
	// Compact being built moves to files; 0 keeps every tree in memory.
	Above int64

	now bool // move to files from the first node (eager)
}

// eager returns spill for a tree of plainLen bytes of JSON, moving to files
// from its first node when its Compact will be larger than Above: a
// Compact takes about half its JSON's bytes (165 MB for the 300 MB of a
// million files), and a builder that grew in memory up to Above first
// held twice that while its arrays grew, and slowed the garbage collector
// of a mount near its memory limit.
func (o SpillOptions) eager(plainLen int) SpillOptions {
	o.now = o.Above > 0 && int64(plainLen)/2 > o.Above
	return o
}

// File page cache: the pages of a Compact's files kept in memory.
const (
	filePageSize = 64 << 10
	filePages    = 64
	// FilePageMemory is what the page cache of a Compact in files takes.
	FilePageMemory = filePageSize * filePages
)

// The files of a Compact, by index.
const (
	fileRecs = iota
	fileStrs
	fileIDs
	numFiles
)

// compactFile holds the records, names and ids of a Compact in three
// unlinked temporary files, and a small page cache over them. It is safe
// for concurrent use.
type compactFile struct {
	files [numFiles]*os.File

	mu    sync.Mutex
	slots []filePage
	where map[pageKey]int // the slot of each cached page
	hand  int             // the clock hand: the next slot to consider
	err   error           // the first read error
}

type pageKey struct {
	file int
	n    int64
}

type filePage struct {
	key   pageKey
	data  []byte
	valid bool // the slot holds key's page
	used  bool // read since the clock hand last passed
}

// newCompactFile makes the three files in dir.
func newCompactFile(dir string) (*compactFile, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	f := &compactFile{where: make(map[pageKey]int)}
	for i := range f.files {
		tmp, err := os.CreateTemp(dir, "dj-tree-*")
		if err != nil {
			f.close()
			return nil, fmt.Errorf("spill tree: %w", err)
		}
		f.files[i] = tmp
		// Unlinked at once: the space is freed when the file is closed,
		// or when the process ends, however it ends.
		if err := os.Remove(tmp.Name()); err != nil {
			f.close()
			return nil, fmt.Errorf("spill tree: %w", err)
		}
	}
	return f, nil
}

// close closes the files (and so frees their space).
func (f *compactFile) close() {
	for i, file := range f.files {
		if file != nil {
			file.Close()
			f.files[i] = nil
		}
	}
}

// readAt copies len(dst) bytes at off of file which into dst, through the
// page cache. A read error zeroes dst and is kept for Err.
func (f *compactFile) readAt(which int, off int64, dst []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(dst) > 0 {
		key := pageKey{which, off / filePageSize}
		p := f.page(key)
		if p == nil {
			clear(dst)
			return
		}
		in := int(off % filePageSize)
		if in >= len(p) {
			f.fail(fmt.Errorf("spilled tree: read past the end of file %d at %d", which, off))
			clear(dst)
			return
		}
		n := copy(dst, p[in:])
		dst, off = dst[n:], off+int64(n)
	}
}

// page returns the bytes of a page, reading it if it is not cached; nil
// after a read error. f.mu must be held.
func (f *compactFile) page(key pageKey) []byte {
	if s, ok := f.where[key]; ok {
		f.slots[s].used = true
		return f.slots[s].data
	}
	if f.err != nil {
		return nil
	}
	var s int
	if len(f.slots) < filePages {
		f.slots = append(f.slots, filePage{data: make([]byte, filePageSize)})
		s = len(f.slots) - 1
	} else {
		// The clock: pass over pages used since the hand last came by.
		for f.slots[f.hand].used {
			f.slots[f.hand].used = false
			f.hand = (f.hand + 1) % len(f.slots)
		}
		s = f.hand
		f.hand = (f.hand + 1) % len(f.slots)
		delete(f.where, f.slots[s].key)
	}
	p := &f.slots[s]
	buf := p.data[:filePageSize]
	n, err := f.files[key.file].ReadAt(buf, key.n*filePageSize)
	if err != nil && !errors.Is(err, io.EOF) {
		p.valid = false
		f.fail(fmt.Errorf("spilled tree: %w", err))
		return nil
	}
	p.key, p.data, p.valid, p.used = key, buf[:n], true, true
	f.where[key] = s
	return p.data
}

func (f *compactFile) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

// rec returns record i.
func (f *compactFile) rec(i int) crec {
	var r crec
	f.readAt(fileRecs, int64(i)*RecordSize, recBytes(&r))
	return r
}

// strs returns a copy of a span of the string arena.
func (f *compactFile) strs(sp span) []byte {
	b := make([]byte, sp.n)
	f.readAt(fileStrs, int64(sp.off), b)
	return b
}

// ids returns a copy of a span of the id arena.
func (f *compactFile) ids(sp span) []crypto.ID {
	ids := make([]crypto.ID, sp.n)
	f.readAt(fileIDs, int64(sp.off)*crypto.IDSize, idBytes(ids))
	return ids
}

// error returns the first read error.
func (f *compactFile) error() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// recBytes returns the memory of a record as bytes: records are written to
// and read from a file of this process only, so their layout is this
// process's.
func recBytes(r *crec) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(r)), RecordSize)
}

// recsBytes is recBytes for a slice of records.
func recsBytes(rs []crec) []byte {
	if len(rs) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&rs[0])), int(RecordSize)*len(rs))
}

// idBytes returns the memory of ids as bytes.
func idBytes(ids []crypto.ID) []byte {
	if len(ids) == 0 {
		return nil
	}
	return unsafe.Slice(&ids[0][0], crypto.IDSize*len(ids))
}

// compactWriter writes the arrays of a Compact being built to its files.
type compactWriter struct {
	f *compactFile
	w [numFiles]*bufio.Writer
}

func newCompactWriter(f *compactFile) *compactWriter {
	cw := &compactWriter{f: f}
	for i, file := range f.files {
		cw.w[i] = bufio.NewWriterSize(file, filePageSize)
	}
	return cw
}

// write appends the records, names and ids to the files.
func (cw *compactWriter) write(recs []crec, strs []byte, ids []crypto.ID) error {
	for i, b := range [numFiles][]byte{recsBytes(recs), strs, idBytes(ids)} {
		if _, err := cw.w[i].Write(b); err != nil {
			return fmt.Errorf("spill tree: %w", err)
		}
	}
	return nil
}

// flush writes out what is buffered.
func (cw *compactWriter) flush() error {
	for _, w := range cw.w {
		if err := w.Flush(); err != nil {
			return fmt.Errorf("spill tree: %w", err)
		}
	}
	return nil
}

// closeWhenUnreachable closes c's files once c is garbage.
func closeWhenUnreachable(c *Compact) {
	runtime.AddCleanup(c, func(f *compactFile) { f.close() }, c.file)
}
