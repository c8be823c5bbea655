// Package local stores a dj repository in a directory of the local file
// system:
//
//	config  keys/<id>  data/<2 hex>/<pack id>  index/<id>  snapshots/<id>  locks/<id>
//
// Files are written atomically and durably (temporary file in the target
// directory, fsync, rename, fsync of the directory) and are made read-only
// once written, like restic's local backend.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"dj/backend"
	"dj/internal/directio"
)

const (
	dirMode  = 0o700
	fileMode = 0o400

	// writeChunk is how much Save writes between checks of its context.
	writeChunk = 4 << 20
)

// tempFile is the part of *os.File that Save uses; tests substitute it to
// simulate a full disk.
type tempFile interface {
	io.Writer
	Name() string
	Sync() error
	Chmod(mode fs.FileMode) error
	Close() error
}

// Local is a Backend over a directory. Its methods are safe for concurrent
// use.
type Local struct {
	dir string

	// createTemp creates a temporary file in dir; os.CreateTemp in
	// production.
	createTemp func(dir, pattern string) (tempFile, error)

	// packs keeps recently read pack files open.
	packs *fdCache
}

var _ backend.Backend = (*Local)(nil)

// New returns a Backend over dir without checking whether dir holds a
// repository. It is meant for servers (`dj serve`) that host a repository
// a client creates later: call Init to lay the directory out. Directories
// missing below dir are created on demand by Save.
func New(dir string) *Local {
	return &Local{
		packs: newFDCache(),
		dir:   filepath.Clean(dir),
		createTemp: func(dir, pattern string) (tempFile, error) {
			return os.CreateTemp(dir, pattern)
		},
	}
}

// Create lays out a new repository in dir (creating dir if needed) and
// returns a Backend for it. It refuses, with an error satisfying
// errors.Is(err, fs.ErrExist), when dir already holds a config file. The
// config file itself is not written: the repository layer saves it.
func Create(ctx context.Context, dir string) (*Local, error) {
	l := New(dir)
	_, err := os.Lstat(l.configPath())
	switch {
	case err == nil:
		return nil, fmt.Errorf("create repository at %s: config file already exists: %w", dir, fs.ErrExist)
	case errors.Is(err, syscall.ENOTDIR):
		return nil, fmt.Errorf("create repository at %s: %s", dir, NotDirectory(dir))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("create repository at %s: %w", dir, err)
	}
	if err := l.Init(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// Open returns a Backend for the existing repository in dir. When dir has no
// config file the error says "no repository at DIR" and satisfies
// errors.Is(err, fs.ErrNotExist).
func Open(ctx context.Context, dir string) (*Local, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := New(dir)
	fi, err := os.Stat(l.configPath())
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no repository at %s: %w", dir, fs.ErrNotExist)
		}
		if errors.Is(err, syscall.ENOTDIR) {
			// dir, or a directory above it, is a file: no repository
			// can be there.
			return nil, fmt.Errorf("no repository at %s: %s: %w", dir, NotDirectory(dir), errNotDir)
		}
		return nil, fmt.Errorf("open repository at %s: %w", dir, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open repository at %s: config is not a regular file", dir)
	}
	return l, nil
}

// errNotDir is both fs.ErrNotExist (no repository can be there) and
// syscall.ENOTDIR (why).
var errNotDir = notDirErr{}

type notDirErr struct{}

func (notDirErr) Error() string { return "not a directory" }
func (notDirErr) Is(target error) bool {
	return target == fs.ErrNotExist || target == syscall.ENOTDIR
}

// NotDirectory names the part of dir that is not a directory, for the
// error when a path to a repository runs through a file.
func NotDirectory(dir string) string {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil {
			if !fi.IsDir() {
				return p + " is a file, not a directory"
			}
			break
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	return "a part of the path is not a directory"
}

// Init creates the directory layout of a repository (dir itself, keys,
// data with its 256 subdirectories data/00..data/ff, index, snapshots,
// locks). It is idempotent and does not look at the config file.
func (l *Local) Init(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dirs := []string{l.dir}
	for _, t := range backend.AllFileTypes {
		if t != backend.ConfigFile {
			dirs = append(dirs, filepath.Join(l.dir, string(t)))
		}
	}
	for i := 0; i < 256; i++ {
		dirs = append(dirs, filepath.Join(l.dir, string(backend.PackFile), fmt.Sprintf("%02x", i)))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return fmt.Errorf("create repository at %s: %w", l.dir, err)
		}
	}
	for _, d := range []string{filepath.Join(l.dir, string(backend.PackFile)), l.dir, filepath.Dir(l.dir)} {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("create repository at %s: %w", l.dir, err)
		}
	}
	return nil
}

