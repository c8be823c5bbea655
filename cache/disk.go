package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"dj/backend"
)

// Disk is a backend decorator that keeps a local copy of what reading a
// remote repository's snapshots and trees costs: its index and snapshot
// files and its tree packs. Opening the repository again, listing
// snapshots, ls, find, diff and browsing a mount then read them from the
// local disk and send no request for them.
//
// The cache of one repository lives in base/<repository id>, so two
// locations of one repository share it and two repositories never do. The
// id is in the repository's encrypted config, which a backend cannot read:
// a Disk passes every call through until the repository, having opened the
// config, tells it the id with SetRepositoryID (repo.Open does so through
// backend.As). From then on it caches.
//
// Cached files are named by their SHA-256 like the originals. Index and
// snapshot files are checked against their name every time they are read;
// a tree pack once per process, when it is first used (its blobs are
// authenticated by their AEAD on every read anyway). A damaged copy is
// removed and fetched again.
//
// Tree packs are bounded: when the packs in the cache exceed the maximum
// size, the least recently used ones are removed. Index and snapshot files
// are small and always kept.
type Disk struct {
	backend.Backend
	base    string
	maxSize int64

	mu       sync.Mutex
	dir      string              // base/<id>; empty until SetRepositoryID
	verified map[string]bool     // tree packs checked in this process
	inflight map[string]*fetch   // tree packs being fetched
	packSize int64               // bytes of tree packs in the cache; -1 unknown
	touched  map[string]struct{} // tree packs whose last use was recorded
}

// fetch is one download of a tree pack that concurrent readers share.
type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

var (
	_ backend.IDReceiver     = (*Disk)(nil)
	_ backend.TreePackLoader = (*Disk)(nil)
)

// DefaultMaxSize is the default bound on the tree packs a Disk keeps for
// one repository.
const DefaultMaxSize = 4 << 30

// cachedTypes are the whole-file types Disk keeps; they are write-once and
// named by their content.
var cachedTypes = map[backend.FileType]bool{backend.IndexFile: true, backend.SnapshotFile: true}

// NewDisk returns be with an on-disk cache under base (created on demand),
// keeping at most maxSize bytes of tree packs (0: DefaultMaxSize). It
// caches nothing until SetRepositoryID names the repository.
func NewDisk(be backend.Backend, base string, maxSize int64) *Disk {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	return &Disk{Backend: be, base: base, maxSize: maxSize, packSize: -1,
		verified: map[string]bool{}, inflight: map[string]*fetch{}, touched: map[string]struct{}{}}
}

// SetRepositoryID tells d the id of the repository (the id in its config):
// its cache is base/<id>. It records the use of that cache (the
// directory's modification time is its "last used", as `dj cache` shows
// it) and marks base as a cache directory (CACHEDIR.TAG). An id that is
// not a plain file name leaves the cache off.
func (d *Disk) SetRepositoryID(id string) {
	if !backend.ValidName(id) {
		return
	}
	dir := filepath.Join(d.base, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return // no cache: only slower
	}
	writeTag(d.base)
	now := time.Now()
	_ = os.Chtimes(dir, now, now)
	d.mu.Lock()
	d.dir = dir
	d.mu.Unlock()
}

// Dir returns the cache directory of the repository, empty before
// SetRepositoryID.
func (d *Disk) Dir() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dir
}

// cacheTag marks a directory as a cache for backup tools
// (https://bford.info/cachedir/).
const cacheTag = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by dj.\n"

func writeTag(base string) {
	p := filepath.Join(base, "CACHEDIR.TAG")
	if _, err := os.Stat(p); err == nil {
		return
	}
	_ = os.WriteFile(p, []byte(cacheTag), 0o644)
}

// path returns where h is cached, or "" when it is not cacheable now.
func (d *Disk) path(h backend.Handle) string {
	dir := d.Dir()
	if dir == "" || len(h.Name) != 64 || !backend.ValidName(h.Name) {
		return ""
	}
	if h.Type == backend.PackFile {
		return filepath.Join(dir, string(h.Type), h.Name[:2], h.Name)
	}
	return filepath.Join(dir, string(h.Type), h.Name)
}

