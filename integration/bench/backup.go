//go:build bench

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
)

// toolNames lists the measured tools, restic first.
func (h *harness) toolNames() []string {
	var out []string
	for _, n := range []string{"restic", "dj"} {
		if h.cfg.tools[n] {
			out = append(out, n)
		}
	}
	return out
}

// backupSection measures the initial backup, the unchanged re-backup and
// the restore of the corpus (issue 2).
func (h *harness) backupSection(ctx context.Context) *report {
	names := h.toolNames()
	r := h.newReport("backup", names...)
	r.Corpus = h.corpus.describe()
	c := h.corpus
	r.fig("init", "init (real key derivation), wall", "s", false).withRatio()
	r.fig("backup_wall", "initial backup, wall (cold cache)", "s", false,
		atLeastTimes(2, "dj", "restic", "≥2× restic's speed")).withRatio()
	r.fig("backup_ceiling", "backup ceiling: the corpus in memory chunked, hashed, compressed and sealed on all cores, no I/O (dj's primitives)", "s", false)
	r.fig("backup_vs_ceiling", "initial backup wall / backup ceiling", "×", false,
		atMost(1.5, "dj", "≤ 1.5×"))
	r.fig("backup_ceiling_verified", "backup ceiling with every compressed blob decompressed and compared before sealing, as SaveBlob does (issue 12)", "s", false)
	r.fig("backup_vs_ceiling_verified", "initial backup wall / backup ceiling with the verify: what the pipeline (walk, reads, packs, SHA-256, writes) adds to the blob stage", "×", false)
	r.fig("backup_mbs", "initial backup, throughput", "MB/s", true).withRatio()
	r.fig("backup_cpu", "initial backup, CPU user+sys", "s", false).withRatio()
	r.fig("backup_rss", "initial backup, peak RSS", "MiB", false,
		atLeastTimes(1, "dj", "restic", "≤ restic's")).withRatio()
	r.fig("repo_size", "repo size after initial backup (du -sb)", "MB", false,
		atLeastTimes(1, "dj", "restic", "≤ restic's")).withRatio()
	r.fig("repo_ratio", fmt.Sprintf("repo size / corpus size (%s MB)", fmtNum(float64(c.Bytes)/1e6)), "ratio", false)
	r.fig("rebackup_cold", "2nd backup, no change, after drop_caches", "s", false,
		atLeastTimes(3, "dj", "restic", "≥3× faster")).withRatio()
	r.fig("rebackup_warm", "2nd backup, no change, warm", "s", false).withRatio()
	r.fig("rebackup_cpu", "2nd backup (cold), CPU user+sys", "s", false).withRatio()
	r.fig("rebackup_rss", "2nd backup, peak RSS", "MiB", false).withRatio()
	r.fig("restore_wall", "restore latest into an empty dir (cold cache)", "s", false).withRatio()
	r.fig("restore_mbs", "restore throughput", "MB/s", true,
		atLeastTimes(1.5, "dj", "restic", "≥1.5× restic")).withRatio()
	r.fig("restore_cpu", "restore, CPU user+sys", "s", false).withRatio()
	r.fig("restore_rss", "restore, peak RSS", "MiB", false,
		atLeastTimes(1, "dj", "restic", "≤ restic's")).withRatio()
	r.fig("restore_ok", "restored tree = source (content, mode, owner, mtimes, links; run 1)", "", true)

	work := filepath.Join(h.cfg.dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		h.problem("backup: %v", err)
		return r
	}
	tools := map[string]*tool{}
	failed := map[string]bool{}
	fail := func(name string, err error, keys ...string) {
		h.problem("backup: %s: %v", name, err)
		for _, k := range keys {
			r.text(k, name, errText(err))
		}
	}
	for _, n := range names {
		tools[n] = h.newTool(n, filepath.Join(work, "backup-"+n))
	}

	// The ceilings of (a): the same work on the cores alone, measured first
	// so that every initial backup can be set against them; the second
	// also verifies every compressed blob, as SaveBlob does (issue 12).
	ceilings := map[string]float64{} // key -> seconds; absent when not measured
	for _, cv := range []struct {
		key    string
		verify bool
	}{{"backup_ceiling", false}, {"backup_ceiling_verified", true}} {
		if !h.cfg.tools["dj"] || ctx.Err() != nil {
			break
		}
		h.logf("backup: %s: chunking, hashing, compressing and sealing the corpus in memory, %d runs", cv.key, h.cfg.runs)
		sec, n, err := backupCeiling(ctx, c.Root, h.cfg.runs, cv.verify)
		debug.FreeOSMemory() // the corpus held in memory
		if err != nil {
			h.problem("backup: %s: %v", cv.key, err)
			r.text(cv.key, "dj", errText(err))
			continue
		}
		ceilings[cv.key] = sec
		r.add(cv.key, "dj", sec)
		h.logf("backup: %s: %.2fs for %s bytes (%.0f MB/s)", cv.key, sec, commas(n), float64(n)/sec/1e6)
	}

	// (a) initial backup, each run into a fresh repository.
	for run := 1; run <= h.cfg.runs && ctx.Err() == nil; run++ {
		for _, n := range names {
			if failed[n] {
				continue
			}
			t := tools[n]
			h.logf("backup: %s: initial backup, run %d/%d", n, run, h.cfg.runs)
			if err := t.removeRepo(); err != nil {
				fail(n, err, "init")
				failed[n] = true
				continue
			}
			res, err := h.timed(ctx, t, "init")
			if err != nil {
				fail(n, err, "init", "backup_wall")
				failed[n] = true
				continue
			}
			r.add("init", n, res.Wall)
			if err := dropCaches(); err != nil {
				h.problem("%v", err)
			}
			res, err = h.timed(ctx, t, "backup", c.Root)
			if err != nil {
				fail(n, err, "backup_wall")
				failed[n] = true
				continue
			}
			r.add("backup_wall", n, res.Wall)
			if n == "dj" {
				if sec := ceilings["backup_ceiling"]; sec > 0 {
					r.add("backup_vs_ceiling", n, res.Wall/sec)
				}
				if sec := ceilings["backup_ceiling_verified"]; sec > 0 {
					r.add("backup_vs_ceiling_verified", n, res.Wall/sec)
				}
			}
			r.add("backup_mbs", n, float64(c.Bytes)/res.Wall/1e6)
			r.add("backup_cpu", n, res.CPU())
			r.add("backup_rss", n, res.MaxRSS)
			if size, err := duBytes(t.repo); err == nil {
				r.add("repo_size", n, float64(size)/1e6)
				r.add("repo_ratio", n, float64(size)/float64(c.Bytes))
			}
			h.logf("backup: %s: %.2fs, %.0f MB/s, CPU %.1fs, RSS %.0f MiB", n, res.Wall, float64(c.Bytes)/res.Wall/1e6, res.CPU(), res.MaxRSS)
		}
	}

	// (b) second backup with no change: cold, then warm.
	for _, cold := range []bool{true, false} {
		key := map[bool]string{true: "rebackup_cold", false: "rebackup_warm"}[cold]
		for run := 1; run <= h.cfg.runs && ctx.Err() == nil; run++ {
			for _, n := range names {
				if failed[n] {
					continue
				}
				if cold {
					dropCaches()
				}
				res, err := h.timed(ctx, tools[n], "backup", c.Root)
				if err != nil {
					fail(n, err, key)
					continue
				}
				r.add(key, n, res.Wall)
				if cold {
					r.add("rebackup_cpu", n, res.CPU())
				}
				r.add("rebackup_rss", n, res.MaxRSS)
				h.logf("backup: %s: unchanged re-backup (%s) %.2fs, RSS %.0f MiB", n, map[bool]string{true: "cold", false: "warm"}[cold], res.Wall, res.MaxRSS)
			}
		}
	}

	// (c) restore of the latest snapshot into an empty directory.
	for run := 1; run <= h.cfg.runs && ctx.Err() == nil; run++ {
		for _, n := range names {
			if failed[n] {
				continue
			}
			target := filepath.Join(work, "restore-"+n)
			if err := os.RemoveAll(target); err != nil {
				fail(n, err, "restore_wall")
				continue
			}
			dropCaches()
			res, err := h.timed(ctx, tools[n], "restore", "latest", "--target", target)
			if err != nil {
				fail(n, err, "restore_wall")
				os.RemoveAll(target)
				continue
			}
			r.add("restore_wall", n, res.Wall)
			r.add("restore_mbs", n, float64(c.Bytes)/res.Wall/1e6)
			r.add("restore_cpu", n, res.CPU())
			r.add("restore_rss", n, res.MaxRSS)
			h.logf("backup: %s: restore %.2fs, %.0f MB/s, RSS %.0f MiB", n, res.Wall, float64(c.Bytes)/res.Wall/1e6, res.MaxRSS)
			if run == 1 {
				got := filepath.Join(target, c.Root)
				entries, diffs, ndiff, err := compareTrees(ctx, c.Root, got)
				switch {
				case err != nil:
					r.text("restore_ok", n, "error")
					h.problem("backup: %s: comparing the restored tree %s with %s: %v", n, got, c.Root, err)
				case ndiff == 0:
					r.text("restore_ok", n, "yes")
					h.logf("backup: %s: restored tree matches the source (%d entries)", n, entries)
				default:
					r.text("restore_ok", n, fmt.Sprintf("NO: %d differences", ndiff))
					h.problem("backup: %s: `%s restore latest --target %s` differs from the source in %d places; first: %s",
						n, n, target, ndiff, strings.Join(diffs, "; "))
				}
			}
			os.RemoveAll(target)
		}
	}
	r.Notes = append(r.Notes,
		"Backup ceiling: every file of the corpus read into memory first, then, timed, chunked (FastCDC with a repository's keyed gear table), hashed (keyed BLAKE3), deduplicated, compressed (zstd, default level) and sealed (XChaCha20-Poly1305) with dj's own code (repo/chunker, Repository.BlobID and Repository.SealedForm, the function SaveBlob uses), a chunker and a blob worker per core; nothing written, packed or walked (ceiling.go, backupCeiling). Measured before the initial backups (the median of the runs); \"initial backup wall / backup ceiling\" divides each initial backup's wall time by it. The second ceiling does the same and also decompresses every compressed blob and compares it with its plaintext before sealing it, which SaveBlob has done since issue 12 and the first ceiling (issue 9's definition) leaves out.",
		"Initial backup: a fresh repository per run, `sync; echo 3 > /proc/sys/vm/drop_caches`, then `/usr/bin/time -v TOOL backup CORPUS`. MB/s = bytes of the corpus files / wall time.",
		"The unchanged re-backups run on the repository of the last initial backup (cold: after drop_caches; warm: right after). Each adds a snapshot.",
		"Restore: `TOOL restore latest --target DIR` into an empty directory after drop_caches; the restored tree of run 1 is compared entry by entry (content, mode, owner, mtime, link target, directory mtimes, extra entries) with the source.",
		"Passwords come from a file (DJ_PASSWORD_FILE / RESTIC_PASSWORD_FILE) and both tools use their real key derivation, so every command pays it once.",
	)
	return r
}