// Location returns the directory of the repository.
func (l *Local) Location() string { return l.dir }

// Close does nothing; a Local holds no resources between calls.
func (l *Local) Close() error {
	l.packs.closeAll()
	return nil
}

func (l *Local) configPath() string { return filepath.Join(l.dir, "config") }

// path returns the file name of h after checking that h is well formed.
func (l *Local) path(h backend.Handle) (string, error) {
	if err := h.Validate(); err != nil {
		return "", err
	}
	switch h.Type {
	case backend.ConfigFile:
		return l.configPath(), nil
	case backend.PackFile:
		return filepath.Join(l.dir, string(h.Type), h.Name[:2], h.Name), nil
	default:
		return filepath.Join(l.dir, string(h.Type), h.Name), nil
	}
}

// Save stores data under h atomically: it is written to a temporary file in
// the target directory, synced, made read-only and renamed over the target,
// and the directory is synced. On any error, including a full disk, the
// temporary file is removed and nothing else changes.
func (l *Local) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(h)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if err := l.save(ctx, p, data); err != nil {
		return fmt.Errorf("save %v in %s: %w", h, l.dir, describe(err))
	}
	l.packs.invalidate(p) // a replaced file must be read anew
	return nil
}

func (l *Local) save(ctx context.Context, p string, data []byte) (err error) {
	dir := filepath.Dir(p)
	pattern := "." + filepath.Base(p) + backend.TempMarker + "*"
	f, err := l.createTemp(dir, pattern)
	if errors.Is(err, fs.ErrNotExist) && dir != l.dir {
		// A subdirectory is missing (a repository served before Init, or
		// removed by hand): create it and try again.
		if mkErr := os.MkdirAll(dir, dirMode); mkErr != nil {
			return mkErr
		}
		f, err = l.createTemp(dir, pattern)
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	for rest := data; len(rest) > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(rest), writeChunk)
		if _, err := f.Write(rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	if err := finishTemp(f); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	// The file is in place; a failing directory sync is still reported,
	// but the file must not be removed (it may be a retried upload's).
	return syncDir(dir)
}

// Prefetch asks the kernel to start reading a whole file into the page
// cache, without waiting: a reader that will load many whole packs one
// after another (check --read-data) keeps the disk busy while it verifies
// the pack before. Errors are ignored; the later Load reports them.
func (l *Local) Prefetch(ctx context.Context, h backend.Handle) {
	if ctx.Err() != nil {
		return
	}
	p, err := l.path(h)
	if err != nil {
		return
	}
	f, err := os.Open(p)
	if err != nil {
		return
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_WILLNEED)
	_ = f.Close()
}

// directChunk is the size of each direct read: larger requests cost the
// kernel more (it pins every page of the request) without reading faster.
const directChunk = 2 << 20

// directInFlight is how many direct reads of one file run at once.
const directInFlight = 4

// LoadUncached reads a whole file from the disk itself, bypassing the page
// cache (O_DIRECT): a check of stored data must see what the disk holds, not
// a cached copy, and reading around the cache saves the kernel a copy. It
// reads into buf when buf starts at a 4096-byte boundary and has room for
// the file rounded up to 4096 bytes, else into a new buffer, and returns the
// file's bytes (whose capacity the caller may pass back next time). Where
// the file system has no O_DIRECT, it reads through the cache.
func (l *Local) LoadUncached(ctx context.Context, h backend.Handle, buf []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := l.path(h)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) { // no O_DIRECT on this file system
		f, err = os.Open(p)
	}
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	size := fi.Size()
	room := (size + directio.Align - 1) / directio.Align * directio.Align
	if !directio.IsAligned(buf, room) {
		buf = directio.AlignedBuffer(int(room))
	}
	buf = buf[:room]
	// Read the segments of the file at once: O_DIRECT gets no read-ahead,
	// so the disk sees as many requests as there are segments in flight.
	var wg sync.WaitGroup
	errs := make([]error, (room+directChunk-1)/directChunk)
	sem := make(chan struct{}, directInFlight)
	for k := range errs {
		off := int64(k) * directChunk
		end := min(room, off+directChunk)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[k] = preadFull(ctx, f, buf[off:end], off, min(size, end)-off)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("load %v: %w", h, err)
		}
	}
	return buf[:size], nil
}

