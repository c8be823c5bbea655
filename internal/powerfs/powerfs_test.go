package powerfs

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCutKeepsOnlyWhatWasSynced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	base := t.TempDir()
	work, mnt := filepath.Join(base, "work"), filepath.Join(base, "mnt")
	os.MkdirAll(filepath.Join(work, "sub"), 0o755)
	os.MkdirAll(mnt, 0o755)
	os.WriteFile(filepath.Join(work, "old"), []byte("old"), 0o644)
	f, err := Mount(work, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Unmount()

	write := func(name, data string, sync bool) {
		t.Helper()
		fh, err := os.Create(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteString(data)
		if sync {
			if err := fh.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		fh.Close()
	}
	syncDir := func(name string) {
		t.Helper()
		d, err := os.Open(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	cut := func(name string) string {
		t.Helper()
		out := filepath.Join(base, name)
		if err := f.Cut(out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	read := func(p string) (string, bool) {
		b, err := os.ReadFile(p)
		return string(b), err == nil
	}

	write("a", "unsynced data", false) // name made durable below, data not
	write("b", "synced, name not", true)
	write("sub/c", "both", true)
	syncDir("sub")
	os.Remove(filepath.Join(mnt, "old")) // not durable
	out := cut("cut1")
	if _, ok := read(filepath.Join(out, "a")); ok {
		t.Error("a file whose directory was never synced survived")
	}
	if _, ok := read(filepath.Join(out, "b")); ok {
		t.Error("b survived without its directory's sync")
	}
	if s, ok := read(filepath.Join(out, "sub/c")); !ok || s != "both" {
		t.Errorf("sub/c: %q %v", s, ok)
	}
	if s, ok := read(filepath.Join(out, "old")); !ok || s != "old" {
		t.Errorf("an unlink without a directory sync was durable: %q %v", s, ok)
	}

	syncDir(".")
	os.Rename(filepath.Join(mnt, "sub/c"), filepath.Join(mnt, "sub/d"))
	out = cut("cut2")
	if s, _ := read(filepath.Join(out, "a")); s != "" {
		t.Errorf("a's data was never synced but came back as %q", s)
	}
	if s, _ := read(filepath.Join(out, "b")); s != "synced, name not" {
		t.Errorf("b: %q", s)
	}
	if _, ok := read(filepath.Join(out, "old")); ok {
		t.Error("old came back after its directory was synced")
	}
	if _, ok := read(filepath.Join(out, "sub/d")); ok {
		t.Error("a rename without a directory sync was durable")
	}
	syncDir("sub")
	out = cut("cut3")
	if s, _ := read(filepath.Join(out, "sub/d")); s != "both" {
		t.Errorf("renamed file after the sync: %q", s)
	}
	if f.Syncs() == 0 {
		t.Error("no syncs counted")
	}
}
