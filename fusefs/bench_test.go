//go:build linux

package fusefs

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dj/repo/snapshot"
	"dj/repo/tree"
)

// bigFixture adds a snapshot with one file of size bytes in chunks of about
// 1 MiB (varying, like content-defined chunks) and returns its path in the
// mount's ids/ directory.
func bigFixture(r *fakeRepo, size int) (*snapshot.Snapshot, string) {
	data := randomData(21, size)
	root := r.build([]fentry{{path: "big", data: data, sizes: []int{1<<20 - 4321, 1<<20 + 777, 900 << 10, 1200 << 10}, node: tree.Node{Mode: 0o644}}})
	sn := &snapshot.Snapshot{Time: t0.Add(50 * time.Hour), Hostname: "bench", Tree: root}
	r.addSnapshot(sn)
	return sn, filepath.Join("ids", sn.ID.Short(), "big")
}

// catTime reads a file with cat in a subprocess and returns the time taken.
func catTime(tb testing.TB, path string) time.Duration {
	start := time.Now()
	if out, err := exec.Command("sh", "-c", "cat '"+path+"' > /dev/null").CombinedOutput(); err != nil {
		tb.Fatalf("cat: %v %s", err, out)
	}
	return time.Since(start)
}

// TestMountSequentialReadAhead reads a file from a repository with 20 ms of
// latency per blob: read-ahead must overlap the loads.
func TestMountSequentialReadAhead(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("timing test (skipped with -short and -race)")
	}
	r := newFakeRepo()
	const size = 24 << 20
	_, rel := bigFixture(r, size)
	r.delay = 20 * time.Millisecond
	mnt, _, _ := mountTest(t, r, Options{})
	d := catTime(t, filepath.Join(mnt, rel))
	blobs := r.blobLoads.Load()
	serial := time.Duration(blobs) * r.delay
	t.Logf("cold cat of %d MiB, %d blobs at 20 ms each: %v (%.0f MB/s); one blob at a time would take at least %v",
		size>>20, blobs, d, float64(size)/d.Seconds()/1e6, serial)
	if d > serial*4/5 {
		t.Errorf("read-ahead did not overlap blob loads: %v for %d blobs of 20 ms", d, blobs)
	}
}

// TestMountRemoteReadAhead: on a remote repository (Options.Remote) a
// sequential reader has many blobs loading at once, enough to hide a 20 ms
// round trip per request; a local one keeps two.
func TestMountRemoteReadAhead(t *testing.T) {
	for _, remote := range []bool{false, true} {
		r := newFakeRepo()
		const size = 40 << 20
		_, rel := bigFixture(r, size)
		r.delay = 20 * time.Millisecond
		mnt, _, _ := mountTest(t, r, Options{Remote: remote})
		d := catTime(t, filepath.Join(mnt, rel))
		most := r.maxInflight.Load()
		t.Logf("remote=%v: cold cat of %d MiB, %d blobs of 20 ms: %v, at most %d loads at once", remote, size>>20, r.blobLoads.Load(), d, most)
		switch {
		case remote && most < remoteAheadPerFile*2/3:
			t.Errorf("remote: at most %d blob loads at once, want about %d", most, remoteAheadPerFile)
		case !remote && most > readAheadPerFile+2:
			t.Errorf("local: %d blob loads at once, want about %d", most, readAheadPerFile)
		}
	}
}

// BenchmarkMountRead measures cold and warm sequential reads through a
// mount (fake repository: no crypto, no storage latency).
// go test -run XXX -bench MountRead ./fusefs/
func BenchmarkMountRead(b *testing.B) {
	r := newFakeRepo()
	const size = 256 << 20
	_, rel := bigFixture(r, size)
	for _, mode := range []string{"cold", "warm"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				m, err := Mount(context.Background(), dir, r, Options{Logf: b.Logf})
				if err != nil {
					b.Fatal(err)
				}
				path := filepath.Join(dir, rel)
				if mode == "warm" {
					catTime(b, path)
				}
				b.StartTimer()
				catTime(b, path)
				b.StopTimer()
				m.Unmount()
			}
		})
	}
}

// BenchmarkMountFind measures find over a tree of 16,700 entries (the size
// of the peers' baseline corpus), cold on a fresh mount and warm.
func BenchmarkMountFind(b *testing.B) {
	r := newFakeRepo()
	var entries []fentry
	for d := 0; d < 100; d++ {
		for s := 0; s < 4; s++ {
			for i := 0; i < 40; i++ {
				entries = append(entries, fentry{path: fmt.Sprintf("corpus/d%03d/s%d/f%03d", d, s, i), data: []byte{byte(i)}, node: tree.Node{Mode: 0o644}})
			}
		}
	}
	root := r.build(entries)
	sn := &snapshot.Snapshot{Time: t0, Hostname: "find", Tree: root}
	r.addSnapshot(sn)
	for _, mode := range []string{"cold", "warm"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				m, err := Mount(context.Background(), dir, r, Options{Logf: b.Logf})
				if err != nil {
					b.Fatal(err)
				}
				path := filepath.Join(dir, "ids", sn.ID.Short())
				find := func() int {
					out, err := exec.Command("find", path).Output()
					if err != nil {
						b.Fatal(err)
					}
					return strings.Count(string(out), "\n")
				}
				if mode == "warm" {
					find()
				}
				b.StartTimer()
				n := find()
				b.StopTimer()
				b.ReportMetric(float64(n), "entries")
				m.Unmount()
			}
		})
	}
}
