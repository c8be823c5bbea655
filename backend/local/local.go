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
	"syscall"

	"dj/backend"
)

const (
	dirMode  = 0o700
	fileMode = 0o400
	// groupDirMode and groupFileMode are the modes with ShareWithGroup.
	groupDirMode  = 0o770
	groupFileMode = 0o440

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

	// dirMode and fileMode are the modes of what it creates (before the
	// umask for directories).
	dirMode, fileMode os.FileMode
}

var _ backend.Backend = (*Local)(nil)

// New returns a Backend over dir without checking whether dir holds a
// repository. It is meant for servers (`dj serve`) that host a repository
// a client creates later: call Init to lay the directory out. Directories
// missing below dir are created on demand by Save.
func New(dir string) *Local {
	return &Local{
		packs:   newFDCache(),
		dir:     filepath.Clean(dir),
		dirMode: dirMode, fileMode: fileMode,
		createTemp: func(dir, pattern string) (tempFile, error) {
			return os.CreateTemp(dir, pattern)
		},
	}
}

// ShareWithGroup makes the files and directories l creates from now on
// readable by their group, and the directories writable by it (dj serve
// --group-accessible-repos, as restic's rest-server): files 0440,
// directories 0770, subject to the umask.
func (l *Local) ShareWithGroup() {
	l.dirMode, l.fileMode = groupDirMode, groupFileMode
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
		if err := os.MkdirAll(d, l.dirMode); err != nil {
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
	if h.Type == backend.PackFile {
		// A pack whose removal is undone by a crash is only unused.
		return nil
	}
	// A snapshot, index, lock or key file that came back after a crash
	// could name packs removed after it (a forgotten snapshot would
	// return without its data): the removal is durable before the caller
	// goes on.
	if err := syncDir(filepath.Dir(p)); err != nil {
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
	subdirs, err := readDirIfPresent(dir)
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
	entries, err := readDirIfPresent(dir)
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

// readDirIfPresent reads the entries of dir; a missing directory has none.
func readDirIfPresent(dir string) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return entries, err
}
