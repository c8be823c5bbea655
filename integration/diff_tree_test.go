package integration

// Trees for the diff tests: what lstat says of every entry, copies that
// keep metadata, and random changes of files, symlinks and directories.

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// diffEntry is what the tests know of one entry of a tree.
type diffEntry struct {
	typ     string // "file", "dir", "symlink"
	content string // file bytes or link target
	st      unix.Stat_t
}

// lstatTree records every entry below root without reading any file in a
// way that changes its access time.
func lstatTree(t *testing.T, root string) map[string]diffEntry {
	t.Helper()
	out := map[string]diffEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var en diffEntry
		if err := unix.Lstat(p, &en.st); err != nil {
			return err
		}
		switch en.st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			en.typ = "file"
			b, err := readNoAtime(p)
			if err != nil {
				return err
			}
			en.content = string(b)
		case unix.S_IFDIR:
			en.typ = "dir"
		case unix.S_IFLNK:
			en.typ = "symlink"
			if en.content, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected type %o", p, en.st.Mode)
		}
		out["/"+rel] = en
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readNoAtime reads a file without updating its access time (dj records
// atimes, so reading the source for the oracle must not change them).
func readNoAtime(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOATIME|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// copyTree copies src to dst with permissions and modification times,
// without changing the access times in src.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, rel)
			return nil
		case fi.Mode().IsRegular():
			b, err := readNoAtime(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, b, 0o600); err != nil {
				return err
			}
			if err := os.Chmod(target, fi.Mode().Perm()); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(fi.ModTime().UnixNano()), unix.NsecToTimespec(fi.ModTime().UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		fi, err := os.Lstat(filepath.Join(src, dirs[i]))
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dst, dirs[i])
		if err := os.Chmod(target, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(target, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
}

// otherPerm picks a permission from perms that differs from cur.
func (g *treeGen) otherPerm(perms []fs.FileMode, cur fs.FileMode) fs.FileMode {
	for {
		if m := perms[g.rng.IntN(len(perms))]; m != cur.Perm() {
			return m
		}
	}
}

// pinAtime sets p's access time an hour ahead (keeping its modification
// time): with relatime, reading it (readlink, readdir, read) then leaves
// the access time alone, so dj records the same atime in every backup of
// an entry nobody changed.
func pinAtime(t *testing.T, p string) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(time.Now().Add(time.Hour).UnixNano()), {Nsec: unix.UTIME_OMIT}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func (g *treeGen) diffFile(p string) {
	n := g.rng.IntN(6 << 10)
	if g.rng.IntN(12) == 0 {
		n = 600<<10 + g.rng.IntN(1<<20) // several chunks
	}
	writeFile(g.t, p, g.bytes(n))
	if err := os.Chmod(p, filePerms[g.rng.IntN(len(filePerms))]); err != nil {
		g.t.Fatal(err)
	}
	pinAtime(g.t, p)
}

func (g *treeGen) diffSymlink(p string) {
	targets := []string{"../" + g.name("n"), g.name("n"), "/nonexistent/" + g.name("x"), "."}
	if err := os.Symlink(targets[g.rng.IntN(len(targets))], p); err != nil {
		g.t.Fatal(err)
	}
	pinAtime(g.t, p)
}

func (g *treeGen) diffDir(p string, depth int) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		g.t.Fatal(err)
	}
	n := g.rng.IntN(8)
	if depth == 0 {
		n += 16
	}
	for i := 0; i < n; i++ {
		c := filepath.Join(p, g.name("n"))
		switch x := g.rng.IntN(10); {
		case x < 5:
			g.diffFile(c)
		case x < 8 && depth < 3:
			g.diffDir(c, depth+1)
		case x < 9:
			g.diffSymlink(c)
		default:
			if err := os.Mkdir(c, 0o755); err != nil {
				g.t.Fatal(err)
			}
			pinAtime(g.t, c)
		}
	}
	if depth > 0 {
		if err := os.Chmod(p, dirPerms[g.rng.IntN(len(dirPerms))]); err != nil {
			g.t.Fatal(err)
		}
	}
	pinAtime(g.t, p)
}

// mutateForDiff renames, deletes, changes the type (file, directory,
// symlink) of, chmods and rewrites random entries below root, and adds
// new ones.
func (g *treeGen) mutateForDiff(root string) {
	t := g.t
	var all []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != root {
			all = append(all, p)
		}
		return nil
	})
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	for _, p := range all {
		fi, err := os.Lstat(p)
		if err != nil {
			continue // went with its directory
		}
		x := g.rng.IntN(100)
		switch {
		case fi.Mode().IsRegular():
			switch {
			case x < 7:
				must(os.Remove(p))
			case x < 14 && fi.Size() > 0: // same size, new bytes
				f, err := os.OpenFile(p, os.O_WRONLY, 0)
				must(err)
				n := min(int(fi.Size()), 1+g.rng.IntN(4<<10))
				_, err = f.WriteAt(g.bytes(n), g.rng.Int64N(fi.Size()-int64(n)+1))
				must(err)
				must(f.Close())
			case x < 21:
				must(os.WriteFile(p, g.bytes(g.rng.IntN(8<<10)), 0))
			case x < 30:
				must(os.Chmod(p, g.otherPerm(filePerms, fi.Mode())))
			case x < 33:
				must(os.Chmod(p, g.otherPerm(filePerms, fi.Mode())))
				must(os.WriteFile(p, g.bytes(1+g.rng.IntN(8<<10)), 0))
			case x < 37:
				must(os.Rename(p, filepath.Join(filepath.Dir(p), g.name("n"))))
			case x < 40:
				must(os.Remove(p))
				g.diffDir(p, 3)
			case x < 43:
				must(os.Remove(p))
				g.diffSymlink(p)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			switch {
			case x < 10:
				must(os.Remove(p))
				g.diffSymlink(p)
			case x < 15:
				must(os.Remove(p))
				g.diffFile(p)
			case x < 20:
				must(os.Remove(p))
			case x < 23:
				must(os.Remove(p))
				g.diffDir(p, 3)
			}
		case fi.IsDir():
			switch {
			case x < 4:
				must(os.RemoveAll(p))
			case x < 12:
				must(os.Chmod(p, g.otherPerm(dirPerms, fi.Mode())))
			case x < 15:
				must(os.RemoveAll(p))
				g.diffFile(p)
			case x < 18:
				must(os.RemoveAll(p))
				g.diffSymlink(p)
			case x < 21:
				must(os.Rename(p, filepath.Join(filepath.Dir(p), g.name("n"))))
			case x < 30:
				c := filepath.Join(p, g.name("n"))
				switch g.rng.IntN(3) {
				case 0:
					g.diffFile(c)
				case 1:
					g.diffSymlink(c)
				default:
					g.diffDir(c, 2)
				}
			}
		}
	}
}

var (
	filePerms = []fs.FileMode{0o644, 0o600, 0o640, 0o755, 0o444}
	dirPerms  = []fs.FileMode{0o755, 0o700, 0o750, 0o711}
)
