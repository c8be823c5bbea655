//go:build linux

package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Mounted is a mounted file system.
type Mounted struct {
	server     *fuse.Server
	mountpoint string
	cancel     context.CancelFunc // stops background work (read-ahead)
	done       chan struct{}      // closed when the server has stopped
	unmountMu  sync.Mutex
	fs         *mountFS  // for tests in this package
	root       *fs.Inode // for tests in this package
}

// Mountpoint returns the absolute path the file system is mounted on.
func (m *Mounted) Mountpoint() string { return m.mountpoint }

// Wait blocks until the file system is unmounted (by Unmount, by
// "fusermount3 -u", or because the ctx given to Mount was cancelled).
func (m *Mounted) Wait() { <-m.done }

// Unmount unmounts the file system and waits until it has stopped serving.
// It fails (and the mount stays) while files on it are open. Unmounting an
// already unmounted file system is not an error.
func (m *Mounted) Unmount() error {
	m.unmountMu.Lock()
	defer m.unmountMu.Unlock()
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.server.Unmount(); err != nil {
		select {
		case <-m.done: // unmounted from outside meanwhile
			return nil
		default:
		}
		return fmt.Errorf("unmount %s: %s (is a file on it still open? close it, or run fusermount3 -u %s)", m.mountpoint, oneLine(err.Error()), m.mountpoint)
	}
	<-m.done
	return nil
}

// Mount mounts the repository's snapshots on mountpoint and serves them
// until the mount is unmounted or ctx is cancelled (which unmounts it). It
// returns once the file system is ready.
func Mount(ctx context.Context, mountpoint string, repo Repository, opts Options) (*Mounted, error) {
	if repo == nil {
		return nil, errors.New("fusefs: no repository")
	}
	abs, err := checkMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	if err := checkFUSE("/dev/fuse", opts.AllowOther); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()

	bgctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	mfs := newMountFS(bgctx, repo, opts)

	var root fs.InodeEmbedder
	if opts.Root != nil {
		root, err = mfs.subRoot(ctx, opts.Root)
	} else {
		root, err = mfs.metaRoot(ctx)
	}
	if err != nil {
		cancel()
		return nil, err
	}

	server, err := mountServer(abs, root, opts)
	if err != nil {
		cancel()
		return nil, err
	}
	m := &Mounted{server: server, mountpoint: abs, cancel: cancel, done: make(chan struct{}), fs: mfs, root: root.EmbeddedInode()}
	go func() {
		server.Wait()
		cancel()
		close(m.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			if err := m.Unmount(); err != nil {
				opts.Logf("dj mount: %v", err)
			}
		case <-m.done:
		}
	}()
	return m, nil
}

// withDefaults fills in the defaults of unset options.
func (o Options) withDefaults() Options {
	if len(o.PathTemplates) == 0 {
		o.PathTemplates = DefaultPathTemplates()
	}
	if o.TimeTemplate == "" {
		o.TimeTemplate = DefaultTimeTemplate
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	if o.FsName == "" {
		o.FsName = "dj"
	}
	if o.Logf == nil {
		o.Logf = log.Printf
	}
	return o
}

// Kernel cache timeouts. Snapshot contents never change, so the kernel may
// keep what it learnt about them for long; the snapshot listings change when
// snapshots are added or forgotten.
const (
	longTimeout  = time.Hour
	shortTimeout = time.Second
	// noTimeout is the smallest non-zero timeout: it keeps go-fuse from
	// applying the long defaults, and the kernel from caching at all.
	noTimeout = time.Nanosecond
)

// fuseOptions returns the go-fuse options of a mount. direct selects a mount
// by the mount system call (as root) rather than through fusermount3.
func fuseOptions(opts Options, direct bool) *fs.Options {
	long := longTimeout
	o := &fs.Options{
		EntryTimeout:    &long,
		AttrTimeout:     &long,
		NegativeTimeout: &long,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: fuse.FUSE_ROOT_ID},
		Logger:          log.New(logfWriter(opts.Logf), "", 0),
	}
	mo := &o.MountOptions
	mo.FsName = opts.FsName
	mo.Name = "dj"
	mo.MaxWrite = 1 << 20
	mo.MaxBackground = 64
	mo.AllowOther = opts.AllowOther
	mo.EnableSymlinkCaching = true
	// Not READDIRPLUS_AUTO: with it, tar of the Go tree (which lists a
	// directory, then lstats its entries) took 3.0-3.4 s cold instead of
	// 2.7 s, paying a LOOKUP per entry after the first listing request,
	// and find was no faster (A/B on a quiet machine, 2026-12-04). Big
	// directories, and files listed for a walker that never stats them,
	// go out with names alone through dirNode's lookup hook instead
	// (listing.go).
	mo.Debug = opts.DebugFUSE
	mo.Options = []string{"ro", "nosuid", "nodev"}
	if !opts.NoDefaultPermissions {
		mo.Options = append(mo.Options, "default_permissions")
	}
	if direct {
		// The mount system call takes these as flags; "noatime" in the
		// option string would make the kernel refuse the mount.
		mo.DirectMountStrict = true
		mo.DirectMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOATIME
	} else {
		mo.Options = append(mo.Options, "noatime")
	}
	return o
}

