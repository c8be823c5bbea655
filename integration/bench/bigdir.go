//go:build bench

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// bigdirStats is the number of random entries stat'ed per session.
const bigdirStats = 2000

// bigdirEntries returns the number of files in the big directory
// (BENCH_BIGDIR_ENTRIES; 1,000,000, or 250,000 with BENCH_QUICK). A tree
// blob may hold at most pack.MaxBlobSize (512 MiB) of JSON, about 330
// bytes a file here: about 1.6 million files.
func (h *harness) bigdirEntries() (int, error) {
	n := 1_000_000
	if h.cfg.quick {
		n = 250_000
	}
	if s := os.Getenv("BENCH_BIGDIR_ENTRIES"); s != "" {
		v, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
		if err != nil || v < 1000 || v > 20_000_000 {
			return 0, fmt.Errorf("BENCH_BIGDIR_ENTRIES=%q: want a number from 1000 to 20000000", s)
		}
		n = v
	}
	return n, nil
}

// bigdirSection measures one directory of a million files through the
// mount (issue 9, "Large directories and trees"): ls -f, find and stat
// against the same on the source disk, and the mount's memory with the
// default cache and with 64 MiB.
func (h *harness) bigdirSection(ctx context.Context) *report {
	const (
		colSource = "source (no FUSE)"
		colDJ     = "dj"
		colDJ64   = "dj 64M"
	)
	n, err := h.bigdirEntries()
	r := h.newReport("bigdir", colSource, colDJ, colDJ64)
	if err != nil {
		h.problem("bigdir: %v", err)
		return r
	}
	third := 1.0 / 3
	for _, c := range []struct{ key, cmd string }{{"ls", "ls -f"}, {"find", "find"}} {
		r.fig(c.key+"_cold", fmt.Sprintf("`%s DIR | wc -l`, cold (fresh mount, drop_caches)", c.cmd), "s", false,
			atLeastTimes(third, colDJ, colSource, "dj ≤ 3× source"), atLeastTimes(third, colDJ64, colSource, "64M ≤ 3× source"))
		r.fig(c.key+"_warm", "  … warm, same mount", "s", false,
			atLeastTimes(third, colDJ, colSource, "dj ≤ 3× source"), atLeastTimes(third, colDJ64, colSource, "64M ≤ 3× source"))
		r.fig(c.key+"_count", fmt.Sprintf("  … lines (want %d)", map[string]int{"ls": n + 2, "find": n + 1}[c.key]), "lines", true)
	}
	r.fig("stat_first", "first `stat` of an entry on a fresh mount (loads the tree)", "ms", false)
	r.fig("stat_warm", fmt.Sprintf("`stat` of a random entry, warm (mean of %d distinct entries)", bigdirStats), "ms", false,
		below(1, colDJ, "dj < 1 ms"), below(1, colDJ64, "64M < 1 ms"))
	r.fig("hwm_ls", "mount VmHWM: session ls -f + stat", "MiB", false,
		atMost(512+100, colDJ, "dj ≤ 512+100 MiB"), atMost(64+100, colDJ64, "64M ≤ 64+100 MiB"))
	r.fig("hwm_find", "mount VmHWM: session find", "MiB", false,
		atMost(512+100, colDJ, "dj ≤ 512+100 MiB"), atMost(64+100, colDJ64, "64M ≤ 64+100 MiB"))
	r.fig("statall_cold", "`find DIR -printf '%s\\n' | wc -l` (stats every entry), cold (fresh mount, drop_caches)", "s", false)
	r.fig("statall_count", fmt.Sprintf("  … lines (want %d)", n+1), "lines", true)
	r.fig("hwm_statall", "mount VmHWM: session find -printf (every entry looked up)", "MiB", false,
		atMost(512+100, colDJ, "dj ≤ 512+100 MiB"), atMost(64+100, colDJ64, "64M ≤ 64+100 MiB"))

	base := filepath.Join(h.cfg.dir, fmt.Sprintf("bigdir-%d", n))
	src := filepath.Join(base, "src")
	big := filepath.Join(src, "big")
	if err := h.buildBigdir(ctx, big, n); err != nil {
		h.problem("bigdir: building %s: %v", big, err)
		return r
	}
	var t *tool
	if h.cfg.tools["dj"] {
		t = h.newTool("dj", filepath.Join(base, "repo-dj"))
		if err := h.bigdirRepo(ctx, t, src); err != nil {
			h.problem("bigdir: backing up %s: %v", src, err)
			t = nil
		}
	}
	mnt := filepath.Join(h.cfg.dir, "mnt", "bigdir")
	names := make([]string, bigdirStats)
	rng := rand.New(rand.NewPCG(9, uint64(n)))
	for i := range names {
		names[i] = bigdirName(rng.IntN(n))
	}
	for rep := 1; rep <= h.cfg.runs && ctx.Err() == nil; rep++ {
		for _, col := range []string{colSource, colDJ, colDJ64} {
			ct := t
			if col == colSource {
				ct = nil
			} else if t == nil {
				continue
			}
			for _, kind := range []string{"ls", "find", "statall"} {
				if ctx.Err() != nil {
					break
				}
				h.logf("bigdir: rep %d/%d, %s, session %s", rep, h.cfg.runs, col, kind)
				if err := h.bigdirSession(ctx, r, ct, col, mnt, big, kind, names); err != nil {
					h.problem("bigdir: %s, session %s: %v", col, kind, err)
				}
			}
		}
	}
	r.Notes = append(r.Notes,
		fmt.Sprintf("DIR holds %d files of 16 bytes, all with the same content (one blob: the repository's index stays small, so the mount's memory is its trees' and inodes'); it is backed up once per dj binary.", n),
		"Every session is a fresh server: drop_caches, start the server, wait until the snapshot lists, drop_caches again, then the cold command; the warm command repeats it on the same mount. The source column runs the same commands on the source directory (cold: after drop_caches).",
		fmt.Sprintf("stat: after the ls -f session's commands, os.Lstat of %d distinct random entries from the harness process (the kernel has no attributes for them yet: listings of directories this big carry names and types only), mean per call; the first stat runs right after the mount is listable.", bigdirStats),
		"VmHWM is read from /proc/PID/status of the server just before its unmount. \"dj 64M\" is `dj mount --cache-size 64M`.",
		"find -printf '%s' looks up every entry (ls -l, rsync, du do the same): the kernel keeps each looked-up entry until memory pressure evicts it, and the mount bounds the inodes it holds for them (fusefs/inodes.go: an eighth of the cache size at 1 KiB an entry, at least 16,384 entries) by telling the kernel to drop the oldest.",
		"BENCH_BIGDIR_ENTRIES sets the number of files (BENCH_QUICK: 250,000).",
	)
	return r
}

