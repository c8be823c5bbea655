//go:build bench

// Command loopback-nopt is go-fuse's loopback file system with the same
// options as its example/loopback program (1 s entry and attribute
// timeouts), except that its files offer no passthrough file descriptor:
// every read is a FUSE READ served by the daemon's pread. It is the FUSE
// ceiling for a daemon that must produce file data itself (perf-baseline.md's
// C3). Usage: loopback-nopt MOUNTPOINT ORIGINAL.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose Open hands out a file without passthrough.
type node struct {
	*fs.LoopbackNode
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
)

// WrapChild wraps every new node of the tree.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{ops.(*fs.LoopbackNode)}
}

// Open opens the underlying file and serves it through file.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &file{fh.(*fs.LoopbackFile)}, fl, 0
}

// file forwards what a reader needs, and nothing that offers passthrough.
type file struct {
	lf *fs.LoopbackFile
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileGetattrer = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileLseeker   = (*file)(nil)
)

// Read fills buf with pread(2) in the daemon.
func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	r, errno := f.lf.Read(ctx, buf, off)
	if errno != 0 {
		return nil, errno
	}
	b, st := r.Bytes(buf)
	if st != fuse.OK {
		return nil, syscall.EIO
	}
	r.Done()
	return fuse.ReadResultData(b), 0
}

// Release closes the file.
func (f *file) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }

// Getattr stats the open file.
func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}

// Flush is called on close(2).
func (f *file) Flush(ctx context.Context) syscall.Errno { return f.lf.Flush(ctx) }

// Lseek supports SEEK_DATA and SEEK_HOLE.
func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: loopback-nopt MOUNTPOINT ORIGINAL")
		os.Exit(2)
	}
	root, err := fs.NewLoopbackRoot(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loopback-nopt:", err)
		os.Exit(1)
	}
	sec := time.Second
	opts := &fs.Options{
		AttrTimeout:     &sec,
		EntryTimeout:    &sec,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName: os.Args[2],
			Name:   "loopback-nopt",
		},
	}
	server, err := fs.Mount(os.Args[1], &node{root.(*fs.LoopbackNode)}, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loopback-nopt: mount:", err)
		os.Exit(1)
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-c
		server.Unmount()
	}()
	server.Wait()
}
