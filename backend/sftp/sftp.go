// Package sftp stores a repository on an SFTP server, reached through the
// user's own ssh (`ssh [-p port] [user@]host -s sftp`, as restic does), so
// that ~/.ssh/config, the agent, known_hosts, ProxyJump and ControlMaster
// work unchanged.
//
// Files are written to a temporary name beside their final one and
// renamed into place, read-only; directories are created 0700. Requests
// use large packets with many in flight per file, over up to
// Config.Connections SSH connections. Pack files stay open across ranged
// loads (handles.go), so a load of a pack read before is one round trip;
// the backend forgets a pack's handles when it removes or saves it. A connection that ends is dropped
// and opened again by the next call; the call that saw it end fails with
// a ConnectionLostError, which the retry layer retries.
package sftp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"

	"dj/backend"
	"dj/backend/limit"
)

// Modes of what the backend creates.
const (
	dirMode  = 0o700
	fileMode = 0o400
)

// Backend is a backend.Backend on an SFTP server. Its methods are safe for
// concurrent use.
type Backend struct {
	cfg   Config
	pacer *limit.Pacer

	mu     sync.Mutex
	slots  []*slot
	closed bool

	// firstBufs holds buffers of firstRead bytes for the first read of
	// a file loaded whole (readToEnd).
	firstBufs sync.Pool
	// readCap is the most a read of the server answers when it answers
	// less than the backend asks for (files.go, readAt), or 0.
	readCap atomic.Int64
}

// slot is one place for a connection; it is dialled when first needed
// and again after its connection ended.
type slot struct {
	dial sync.Mutex // held while dialling
	// Guarded by Backend.mu: the connection, the calls using the slot,
	// whether a background dial runs and when the last one failed.
	c        *conn
	busy     int
	dialling bool
	failed   time.Time
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.RangeLoader = (*Backend)(nil)
	_ backend.TempCleaner = (*Backend)(nil)
)

func newBackend(ctx context.Context, cfg Config) *Backend {
	if cfg.StallTimeout <= 0 {
		// The stall time-out of ctx (shortened by tests) holds for every
		// connection, those dialed later under a request's context too.
		cfg.StallTimeout = backend.StallTimeout(ctx, DefaultStallTimeout)
	}
	cfg.connect = backend.StallTimeout(ctx, connectTimeout)
	n := cfg.Connections
	if n <= 0 {
		n = DefaultConnections
	}
	b := &Backend{cfg: cfg, pacer: limit.NewPacer(cfg.Rates)}
	for i := 0; i < n; i++ {
		b.slots = append(b.slots, &slot{})
	}
	return b
}

// Open connects and returns a Backend for the existing repository at
// cfg.Path. When there is no config file there, the error says "no
// repository at LOCATION" and satisfies errors.Is(err, fs.ErrNotExist).
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	b := newBackend(ctx, cfg)
	fi, err := b.stat(ctx, b.configPath())
	if err != nil {
		b.Close()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no repository at %s: %w", cfg.Location, fs.ErrNotExist)
		}
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		b.Close()
		return nil, fmt.Errorf("open repository at %s: config is not a regular file", cfg.Location)
	}
	return b, nil
}

// Create connects and lays out a new repository at cfg.Path (creating
// the directory and its parents 0700 if needed). It refuses, with an
// error satisfying errors.Is(err, fs.ErrExist), when a config file is
// already there. The config file itself is not written.
func Create(ctx context.Context, cfg Config) (*Backend, error) {
	b := newBackend(ctx, cfg)
	_, err := b.stat(ctx, b.configPath())
	switch {
	case err == nil:
		b.Close()
		return nil, fmt.Errorf("create repository at %s: config file already exists: %w", cfg.Location, fs.ErrExist)
	case !errors.Is(err, fs.ErrNotExist):
		b.Close()
		return nil, err
	}
	if err := b.init(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("create repository at %s: %w", cfg.Location, err)
	}
	return b, nil
}

// init creates the repository's directories: the path and its parents,
// keys, index, snapshots, locks, data and data/00..data/ff.
func (b *Backend) init(ctx context.Context) error {
	return b.do(ctx, func(c *conn) error {
		if err := mkdirAll(c.client, b.cfg.Path); err != nil {
			return err
		}
		var dirs []string
		for _, t := range backend.AllFileTypes {
			if t != backend.ConfigFile {
				dirs = append(dirs, path.Join(b.cfg.Path, string(t)))
			}
		}
		if err := mkdirs(ctx, c.client, dirs); err != nil {
			return err
		}
		dirs = dirs[:0]
		for i := 0; i < 256; i++ {
			dirs = append(dirs, path.Join(b.cfg.Path, string(backend.PackFile), fmt.Sprintf("%02x", i)))
		}
		return mkdirs(ctx, c.client, dirs)
	})
}

