//go:build linux

package fusefs

import (
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// noOpendirFS answers OPENDIR with ENOSYS, so that the kernel lists
// directories without opening them first: one request less per directory
// on the path of a walk (find, tar, du), and no RELEASEDIR. The kernel then
// treats every directory as if opened with FOPEN_CACHE_DIR|FOPEN_KEEP_CACHE:
// it keeps listings, and (with auto_inval_data, which go-fuse asks for)
// drops one when the directory's mtime changes. Snapshot trees never
// change; the layout directories (snapshots/, hosts/...) change their
// mtime with the snapshot set (buildLayout). Each listing request is served
// from a directory handle of go-fuse's node file system opened for that
// request alone (its listings are seekable lists).
type noOpendirFS struct {
	fuse.RawFileSystem
}

func (w noOpendirFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

func (w noOpendirFS) ReleaseDir(in *fuse.ReleaseIn) {
	if in.Fh != 0 {
		w.RawFileSystem.ReleaseDir(in)
	}
}

func (w noOpendirFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return w.withHandle(cancel, in, func(in *fuse.ReadIn) fuse.Status { return w.RawFileSystem.ReadDirPlus(cancel, in, out) })
}

func (w noOpendirFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return w.withHandle(cancel, in, func(in *fuse.ReadIn) fuse.Status { return w.RawFileSystem.ReadDir(cancel, in, out) })
}

func (w noOpendirFS) withHandle(cancel <-chan struct{}, in *fuse.ReadIn, read func(*fuse.ReadIn) fuse.Status) fuse.Status {
	if in.Fh != 0 {
		return read(in)
	}
	oin := fuse.OpenIn{InHeader: in.InHeader}
	var oout fuse.OpenOut
	if st := w.RawFileSystem.OpenDir(cancel, &oin, &oout); !st.Ok() {
		return st
	}
	rin := *in
	rin.Fh = oout.Fh
	st := read(&rin)
	w.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: oout.Fh})
	return st
}

// mountNoOpendir is fs.Mount with the node file system wrapped.
func mountNoOpendir(dir string, root fs.InodeEmbedder, options *fs.Options) (*fuse.Server, error) {
	raw := fs.NewNodeFS(root, options)
	server, err := fuse.NewServer(noOpendirFS{raw}, dir, &options.MountOptions)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, err
	}
	return server, nil
}
