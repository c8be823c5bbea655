// Package powerfs is a file system for tests that loses power: a FUSE
// loopback over a working directory that also follows what a crash of the
// machine would leave of it, and can hand that state out (Cut).
//
// The model is what POSIX promises and no more: a file's data is durable
// as of its last fsync (a file never synced comes back empty), and a
// directory's entries (creates, renames, unlinks, links) are durable as of
// its last fsync. Everything else is lost at a cut. Real file systems
// usually keep more; a program that is safe here is safe on them.
//
// Files are told apart by inode number and birth time, so that an inode
// number reused after an unlink is not taken for the old file.
package powerfs

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// fileKey names one file for its whole life.
type fileKey struct {
	ino   uint64
	btime int64
}

// entry is a durable directory entry.
type entry struct {
	key    fileKey
	mode   fs.FileMode
	target string // of a symlink
}

// FS is a mounted power-losing file system.
type FS struct {
	work, mnt string
	server    *fuse.Server

	mu    sync.Mutex
	data  map[fileKey][]byte           // durable content of files
	dirs  map[fileKey]map[string]entry // durable entries of directories
	root  fileKey
	syncs int
}

// Mount serves the directory work at mnt. What work holds now counts as
// durable.
func Mount(work, mnt string) (*FS, error) {
	f := &FS{work: work, mnt: mnt, data: map[fileKey][]byte{}, dirs: map[fileKey]map[string]entry{}}
	var err error
	if f.root, err = keyOf(work); err != nil {
		return nil, err
	}
	if err := f.snapshotTree(work); err != nil {
		return nil, err
	}
	f.syncs = 0
	var st syscall.Stat_t
	if err := syscall.Stat(work, &st); err != nil {
		return nil, err
	}
	root := &gofs.LoopbackRoot{Path: work, Dev: uint64(st.Dev)}
	root.NewNode = func(r *gofs.LoopbackRoot, _ *gofs.Inode, _ string, _ *syscall.Stat_t) gofs.InodeEmbedder {
		return &node{LoopbackNode: gofs.LoopbackNode{RootData: r}, fs: f}
	}
	root.RootNode = root.NewNode(root, nil, "", &st)
	f.server, err = gofs.Mount(mnt, root.RootNode, &gofs.Options{MountOptions: fuse.MountOptions{FsName: "powerfs", Name: "powerfs"}})
	if err != nil {
		return nil, fmt.Errorf("mount powerfs at %s: %w", mnt, err)
	}
	return f, nil
}

// Unmount stops serving; the working directory keeps what was written.
func (f *FS) Unmount() error { return f.server.Unmount() }

// Syncs returns the number of fsync calls seen since Mount.
func (f *FS) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

func keyOf(p string) (fileKey, error) {
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_BTIME, &sx); err != nil {
		return fileKey{}, &os.PathError{Op: "statx", Path: p, Err: err}
	}
	k := fileKey{ino: sx.Ino}
	if sx.Mask&unix.STATX_BTIME != 0 {
		k.btime = sx.Btime.Sec*1e9 + int64(sx.Btime.Nsec)
	}
	return k, nil
}

// snapshotTree records everything below dir as durable.
func (f *FS) snapshotTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return f.syncDir(p)
		case d.Type().IsRegular():
			return f.syncFile(p)
		}
		return nil
	})
}

// syncFile makes the current content of the file at p durable.
func (f *FS) syncFile(p string) error {
	k, err := keyOf(p)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.data[k] = b
	f.syncs++
	f.mu.Unlock()
	return nil
}

// syncDir makes the current entries of the directory at p durable.
func (f *FS) syncDir(p string) error {
	k, err := keyOf(p)
	if err != nil {
		return err
	}
	list, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	entries := make(map[string]entry, len(list))
	for _, d := range list {
		cp := filepath.Join(p, d.Name())
		ck, err := keyOf(cp)
		if err != nil {
			continue // gone meanwhile
		}
		fi, err := os.Lstat(cp)
		if err != nil {
			continue
		}
		e := entry{key: ck, mode: fi.Mode()}
		if fi.Mode()&fs.ModeSymlink != 0 {
			e.target, _ = os.Readlink(cp)
		}
		entries[d.Name()] = e
	}
	f.mu.Lock()
	f.dirs[k] = entries
	f.syncs++
	f.mu.Unlock()
	return nil
}

// Cut writes what survives a power loss now into out, a directory that
// must not exist: the durable entries of the durable directories from the
// root down, with the durable content of each file.
func (f *FS) Cut(out string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	return f.cutDir(f.root, out, map[fileKey]bool{})
}

func (f *FS) cutDir(k fileKey, out string, seen map[fileKey]bool) error {
	if seen[k] {
		return nil
	}
	seen[k] = true
	for name, e := range f.dirs[k] {
		p := filepath.Join(out, name)
		switch {
		case e.mode.IsDir():
			if err := os.Mkdir(p, e.mode.Perm()|0o700); err != nil {
				return err
			}
			if err := f.cutDir(e.key, p, seen); err != nil {
				return err
			}
		case e.mode&fs.ModeSymlink != 0:
			if err := os.Symlink(e.target, p); err != nil {
				return err
			}
		case e.mode.IsRegular():
			if err := os.WriteFile(p, f.data[e.key], e.mode.Perm()|0o200); err != nil {
				return err
			}
			if err := os.Chmod(p, e.mode.Perm()); err != nil {
				return err
			}
		}
	}
	return nil
}

// node is a loopback node whose fsyncs are recorded.
type node struct {
	gofs.LoopbackNode
	fs *FS
}

func (n *node) backingPath() string {
	return filepath.Join(n.fs.work, n.Path(nil))
}

var _ = (gofs.NodeFsyncer)((*node)(nil))

// Fsync syncs a file (and records its content as durable).
func (n *node) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	if ff, ok := fh.(gofs.FileFsyncer); ok {
		if errno := ff.Fsync(ctx, flags); errno != 0 {
			return errno
		}
	}
	p := n.backingPath()
	fi, err := os.Lstat(p)
	if err != nil {
		return gofs.ToErrno(err)
	}
	if fi.IsDir() {
		err = n.fs.syncDir(p)
	} else {
		err = n.fs.syncFile(p)
	}
	return gofs.ToErrno(err)
}

var _ = (gofs.NodeOpendirHandler)((*node)(nil))

// OpendirHandle opens a directory whose fsync is recorded.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ds, errno := gofs.NewLoopbackDirStream(n.backingPath())
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{ds: ds.(loopbackDir), n: n}, 0, 0
}

// loopbackDir is what go-fuse's loopback directory stream does.
type loopbackDir interface {
	gofs.FileReaddirenter
	gofs.FileSeekdirer
	gofs.FileReleasedirer
	gofs.FileFsyncdirer
}

// dirHandle is an open directory whose fsyncdir records its entries.
type dirHandle struct {
	ds loopbackDir
	n  *node
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.ds.Readdirent(ctx)
}
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.ds.Seekdir(ctx, off)
}
func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) { d.ds.Releasedir(ctx, flags) }

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if errno := d.ds.Fsyncdir(ctx, flags); errno != 0 {
		return errno
	}
	return gofs.ToErrno(d.n.fs.syncDir(d.n.backingPath()))
}