// Load serves whole index and snapshot files from the cache.
func (d *Disk) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	p := d.path(h)
	if !cachedTypes[h.Type] || offset != 0 || length != 0 || p == "" {
		return d.Backend.Load(ctx, h, offset, length)
	}
	if b, err := os.ReadFile(p); err == nil {
		if sumName(b) == h.Name {
			return b, nil
		}
		_ = os.Remove(p) // damaged copy: fetch again
	}
	b, err := d.Backend.Load(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	if sumName(b) == h.Name {
		store(p, b)
	}
	return b, nil
}

// Save stores h and keeps a copy of index and snapshot files and of tree
// packs (a pack whose writer marked it with backend.WithPackKind).
func (d *Disk) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := d.Backend.Save(ctx, h, data); err != nil {
		return err
	}
	p := d.path(h)
	if p == "" {
		return nil
	}
	switch {
	case cachedTypes[h.Type]:
		store(p, data)
	case h.Type == backend.PackFile && backend.PackKindFrom(ctx) == backend.TreePack:
		if store(p, data) {
			d.mu.Lock()
			d.verified[h.Name] = true
			d.mu.Unlock()
			d.added(int64(len(data)))
		}
	}
	return nil
}

// LoadTreePack reads length bytes at offset of the pack h, which holds
// trees: the first read fetches the whole pack into the cache, later ones
// are served from there. The repository calls it (found with backend.As)
// for every tree blob it loads.
func (d *Disk) LoadTreePack(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	p := d.path(h)
	if p == "" || h.Type != backend.PackFile {
		return d.Backend.Load(ctx, h, offset, length)
	}
	if b, ok, err := d.readCached(p, h, offset, length); ok {
		return b, err
	}
	data, err := d.fetchPack(ctx, h, p)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 || offset+int64(length) > int64(len(data)) {
		return nil, fmt.Errorf("load %s at %d, %d bytes: beyond its %d bytes: %w", h, offset, length, len(data), io.ErrUnexpectedEOF)
	}
	if length == 0 {
		length = len(data) - int(offset)
	}
	return append([]byte(nil), data[offset:offset+int64(length)]...), nil
}

// readCached reads a range of a cached tree pack, checking the whole pack
// against its name on its first use in this process; false means it is not
// there (or was damaged and is gone now).
func (d *Disk) readCached(p string, h backend.Handle, offset int64, length int) ([]byte, bool, error) {
	d.mu.Lock()
	ok := d.verified[h.Name]
	d.mu.Unlock()
	if !ok {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, false, nil
		}
		if sumName(b) != h.Name {
			_ = os.Remove(p)
			d.forgetSize()
			return nil, false, nil
		}
		d.mu.Lock()
		d.verified[h.Name] = true
		d.mu.Unlock()
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, false, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, nil
	}
	d.touch(p, h.Name)
	if length == 0 {
		length = int(fi.Size() - offset)
	}
	if offset < 0 || length < 0 || offset+int64(length) > fi.Size() {
		return nil, true, fmt.Errorf("load %s at %d, %d bytes: beyond its %d bytes: %w", h, offset, length, fi.Size(), io.ErrUnexpectedEOF)
	}
	buf := make([]byte, length)
	if _, err := f.ReadAt(buf, offset); err != nil {
		return nil, false, nil
	}
	return buf, true, nil
}

// fetchPack downloads the whole pack h once for all concurrent callers and
// keeps it in the cache when it matches its name.
func (d *Disk) fetchPack(ctx context.Context, h backend.Handle, p string) ([]byte, error) {
	d.mu.Lock()
	for {
		if d.verified[h.Name] {
			// Another caller's fetch stored the pack after this caller
			// found it missing: read that, fetch nothing.
			d.mu.Unlock()
			if b, err := os.ReadFile(p); err == nil {
				d.touch(p, h.Name)
				return b, nil
			}
			d.mu.Lock()
			delete(d.verified, h.Name) // evicted since
			continue
		}
		f, ok := d.inflight[h.Name]
		if !ok {
			break
		}
		d.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// The fetch of a caller that gave up is no answer for the others.
		if f.err == nil || !errors.Is(f.err, context.Canceled) && !errors.Is(f.err, context.DeadlineExceeded) {
			return f.data, f.err
		}
		d.mu.Lock()
	}
	f := &fetch{done: make(chan struct{})}
	d.inflight[h.Name] = f
	d.mu.Unlock()

	f.data, f.err = d.Backend.Load(ctx, h, 0, 0)
	if f.err == nil && sumName(f.data) == h.Name && store(p, f.data) {
		d.mu.Lock()
		d.verified[h.Name] = true
		d.touched[h.Name] = struct{}{}
		d.mu.Unlock()
		d.added(int64(len(f.data)))
	}
	d.mu.Lock()
	delete(d.inflight, h.Name)
	d.mu.Unlock()
	close(f.done)
	return f.data, f.err
}