// preadFull reads want bytes at off into buf (which may be longer, for
// alignment), through the cache if the file system refuses a direct read.
func preadFull(ctx context.Context, f *os.File, buf []byte, off, want int64) error {
	var n int64
	for n < want {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := unix.Pread(int(f.Fd()), buf[n:], off+n)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EINVAL) {
			// Refused direct (an unaligned piece): read it through the cache.
			g, oerr := os.Open(f.Name())
			if oerr != nil {
				return oerr
			}
			_, err = g.ReadAt(buf[n:want], off+n)
			g.Close()
			return err
		}
		if err != nil {
			return err
		}
		if m == 0 {
			return io.ErrUnexpectedEOF
		}
		n += int64(m)
	}
	return nil
}

// CreateTemp creates an empty temporary file in the directory of files of
// type t, for a file that is written piece by piece and then moved into
// place with SaveTemp. Its name marks it as temporary: List skips it and
// RemoveStaleTemp removes it if the writer dies.
func (l *Local) CreateTemp(ctx context.Context, t backend.FileType) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !t.Valid() || t == backend.ConfigFile {
		return nil, fmt.Errorf("create temporary file: invalid file type %q: %w", t, fs.ErrInvalid)
	}
	dir := filepath.Join(l.dir, string(t))
	f, err := os.CreateTemp(dir, ".new"+backend.TempMarker+"*")
	if errors.Is(err, fs.ErrNotExist) {
		if mkErr := os.MkdirAll(dir, dirMode); mkErr != nil {
			return nil, fmt.Errorf("create temporary file in %s: %w", dir, describe(mkErr))
		}
		f, err = os.CreateTemp(dir, ".new"+backend.TempMarker+"*")
	}
	if err != nil {
		return nil, fmt.Errorf("create temporary file in %s: %w", dir, describe(err))
	}
	return f, nil
}

// SaveTemp stores a file made by CreateTemp under h, as Save would store
// its content: it is synced, made read-only and renamed into place, and the
// directory is synced. f is closed in every case, and removed on error.
func (l *Local) SaveTemp(ctx context.Context, h backend.Handle, f *os.File) (err error) {
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
			err = fmt.Errorf("save %v in %s: %w", h, l.dir, describe(err))
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(h)
	if err != nil {
		return err
	}
	if filepath.Dir(filepath.Dir(tmp)) != filepath.Clean(l.dir) && filepath.Dir(tmp) != filepath.Clean(l.dir) {
		return fmt.Errorf("temporary file %s is not in the repository: %w", tmp, fs.ErrInvalid)
	}
	if err := finishTemp(f); err != nil {
		return err
	}
	dir := filepath.Dir(p)
	err = os.Rename(tmp, p)
	if errors.Is(err, fs.ErrNotExist) {
		if mkErr := os.MkdirAll(dir, dirMode); mkErr != nil {
			return mkErr
		}
		err = os.Rename(tmp, p)
	}
	if err != nil {
		return err
	}
	l.packs.invalidate(p)
	// The file is in place; a failing directory sync is reported (the
	// deferred removal of the temporary name then finds nothing).
	return syncDir(dir)
}

// finishTemp makes a written temporary file durable and read-only, and
// closes it.
func finishTemp(f tempFile) error {
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Chmod(fileMode); err != nil {
		return err
	}
	return f.Close()
}