// bigdirName is the name of file i of the big directory.
func bigdirName(i int) string { return fmt.Sprintf("file-%08d", i) }

// buildBigdir makes dir with n files of the same 16 bytes, unless it has
// them already.
func (h *harness) buildBigdir(ctx context.Context, dir string, n int) error {
	done := dir + ".done"
	if fileExists(done) {
		return nil
	}
	h.logf("bigdir: creating %d files in %s", n, dir)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	content := []byte("dj bigdir bench\n")
	for i := 0; i < n; i++ {
		if i%10000 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := os.WriteFile(filepath.Join(dir, bigdirName(i)), content, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(done, nil, 0o644)
}

// bigdirRepo backs src up into t's repository, unless the current binary
// did already.
func (h *harness) bigdirRepo(ctx context.Context, t *tool, src string) error {
	stamp := h.stamp(t.name) + " bigdir"
	if h.stampOK(t, stamp) {
		return nil
	}
	h.logf("bigdir: backing up %s into %s", src, t.repo)
	if err := t.removeRepo(); err != nil {
		return err
	}
	os.Remove(t.repo + ".stamp")
	if _, err := h.plain(ctx, t, "init"); err != nil {
		return err
	}
	res, err := h.timed(ctx, t, "backup", src)
	if err != nil {
		return err
	}
	h.logf("bigdir: backup took %.1fs, CPU %.1fs, RSS %.0f MiB", res.Wall, res.CPU(), res.MaxRSS)
	return h.writeStamp(t, stamp)
}

// bigdirSession runs one session: for kind "ls", ls -f cold and warm and
// the stats; for "find", find cold and warm. t is nil for the source.
func (h *harness) bigdirSession(ctx context.Context, r *report, t *tool, col, mnt, big, kind string, names []string) error {
	dir := big
	var m *mountProc
	if t != nil {
		argv := t.argv("mount", mnt)
		if strings.HasSuffix(col, "64M") {
			argv = t.argv("mount", "--cache-size", "64M", mnt)
		}
		dropCaches()
		var err error
		if m, err = h.startMount("bigdir-"+col, mnt, t.env, argv); err != nil {
			return err
		}
		defer func() {
			if err := m.stop(); err != nil {
				h.problem("bigdir: %s: %v", col, err)
			}
		}()
		if _, err := m.waitReady(ctx, filepath.Join(mnt, "snapshots"), 1, 60*time.Second); err != nil {
			return err
		}
		dir = filepath.Join(mnt, "snapshots", "latest", big)
		if kind == "ls" {
			start := time.Now()
			if _, err := os.Lstat(filepath.Join(dir, names[0])); err != nil {
				return err
			}
			r.add("stat_first", col, time.Since(start).Seconds()*1000)
		}
	}
	script := map[string]string{"ls": "ls -f " + shellQuote(dir) + " | wc -l", "find": "find " + shellQuote(dir) + " | wc -l",
		"statall": "find " + shellQuote(dir) + ` -printf '%s\n' | wc -l`}[kind]
	temps := []string{"cold", "warm"}
	if kind == "statall" {
		temps = temps[:1] // a minute or more a run through the mount
	}
	for _, temp := range temps {
		if temp == "cold" {
			dropCaches()
		}
		res, err := h.run1(ctx, "bigdir-"+kind+"-"+temp, nil, false, "/bin/bash", "-c", "set -o pipefail; "+script)
		if err != nil {
			return err
		}
		wall := res.Wall
		b, _ := os.ReadFile(res.Stdout)
		out := strings.TrimSpace(string(b))
		r.add(kind+"_"+temp, col, wall)
		if c, err := strconv.Atoi(out); err == nil && temp == "cold" {
			r.add(kind+"_count", col, float64(c))
		}
		h.logf("bigdir: %s: %s %s: %.2fs, %s lines", col, kind, temp, wall, out)
	}
	if kind == "ls" {
		start := time.Now()
		for _, name := range names {
			if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
				return err
			}
		}
		r.add("stat_warm", col, time.Since(start).Seconds()*1000/float64(len(names)))
	}
	if m != nil {
		if v, err := m.hwm(); err == nil {
			r.add("hwm_"+kind, col, v)
		}
	}
	return nil
}
