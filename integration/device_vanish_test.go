package integration

// A block device that fails in the middle of a backup (issue 13: "a device
// that disappears mid-read"): a loop device over a file of a small FUSE
// file system that answers EIO from half-way, as a disk that was pulled
// or died. dj must name the device and the error, exit non-zero, and never
// store the part it read as if it were the device.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dyingDisk is a FUSE file system of one file, "disk", whose reads at or
// past failAt fail with EIO.
type dyingDisk struct {
	gofs.Inode
	size, failAt int64
	failed       atomic.Int64 // reads refused
}

func (d *dyingDisk) OnAdd(ctx context.Context) {
	f := &dyingFile{d: d}
	d.AddChild("disk", d.NewPersistentInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG}), false)
}

type dyingFile struct {
	gofs.Inode
	d *dyingDisk
}

func (f *dyingFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o644
	out.Size = uint64(f.d.size)
	return 0
}

func (f *dyingFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *dyingFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off+int64(len(dest)) > f.d.failAt {
		f.d.failed.Add(1)
		return nil, syscall.EIO
	}
	n := min(int64(len(dest)), f.d.size-off)
	for i := range dest[:n] {
		p := off + int64(i)
		dest[i] = byte(p>>12) ^ byte(p)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

var (
	_ gofs.NodeOnAdder   = (*dyingDisk)(nil)
	_ gofs.NodeGetattrer = (*dyingFile)(nil)
	_ gofs.NodeOpener    = (*dyingFile)(nil)
	_ gofs.NodeReader    = (*dyingFile)(nil)
)

func TestDeviceFailsMidRead(t *testing.T) {
	requireRoot(t)
	requireCmd(t, "losetup")
	e := newEnv(t)
	e.must("init")
	mnt := filepath.Join(e.dir, "dying")
	os.MkdirAll(mnt, 0o755)
	d := &dyingDisk{size: 64 << 20, failAt: 24 << 20}
	srv, err := gofs.Mount(mnt, d, &gofs.Options{MountOptions: fuse.MountOptions{FsName: "dying", Name: "dying"}})
	if err != nil {
		t.Skipf("FUSE: %v", err)
	}
	t.Cleanup(func() { srv.Unmount() })
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", filepath.Join(mnt, "disk")).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device over a FUSE file: %v %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	dev := filepath.Join(e.dir, "vg0-dying")
	if err := os.Symlink(loop, dev); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(e.dir, "etc")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "fstab"), []byte("/dev/vg0/dying / ext4 defaults 0 1\n"), 0o644)

	res := e.run("backup", "--read-special", dev, other)
	t.Logf("exit %d, stderr:\n%s", res.code, res.stderr)
	if d.failed.Load() == 0 {
		t.Fatal("the device never failed a read: the test did not test anything")
	}
	if res.code == 0 {
		t.Fatal("a backup whose device failed mid-read exited 0")
	}
	if !strings.Contains(res.stderr, "vg0-dying") || !strings.Contains(strings.ToLower(res.stderr), "input/output error") {
		t.Errorf("the error does not name the device and the I/O error:\n%s", res.stderr)
	}
	// A snapshot, if any (restic's exit 3: incomplete), must not hold the
	// device cut short as if it were whole.
	for _, s := range e.snapshots() {
		ls := e.must("ls", "--long", s.ID)
		for _, line := range strings.Split(ls, "\n") {
			if strings.HasSuffix(line, "/vg0-dying") {
				t.Errorf("snapshot %s stores the device read half-way: %s", s.ID[:8], line)
			}
		}
		if !strings.Contains(ls, "fstab") {
			t.Errorf("snapshot %s lacks the files that could be read:\n%s", s.ID[:8], ls)
		}
	}
	if res.code != 3 && len(e.snapshots()) != 0 {
		t.Errorf("exit %d with a snapshot; restic's code for an incomplete snapshot is 3", res.code)
	}
	if code, problems, _ := e.checkJSON("--read-data"); code != 0 {
		t.Fatalf("check after the failed device: exit %d %v", code, problems)
	}
}
