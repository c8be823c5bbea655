package integration

// End-to-end tests of disk images (issue 13): an ext4 file system made
// with mkfs.ext4 -d, backed up through a loop device with --read-special
// and as a --chunker-files image, deduplicated and read back.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// makeExt4Image writes an ext4 file system of size bytes holding a small
// tree of files to path, and returns that tree's directory.
func makeExt4Image(t *testing.T, path string, size int64) string {
	t.Helper()
	requireCmd(t, "mkfs.ext4")
	src := filepath.Join(t.TempDir(), "guest")
	g := newTreeGen(t, 99)
	g.addFiles(src, 6<<20)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", src, path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return src
}

// attachLoop attaches path read-only as a loop device until the test ends.
func attachLoop(t *testing.T, path string) string {
	t.Helper()
	requireRoot(t)
	requireCmd(t, "losetup")
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", path).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

func TestImageReadSpecialAndChunkerFiles(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	makeExt4Image(t, img, 64<<20)
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}

	// A block device, by content, named through a symlink (as LVM's
	// /dev/VG/LV are).
	loop := attachLoop(t, img)
	dev := filepath.Join(dir, "vg0-disk")
	if err := os.Symlink(loop, dev); err != nil {
		t.Fatal(err)
	}
	id1 := e.backupSnapshot("--read-special", dev)
	if got := e.must("dump", id1, dev); sha([]byte(got)) != sha(want) {
		t.Fatalf("the device dumped back differs (%d bytes, want %d)", len(got), len(want))
	}
	ls := e.must("ls", "--long", id1, dev)
	if !strings.HasPrefix(lastLine(ls), "-") || !strings.Contains(lastLine(ls), "67108864") {
		t.Errorf("the device is not stored as a file:\n%s", ls)
	}
	// Read again (a device's times say nothing), but nothing new stored.
	res := e.run("backup", "--json", "--read-special", dev)
	if res.code != 0 {
		t.Fatalf("second backup: %s", res.stderr)
	}
	var sum struct {
		DataAdded           uint64 `json:"data_added"`
		TotalBytesProcessed uint64 `json:"total_bytes_processed"`
	}
	parseJSON(t, "summary", lastLine(res.stdout), &sum)
	if sum.TotalBytesProcessed < uint64(len(want)) || sum.DataAdded > 64<<10 {
		t.Errorf("unchanged device: %d bytes read, %d added", sum.TotalBytesProcessed, sum.DataAdded)
	}

	// The same image as a file in fixed chunks deduplicates against the
	// device (same chunker, same offsets).
	res = e.run("backup", "--json", "--chunker-files", "*.img", img)
	if res.code != 0 {
		t.Fatalf("image backup: %s", res.stderr)
	}
	parseJSON(t, "summary", lastLine(res.stdout), &sum)
	if sum.DataAdded > 64<<10 {
		t.Errorf("the image file in fixed chunks added %d bytes beside the device's backup", sum.DataAdded)
	}
	target := t.TempDir()
	e.must("restore", "latest", "--target", target)
	got, err := os.ReadFile(filepath.Join(target, img))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("restored image differs: %v", err)
	}
	if res := e.run("backup", "--chunker", "fixed:1k", "--chunker-files", "*.img", img); res.code == 0 {
		t.Error("--chunker fixed:1k was accepted")
	}
}

// makePartitionedImage writes a disk image of size bytes with an MBR
// partition table and an ext4 file system of a small tree in its first
// partition (1 MiB to 40 MiB), and returns the tree's directory.
func makePartitionedImage(t *testing.T, path string, size int64) string {
	t.Helper()
	requireCmd(t, "sfdisk")
	requireCmd(t, "mkfs.ext4")
	src := filepath.Join(t.TempDir(), "guest")
	g := newTreeGen(t, 77)
	g.addFiles(src, 4<<20)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", path)
	cmd.Stdin = strings.NewReader("label: dos\nstart=2048, size=79872, type=83\nstart=81920, type=83\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	// mkfs.ext4 writes at the partition's offset (blocks of 4 KiB).
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "offset=1048576", "-d", src, path, "9984").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return src
}

func TestMapBrowsesAGuestsFiles(t *testing.T) {
	requireRoot(t)
	requireCmd(t, "losetup")
	requireCmd(t, "partx")
	e := newEnv(t)
	e.must("init")
	dir := t.TempDir()
	img := filepath.Join(dir, "drive-scsi0.raw")
	src := makePartitionedImage(t, img, 64<<20)
	want := scanTree(t, src)
	id := e.backupSnapshot("--chunker-files", "*.raw", img)

	out := e.must("map", id+":"+img)
	devs := strings.Fields(out)
	t.Cleanup(func() { e.run("unmap", "--all") })
	if len(devs) != 3 || !strings.HasPrefix(devs[0], "/dev/loop") || devs[1] != devs[0]+"p1" {
		t.Fatalf("dj map printed %q, want a loop device and its two partitions", out)
	}
	mnt := filepath.Join(e.dir, "guest-mnt")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "ro,noload", devs[1], mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", devs[1], err, out)
	}
	got := scanTree(t, mnt)
	delete(got, "lost+found")
	unmountErr := exec.Command("umount", mnt).Run()
	if d := manifestDiff(want, got); len(d) > 0 {
		t.Errorf("the guest's files through dj map differ:\n%s", strings.Join(d, "\n"))
	}
	if unmountErr != nil {
		t.Fatalf("umount: %v", unmountErr)
	}
	// A mounted partition keeps the device; after umount, unmap detaches.
	e.must("unmap", devs[0])
	if _, err := os.Stat(devs[1]); err == nil {
		if b, _ := os.ReadFile("/sys/block/" + filepath.Base(devs[0]) + "/size"); strings.TrimSpace(string(b)) != "0" {
			t.Errorf("%s still attached after unmap (size %s)", devs[0], b)
		}
	}
	if res := e.run("unmap", devs[0]); res.code == 0 {
		t.Error("a second unmap of the same device succeeded")
	}
}
