//go:build linux

package fusefs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"

	"dj/repo/snapshot"
	"dj/repo/tree"
)

func TestListingPolicy(t *testing.T) {
	type step struct {
		probe  uint64 // a listing of this directory left out a probe
		lookup bool   // the thread looked up a file
		want   listMode
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a walker that never stats lists names after probeDirs directories", []step{
			{probe: 1, want: listUnknown}, {probe: 2, want: listUnknown}, {probe: 3, want: listUnknown}, {probe: 4, want: listNames},
		}},
		{"several requests for one directory count once", []step{
			{probe: 1, want: listUnknown}, {probe: 1, want: listUnknown}, {probe: 1, want: listUnknown}, {probe: 1, want: listUnknown}, {probe: 1, want: listUnknown},
		}},
		{"a walker that stats its probe gets attributes", []step{
			{probe: 1, want: listUnknown}, {lookup: true, want: listStats}, {probe: 2, want: listStats},
			{probe: 3, want: listStats}, {probe: 4, want: listStats}, {probe: 5, want: listStats},
		}},
		{"a names-only walker that looks up a file gets attributes again", []step{
			{probe: 1}, {probe: 2}, {probe: 3}, {probe: 4, want: listNames}, {lookup: true, want: listStats},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newListingPolicy()
			const pid = 4242
			for i, s := range tc.steps {
				if s.lookup {
					p.lookedUp(pid)
				} else {
					p.probe(pid, s.probe)
				}
				if got := p.mode(pid); got != s.want {
					t.Fatalf("after step %d: mode %d, want %d", i, got, s.want)
				}
			}
			if got := p.mode(pid + 1); got != listUnknown {
				t.Errorf("another thread: mode %d, want unknown", got)
			}
		})
	}
	t.Run("requests without a thread get attributes", func(t *testing.T) {
		p := newListingPolicy()
		for d := uint64(1); d <= 2*probeDirs; d++ {
			p.probe(0, d)
		}
		p.lookedUp(0)
		if got := p.mode(0); got != listStats {
			t.Errorf("pid 0: mode %d, want stats", got)
		}
	})
	t.Run("memory is bounded", func(t *testing.T) {
		p := newListingPolicy()
		for pid := uint32(1); pid <= 3*maxCallers; pid++ {
			p.lookedUp(pid)
		}
		if n := len(p.callers); n > maxCallers {
			t.Errorf("%d threads remembered, want at most %d", n, maxCallers)
		}
	})
}

// TestMountListingPolicy: find, which never stats what it lists, gets
// names only after its first directories (no inode for most files, here or
// in the kernel), while what stats every entry (ls -l, du) gets attributes;
// both see every entry with its right size and type.
func TestMountListingPolicy(t *testing.T) {
	f := newFixture(t)
	r := f.repo
	const dirs, files = 24, 30
	var entries []fentry
	for d := 0; d < dirs; d++ {
		for i := 0; i < files; i++ {
			entries = append(entries, fentry{path: fmt.Sprintf("w/d%02d/f%03d", d, i), data: []byte(strings.Repeat("x", d*files+i+1)), node: tree.Node{Mode: 0o644}})
		}
	}
	sn := &snapshot.Snapshot{Time: t0.Add(40 * time.Hour), Hostname: "walk", Tree: r.build(entries)}
	r.addSnapshot(sn)
	mnt, m, _ := mountTest(t, r, Options{})
	dir := filepath.Join(mnt, "ids", sn.ID.Short(), "w")

	fileInodes := func() int {
		n := 0
		var walk func(in *fs.Inode)
		walk = func(in *fs.Inode) {
			for _, c := range in.Children() {
				if c.IsDir() {
					walk(c)
				} else {
					n++
				}
			}
		}
		walk(m.root.GetChild("ids").GetChild(sn.ID.Short()))
		return n
	}

	out, err := exec.Command("find", dir, "-type", "f").Output()
	if err != nil {
		t.Fatalf("find: %v", err)
	}
	if got := strings.Count(string(out), "\n"); got != dirs*files {
		t.Fatalf("find -type f listed %d files, want %d", got, dirs*files)
	}
	// While find was unknown, its listings carried the files' attributes
	// but for one probe each.
	if got, most := fileInodes(), probeDirs*files; got > most {
		t.Errorf("after find, %d files have inodes, want at most %d", got, most)
	}

	// A stat-ing walker started afterwards sees every size.
	out, err = exec.Command("du", "-ab", "--apparent-size", dir).Output()
	if err != nil {
		t.Fatalf("du: %v", err)
	}
	sizes := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		size, path, _ := strings.Cut(line, "\t")
		n, _ := strconv.Atoi(size)
		sizes[strings.TrimPrefix(path, dir+"/")] = n
	}
	for d := 0; d < dirs; d++ {
		for i := 0; i < files; i++ {
			name := fmt.Sprintf("d%02d/f%03d", d, i)
			if got, want := sizes[name], d*files+i+1; got != want {
				t.Fatalf("du: %s has %d bytes, want %d", name, got, want)
			}
		}
	}
	if got := fileInodes(); got != dirs*files {
		t.Errorf("after du, %d files have inodes, want %d", got, dirs*files)
	}
	if out, err := exec.Command("ls", "-lR", dir).Output(); err != nil || strings.Count(string(out), "-rw-r--r--") != dirs*files {
		t.Errorf("ls -lR: %d files shown (%v), want %d", strings.Count(string(out), "-rw-r--r--"), err, dirs*files)
	}

	// One thread that lists names first and stats afterwards gets the
	// right answers too.
	for d := 0; d < dirs; d++ {
		names, err := os.ReadDir(filepath.Join(dir, fmt.Sprintf("d%02d", d)))
		if err != nil || len(names) != files {
			t.Fatalf("ReadDir d%02d: %d entries, %v", d, len(names), err)
		}
		for i, e := range names {
			fi, err := e.Info()
			if err != nil || fi.Size() != int64(d*files+i+1) || !fi.Mode().IsRegular() {
				t.Fatalf("stat d%02d/%s: %v, %v", d, e.Name(), fi, err)
			}
		}
	}
}