// mountServer mounts root on mountpoint: by the mount system call when
// running as root, falling back to fusermount3.
func mountServer(mountpoint string, root fs.InodeEmbedder, opts Options) (*fuse.Server, error) {
	var directErr error
	if os.Geteuid() == 0 {
		server, err := mountDirect(mountpoint, root, opts)
		if err == nil {
			return server, nil
		}
		directErr = err
		if opts.DebugFUSE {
			opts.Logf("dj mount: mount system call failed (%v), trying fusermount3", err)
		}
	}
	if _, err := lookFusermount(); err != nil {
		if directErr != nil {
			return nil, fmt.Errorf("mount %s: %s", mountpoint, oneLine(directErr.Error()))
		}
		return nil, fmt.Errorf("%w: fusermount3 not found; install the fuse3 package", ErrNoFUSE)
	}
	server, err := mountNoOpendir(mountpoint, root, fuseOptions(opts, false))
	if err != nil {
		msg := oneLine(err.Error())
		if directErr != nil {
			msg = fmt.Sprintf("%s; with fusermount3: %s", oneLine(directErr.Error()), msg)
		}
		return nil, fmt.Errorf("mount %s: %s", mountpoint, msg)
	}
	return server, nil
}

// oneLine joins the lines of a message (fusermount3's output has several).
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// mountDirect mounts by the mount system call. go-fuse (v2.12.1) opens
// /dev/fuse for it without O_CLOEXEC, so every process started afterwards
// would inherit the connection and keep the file system alive (a reader
// would hang in the kernel after dj died); holding ForkLock keeps other
// goroutines from starting processes until the descriptor is marked.
func mountDirect(mountpoint string, root fs.InodeEmbedder, opts Options) (*fuse.Server, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	server, err := mountNoOpendir(mountpoint, root, fuseOptions(opts, true))
	closeOnExecFUSE()
	return server, err
}

// closeOnExecFUSE sets close-on-exec on this process's /dev/fuse descriptors.
func closeOnExecFUSE() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/fuse" {
			syscall.CloseOnExec(fd)
		}
	}
}

// logfWriter adapts a Logf function to an io.Writer for log.Logger.
type logfWriter func(format string, args ...any)

func (w logfWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// checkFUSE reports whether FUSE can be used, with the device at devFuse.
func checkFUSE(devFuse string, allowOther bool) error {
	if _, err := os.Stat(devFuse); err != nil {
		return fmt.Errorf("%w: %s is missing; load the fuse kernel module (modprobe fuse), or give the container the device (--device /dev/fuse)", ErrNoFUSE, devFuse)
	}
	if os.Geteuid() != 0 {
		if _, err := lookFusermount(); err != nil {
			return fmt.Errorf("%w: fusermount3 not found; install the fuse3 package", ErrNoFUSE)
		}
		if allowOther && !userAllowOther() {
			return fmt.Errorf("%w: --allow-other needs the line user_allow_other in /etc/fuse.conf (or run as root)", ErrNoFUSE)
		}
	}
	return nil
}

// lookFusermount finds the fusermount3 (or fusermount) helper as go-fuse does.
func lookFusermount() (string, error) {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := lookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("fusermount3 not found")
}

func lookPath(name string) (string, error) {
	dirs := filepath.SplitList(os.Getenv("PATH"))
	dirs = append(dirs, "/bin", "/usr/bin")
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// userAllowOther reports whether /etc/fuse.conf allows allow_other for
// unprivileged users.
func userAllowOther() bool {
	b, err := os.ReadFile("/etc/fuse.conf")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// checkMountpoint checks that dir can be mounted on and returns its absolute
// path.
func checkMountpoint(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("%w: no mountpoint given", ErrMountpoint)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrMountpoint, dir, err)
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("%w: %s does not exist; create it with mkdir %s", ErrMountpoint, abs, abs)
	case errors.Is(err, syscall.ENOTCONN):
		return "", fmt.Errorf("%w: %s is a dead FUSE mount (transport endpoint is not connected); unmount it with fusermount3 -u %s", ErrMountpoint, abs, abs)
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrMountpoint, err)
	case !st.IsDir():
		return "", fmt.Errorf("%w: %s is not a directory; choose an empty directory", ErrMountpoint, abs)
	}
	if fstype, ok := mountType(abs); ok && strings.HasPrefix(fstype, "fuse") {
		return "", fmt.Errorf("%w: %s is already a FUSE mount point (%s); unmount it first (fusermount3 -u %s) or choose another directory", ErrMountpoint, abs, fstype, abs)
	}
	f, err := os.Open(abs)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrMountpoint, err)
	}
	names, err := f.Readdirnames(1)
	f.Close()
	if err != nil && len(names) == 0 && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("%w: %s: %v", ErrMountpoint, abs, err)
	}
	if len(names) > 0 {
		return "", fmt.Errorf("%w: %s is not empty; choose an empty directory", ErrMountpoint, abs)
	}
	return abs, nil
}

// mountType returns the file system type of the topmost mount on dir, if
// dir is a mount point.
func mountType(dir string) (string, bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	fstype, found := "", false
	for _, line := range strings.Split(string(b), "\n") {
		// ID parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(line)
		if len(f) < 5 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		for i := 5; i+1 < len(f); i++ {
			if f[i] == "-" {
				fstype, found = f[i+1], true
				break
			}
		}
	}
	return fstype, found
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