// describe adds a plain-words hint to errors a user can act on.
func describe(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("disk full: %w", err)
	case errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("disk quota exceeded: %w", err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("file system is read-only: %w", err)
	}
	return err
}

// syncDir makes a directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		// Some file systems cannot sync directories; nothing more to do.
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Load reads length bytes of h starting at offset, or everything from offset
// on when length is 0. A range that does not lie inside the file gives an
// error satisfying errors.Is(err, io.ErrUnexpectedEOF).
func (l *Local) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	var buf []byte
	err := l.load(ctx, h, offset, length, func(n int64) []byte {
		buf = make([]byte, n)
		return buf
	})
	return buf, err
}

// LoadInto reads exactly len(buf) bytes of h at offset into buf, so hot
// paths can reuse buffers instead of allocating (and zeroing) one per read.
func (l *Local) LoadInto(ctx context.Context, h backend.Handle, offset int64, buf []byte) error {
	if len(buf) == 0 {
		return fmt.Errorf("load %v: empty buffer: %w", h, fs.ErrInvalid)
	}
	return l.load(ctx, h, offset, len(buf), func(int64) []byte { return buf })
}

func (l *Local) load(ctx context.Context, h backend.Handle, offset int64, length int, alloc func(n int64) []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(h)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if offset < 0 || length < 0 {
		return fmt.Errorf("load %v: invalid range offset %d length %d: %w", h, offset, length, fs.ErrInvalid)
	}
	var f *os.File
	var size int64
	if h.Type == backend.PackFile {
		cf, err := l.packs.acquire(p)
		if err != nil {
			return fmt.Errorf("load %v: %w", h, err)
		}
		defer l.packs.release(cf)
		f, size = cf.f, cf.size
		if length > 0 {
			cf.readAhead(offset, int64(length))
		}
	} else {
		f, err = os.Open(p)
		if err != nil {
			return fmt.Errorf("load %v: %w", h, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("load %v: %w", h, err)
		}
		size = fi.Size()
	}
	if offset > size || (length > 0 && int64(length) > size-offset) {
		return fmt.Errorf("load %v: range %d+%d beyond size %d: %w", h, offset, length, size, io.ErrUnexpectedEOF)
	}
	n := int64(length)
	if length == 0 {
		n = size - offset
	}
	buf := alloc(n)
	got, err := f.ReadAt(buf, offset)
	if err != nil && (got < len(buf) || !errors.Is(err, io.EOF)) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the file shrank under us
		}
		return fmt.Errorf("load %v: %w", h, err)
	}
	return nil
}

// Stat returns the size and modification time of h.
func (l *Local) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, err
	}
	p, err := l.path(h)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat: %w", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Remove deletes h.
func (l *Local) Remove(ctx context.Context, h backend.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(h)
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	l.packs.invalidate(p)
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// List calls fn for every file of type t. Temporary files, hidden files and
// anything that is not a regular file are skipped. For packs it walks all
// subdirectories of data/. A missing type directory lists nothing.
func (l *Local) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !t.Valid() {
		return fmt.Errorf("list: invalid file type %q: %w", t, fs.ErrInvalid)
	}
	if t == backend.ConfigFile {
		fi, err := os.Stat(l.configPath())
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list config: %w", err)
		}
		return fn(backend.FileInfo{Name: "", Size: fi.Size(), ModTime: fi.ModTime()})
	}
	dir := filepath.Join(l.dir, string(t))
	if t != backend.PackFile {
		return l.listDir(ctx, dir, "", fn)
	}
	subdirs, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	for _, e := range subdirs {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := l.listDir(ctx, filepath.Join(dir, e.Name()), e.Name(), fn); err != nil {
			return err
		}
	}
	return nil
}

// listDir lists the regular files in dir whose names begin with prefix.
func (l *Local) listDir(ctx context.Context, dir, prefix string, fn func(backend.FileInfo) error) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !backend.ValidName(e.Name()) || !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since ReadDir
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", dir, err)
		}
		if err := fn(backend.FileInfo{Name: e.Name(), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}