// mkdirs creates the directories, whose parents exist, all requests in
// flight at once.
func mkdirs(ctx context.Context, cl *sftp.Client, dirs []string) error {
	errs := make(chan error, len(dirs))
	for _, d := range dirs {
		go func() { errs <- mkdir(cl, d) }()
	}
	var first error
	for range dirs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// mkdir creates dir with mode 0700; an existing directory is fine.
func mkdir(cl *sftp.Client, dir string) error {
	if err := cl.Mkdir(dir); err != nil {
		if fi, serr := cl.Stat(dir); serr == nil && fi.IsDir() {
			return nil
		}
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if err := cl.Chmod(dir, dirMode); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// mkdirAll creates dir and its missing parents with mode 0700.
func mkdirAll(cl *sftp.Client, dir string) error {
	fi, err := cl.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if parent := path.Dir(dir); parent != dir && parent != "." && parent != "/" {
		if err := mkdirAll(cl, parent); err != nil {
			return err
		}
	}
	return mkdir(cl, dir)
}

// Location returns the location as the user gave it.
func (b *Backend) Location() string { return b.cfg.Location }

// Close ends every SSH connection, all at once.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	var conns []*conn
	for _, s := range b.slots {
		if s.c != nil {
			conns = append(conns, s.c)
			s.c = nil
		}
	}
	b.mu.Unlock()
	// At once: each waits a round trip or two for its ssh to end.
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.close()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) configPath() string { return path.Join(b.cfg.Path, "config") }

// filePath returns the path of h after checking that h is well formed.
func (b *Backend) filePath(h backend.Handle) (string, error) {
	if err := h.Validate(); err != nil {
		return "", err
	}
	switch h.Type {
	case backend.ConfigFile:
		return b.configPath(), nil
	case backend.PackFile:
		return path.Join(b.cfg.Path, string(h.Type), h.Name[:2], h.Name), nil
	default:
		return path.Join(b.cfg.Path, string(h.Type), h.Name), nil
	}
}

func (b *Backend) stat(ctx context.Context, p string) (fs.FileInfo, error) {
	var fi fs.FileInfo
	err := b.do(ctx, func(c *conn) error {
		var err error
		fi, err = c.client.Stat(p)
		return err
	})
	return fi, err
}

// listParallel is how many directories of data/ are read at once.
const listParallel = 8

// List calls fn for every file of type t.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if !t.Valid() {
		return fmt.Errorf("list: invalid file type %q: %w", t, fs.ErrInvalid)
	}
	if t == backend.ConfigFile {
		fi, err := b.stat(ctx, b.configPath())
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list config: %w", err)
		}
		return fn(backend.FileInfo{Size: fi.Size(), ModTime: fi.ModTime()})
	}
	dir := path.Join(b.cfg.Path, string(t))
	if t != backend.PackFile {
		entries, err := b.readDir(ctx, dir)
		if err != nil {
			return err
		}
		return emit(ctx, entries, fn)
	}
	subs, err := b.readDir(ctx, dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type listing struct {
		entries []fs.FileInfo
		err     error
	}
	work := make(chan string)
	results := make(chan listing)
	var wg sync.WaitGroup
	for i := 0; i < listParallel; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				entries, err := b.readDir(ctx, d)
				select {
				case results <- listing{entries, err}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(work)
		for _, s := range subs {
			if !s.IsDir() || len(s.Name()) != 2 {
				continue
			}
			select {
			case work <- path.Join(dir, s.Name()):
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	for r := range results {
		err := r.err
		if err == nil {
			err = emit(ctx, r.entries, fn)
		}
		if err != nil {
			cancel()
			for range results { // let the workers end
			}
			return err
		}
	}
	return ctx.Err()
}

// readDir lists dir; a missing directory is empty.
func (b *Backend) readDir(ctx context.Context, dir string) ([]fs.FileInfo, error) {
	var entries []fs.FileInfo
	err := b.do(ctx, func(c *conn) error {
		var err error
		entries, err = c.client.ReadDirContext(ctx, dir)
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return entries, nil
}

// emit calls fn for the regular files among entries that may be
// repository files.
func emit(ctx context.Context, entries []fs.FileInfo, fn func(backend.FileInfo) error) error {
	for _, e := range entries {
		if !e.Mode().IsRegular() || !backend.ValidName(e.Name()) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(backend.FileInfo{Name: e.Name(), Size: e.Size(), ModTime: e.ModTime()}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// RemoveStaleTemp removes temporary files older than age that uploads
// left behind (a killed process, a dropped connection).
func (b *Backend) RemoveStaleTemp(ctx context.Context, age time.Duration) (int, error) {
	dirs := []string{b.cfg.Path}
	for _, t := range backend.AllFileTypes {
		if t != backend.ConfigFile && t != backend.PackFile {
			dirs = append(dirs, path.Join(b.cfg.Path, string(t)))
		}
	}
	subs, err := b.readDir(ctx, path.Join(b.cfg.Path, string(backend.PackFile)))
	if err != nil {
		return 0, err
	}
	for _, s := range subs {
		if s.IsDir() {
			dirs = append(dirs, path.Join(b.cfg.Path, string(backend.PackFile), s.Name()))
		}
	}
	cutoff := time.Now().Add(-age)
	removed := 0
	for _, d := range dirs {
		entries, err := b.readDir(ctx, d)
		if err != nil {
			return removed, err
		}
		for _, e := range entries {
			if !e.Mode().IsRegular() || !strings.Contains(e.Name(), backend.TempMarker) || e.ModTime().After(cutoff) {
				continue
			}
			p := path.Join(d, e.Name())
			err := b.do(ctx, func(c *conn) error { return c.client.Remove(p) })
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, fmt.Errorf("remove %s: %w", p, err)
			}
			if err == nil {
				removed++
			}
		}
	}
	return removed, nil
}