// touch records the use of a cached tree pack (its modification time),
// once per process: eviction removes the least recently used first.
func (d *Disk) touch(p, name string) {
	d.mu.Lock()
	_, done := d.touched[name]
	d.touched[name] = struct{}{}
	d.mu.Unlock()
	if !done {
		now := time.Now()
		_ = os.Chtimes(p, now, now)
	}
}

// forgetSize makes the next addition measure the cached packs again.
func (d *Disk) forgetSize() {
	d.mu.Lock()
	d.packSize = -1
	d.mu.Unlock()
}

// added accounts for a tree pack of n bytes stored in the cache and evicts
// the least recently used packs while the cache holds more than maxSize.
func (d *Disk) added(n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.packSize >= 0 {
		d.packSize += n
		if d.packSize <= d.maxSize {
			return
		}
	}
	packs := listPacks(filepath.Join(d.dir, string(backend.PackFile)))
	var total int64
	for _, pk := range packs {
		total += pk.size
	}
	for _, pk := range packs { // oldest first
		if total <= d.maxSize {
			break
		}
		if os.Remove(pk.path) == nil {
			total -= pk.size
			delete(d.verified, filepath.Base(pk.path))
			delete(d.touched, filepath.Base(pk.path))
		}
	}
	d.packSize = total
}

// cachedPack is one tree pack file in a cache.
type cachedPack struct {
	path string
	size int64
	used time.Time
}

// listPacks returns the packs under dir, least recently used first.
func listPacks(dir string) []cachedPack {
	var out []cachedPack
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || len(e.Name()) != 64 {
			return nil
		}
		if fi, err := e.Info(); err == nil {
			out = append(out, cachedPack{path: p, size: fi.Size(), used: fi.ModTime()})
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].used.Before(out[j].used) })
	return out
}

func sumName(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// store writes a cache file atomically and reports whether it did;
// failures only cost speed.
func store(p string, b []byte) bool {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return false
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return false
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return false
	}
	return true
}

// Remove deletes the file and its cached copy.
func (d *Disk) Remove(ctx context.Context, h backend.Handle) error {
	if p := d.path(h); p != "" && (cachedTypes[h.Type] || h.Type == backend.PackFile) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		} else if err == nil && h.Type == backend.PackFile {
			d.forgetSize()
		}
	}
	return d.Backend.Remove(ctx, h)
}

// List lists the files of type t. A complete listing of index or
// snapshot files also drops the cached copies of those the repository no
// longer has (removed by another machine's forget or prune).
func (d *Disk) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	dir := d.Dir()
	if !cachedTypes[t] || dir == "" {
		return d.Backend.List(ctx, t, fn)
	}
	live := map[string]bool{}
	err := d.Backend.List(ctx, t, func(fi backend.FileInfo) error {
		live[fi.Name] = true
		return fn(fi)
	})
	if err == nil {
		dropStale(filepath.Join(dir, string(t)), live)
	}
	return err
}

// dropStale removes the files in dir whose names are not in live.
func dropStale(dir string, live map[string]bool) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !live[e.Name()] {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Prune removes cached files that the repository no longer has.
func (d *Disk) Prune(ctx context.Context) error {
	dir := d.Dir()
	if dir == "" {
		return nil
	}
	for t := range cachedTypes {
		live := map[string]bool{}
		if err := d.Backend.List(ctx, t, func(fi backend.FileInfo) error { live[fi.Name] = true; return nil }); err != nil {
			return err
		}
		dropStale(filepath.Join(dir, string(t)), live)
	}
	return nil
}

// Unwrap returns the wrapped backend (see backend.As).
func (d *Disk) Unwrap() backend.Backend { return d.Backend }
