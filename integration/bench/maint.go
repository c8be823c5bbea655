//go:build bench

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maintSection measures check, prune, repack and diff on repositories of
// many snapshots (issue 4).
func (h *harness) maintSection(ctx context.Context) *report {
	names := h.toolNames()
	r := h.newReport("maint", names...)
	cfg := h.cfg
	r.fig("check", "`check`", "s", false).withRatio()
	r.fig("check_rss", "`check`, peak RSS", "MiB", false).withRatio()
	r.fig("check_data", "`check --read-data`", "s", false,
		atLeastTimes(2, "dj", "restic", "≥2× restic")).withRatio()
	r.fig("check_data_mbs", "`check --read-data` throughput (pack bytes / time)", "MB/s", true,
		fractionOfFigure(0.5, "dj", "verify_ceiling", "dj", "≥ half the cores' decrypt-and-hash speed")).withRatio()
	r.fig("verify_ceiling", "decrypt-and-hash speed of the cores (dj's blob verification on packs in memory, all cores)", "MB/s", true)
	r.fig("check_data_rss", "`check --read-data`, peak RSS", "MiB", false).withRatio()
	r.fig("forget", fmt.Sprintf("`forget --keep-last %d --prune`", cfg.keepLast), "s", false,
		atLeastTimes(2, "dj", "restic", "≥2× restic")).withRatio()
	r.fig("forget_rss", "`forget --prune`, peak RSS", "MiB", false).withRatio()
	r.fig("forget_size", "repo size after `forget --prune` (du -sb)", "MB", false).withRatio()
	r.fig("forget_final", "  … once dropped packs are deleted (dj: then `prune --instant-delete`)", "MB", false).withRatio()
	r.fig("repack", "repack small packs (dj: `repack`; restic: `prune --max-unused 0 --repack-small`)", "s", false).withRatio()
	r.fig("repack_rss", "repack, peak RSS", "MiB", false).withRatio()
	r.fig("repack_size", "repo size after repack (du -sb)", "MB", false).withRatio()
	r.fig("repack_final", "  … once replaced packs are deleted (dj: then `prune --instant-delete`)", "MB", false).withRatio()
	r.fig("diff", "`diff` of the last two snapshots (10 files changed)", "s", false).withRatio()
	r.fig("diff_rss", "`diff`, peak RSS", "MiB", false).withRatio()
	r.fig("diff_count", "`diff`: modified files listed (want 10)", "files", true)
	r.fig("diff100k", fmt.Sprintf("`diff` in a %s-file tree (10 files changed)", commas(int64(cfg.smallFiles))), "s", false,
		below(1, "dj", "< 1 s")).withRatio()
	r.fig("diff100k_rss", fmt.Sprintf("`diff` in a %s-file tree, peak RSS", commas(int64(cfg.smallFiles))), "MiB", false).withRatio()
	r.fig("diff100k_count", "`diff`: modified files listed (want 10)", "files", true)
	r.fig("repo_size", fmt.Sprintf("repository size with %d snapshots (du -sb)", cfg.maintSteps), "MB", false).withRatio()

	base := filepath.Join(cfg.dir, "maint"+map[bool]string{true: "-quick"}[cfg.quick])
	if err := os.MkdirAll(base, 0o755); err != nil {
		h.problem("maint: %v", err)
		return r
	}
	// The pristine repositories: built once per binary, copied before
	// every destructive run.
	evolving := map[string]*tool{}
	small := map[string]*tool{}
	for _, n := range names {
		evolving[n] = h.newTool(n, filepath.Join(base, "repo-"+n))
		small[n] = h.newTool(n, filepath.Join(base, "repo-small-"+n))
	}
	if err := h.buildEvolving(ctx, base, evolving); err != nil {
		h.problem("maint: building the %d-snapshot repositories: %v", cfg.maintSteps, err)
		return r
	}
	if err := h.buildSmallTree(ctx, base, small); err != nil {
		h.problem("maint: building the %d-file repositories: %v", cfg.smallFiles, err)
	}
	packBytes := map[string]float64{}
	for _, n := range names {
		if sz, err := duBytes(evolving[n].repo); err == nil {
			r.add("repo_size", n, float64(sz)/1e6)
		}
		if sz, err := duBytes(filepath.Join(evolving[n].repo, "data")); err == nil {
			packBytes[n] = float64(sz)
		}
	}
	if t := evolving["dj"]; t != nil && h.stampOK(t, h.stamp("dj")) {
		mbs, err := verifyCeiling(ctx, t.repo, h.pwFile, 512<<20, 5)
		if err != nil {
			h.problem("maint: decrypt-and-hash speed: %v", err)
		} else {
			r.add("verify_ceiling", "dj", mbs)
			h.logf("maint: decrypt-and-hash speed of the cores: %.0f MB/s", mbs)
		}
	}

	work := filepath.Join(base, "work")
	// copyRepo makes a scratch copy of a pristine repository.
	copyRepo := func(t *tool) (*tool, error) {
		w := h.newTool(t.name, filepath.Join(work, filepath.Base(t.repo)))
		if err := w.removeRepo(); err != nil {
			return nil, err
		}
		os.MkdirAll(work, 0o755)
		if out, err := exec.CommandContext(ctx, "cp", "-a", t.repo, w.repo).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("cp -a %s: %v: %s", t.repo, err, out)
		}
		if fileExists(t.cache) {
			if out, err := exec.CommandContext(ctx, "cp", "-a", t.cache, w.cache).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("cp -a %s: %v: %s", t.cache, err, out)
			}
		}
		return w, nil
	}
	type op struct {
		key      string
		pristine map[string]*tool
		copy     bool
		args     func(t *tool) ([]string, error)
		count    string // figure for the number of modified files in the output
		size     string // figure for the repository size afterwards
		final    string // figure for the size once dj's pending packs are gone
	}
	lastTwo := func(t *tool) ([]string, error) {
		ids, err := h.snapshotIDs(ctx, t)
		if err != nil {
			return nil, err
		}
		if len(ids) < 2 {
			return nil, fmt.Errorf("%s has %d snapshots, want at least 2", t.repo, len(ids))
		}
		return []string{"diff", ids[len(ids)-2], ids[len(ids)-1]}, nil
	}
	ops := []op{
		{key: "check", pristine: evolving, args: func(*tool) ([]string, error) { return []string{"check"}, nil }},
		{key: "check_data", pristine: evolving, args: func(*tool) ([]string, error) { return []string{"check", "--read-data"}, nil }},
		{key: "forget", pristine: evolving, copy: true, size: "forget_size", final: "forget_final", args: func(*tool) ([]string, error) {
			return []string{"forget", "--keep-last", strconv.Itoa(cfg.keepLast), "--prune"}, nil
		}},
		{key: "repack", pristine: evolving, copy: true, size: "repack_size", final: "repack_final", args: func(*tool) ([]string, error) { return []string{"repack"}, nil }},
		{key: "diff", pristine: evolving, count: "diff_count", args: lastTwo},
		{key: "diff100k", pristine: small, count: "diff100k_count", args: lastTwo},
	}
	for _, o := range ops {
		failed := map[string]bool{}
		for run := 1; run <= cfg.runs && ctx.Err() == nil; run++ {
			for _, n := range names {
				if failed[n] {
					continue
				}
				t := o.pristine[n]
				if !h.stampOK(t, h.stamp(n)) {
					failed[n] = true
					r.text(o.key, n, "no repository")
					continue
				}
				if o.copy {
					var err error
					if t, err = copyRepo(t); err != nil {
						h.problem("maint: %s: %v", n, err)
						failed[n] = true
						continue
					}
				}
				argv, err := o.args(t)
				if err != nil {
					h.problem("maint: %s %s: %v", n, o.key, err)
					r.text(o.key, n, "failed")
					failed[n] = true
					continue
				}
				h.logf("maint: %s: %s, run %d/%d", n, strings.Join(t.argv(argv[0], argv[1:]...)[1:], " "), run, cfg.runs)
				dropCaches()
				res, err := h.timed(ctx, t, argv[0], argv[1:]...)
				if err != nil {
					h.problem("maint: %s: %v", n, err)
					r.text(o.key, n, "failed")
					failed[n] = true
					continue
				}
				r.add(o.key, n, res.Wall)
				r.add(o.key+"_rss", n, res.MaxRSS)
				if o.key == "check_data" && packBytes[n] > 0 && res.Wall > 0 {
					r.add("check_data_mbs", n, packBytes[n]/1e6/res.Wall)
				}
				h.logf("maint: %s: %.2fs, RSS %.0f MiB", n, res.Wall, res.MaxRSS)
				if o.count != "" {
					if b, err := os.ReadFile(res.Stdout); err == nil {
						r.add(o.count, n, float64(countModified(string(b))))
					}
				}
				if o.size != "" {
					if sz, err := duBytes(t.repo); err == nil {
						r.add(o.size, n, float64(sz)/1e6)
					}
				}
				if o.final != "" {
					// dj keeps dropped packs for a while; delete them now
					// to see the space the operation gives back.
					if n == "dj" {
						if _, err := h.plain(ctx, t, "prune", "--instant-delete"); err != nil {
							h.problem("maint: %s: %v", n, err)
						}
					}
					if sz, err := duBytes(t.repo); err == nil {
						r.add(o.final, n, float64(sz)/1e6)
					}
				}
			}
		}
	}
	os.RemoveAll(work)
	r.Notes = append(r.Notes,
		fmt.Sprintf("The maintenance repositories hold %d snapshots of an evolving tree: A (%s) plus %d random files of 1–8 MiB; between snapshots 2%% of the files change (big files: 64 KiB overwritten in place; small ones: text appended), 10 small files and one big file are added and as many deleted; the last snapshot differs from the one before in exactly 10 files. The tree and its changes come from a fixed seed, and both tools back up the same states.", cfg.maintSteps, h.corpus.Source, bigCount(cfg.quick)),
		fmt.Sprintf("The small-file tree has %s files of 200–4,000 bytes in %d directories; its repository holds two snapshots that differ in 10 files.", commas(int64(cfg.smallFiles)), cfg.smallFiles/100),
		"`check --read-data` throughput is the size of the repository's data directory (its packs) over the wall time. The decrypt-and-hash speed is measured in the same run on up to 512 MiB of dj's packs read into memory first: one goroutine per core opens every blob's seal, decompresses it and hashes the plaintext against its id, the per-byte work of dj's check --read-data (median of 5 passes).",
		"Every command runs after drop_caches. forget --prune and repack run on a fresh copy of the pristine repository (and of restic's cache) each time.",
		"restic has no repack; `prune --max-unused 0 --repack-small` is its closest command (it rewrites packs under 80% of the target size and keeps no unused data). dj `repack` merges packs under half the target size.",
		"dj's prune keeps the packs it drops for --keep-delete (24 h) before deleting them, so its repository does not shrink at once; restic deletes at once.",
		"The repositories are built once per binary (the build's timings are not figures) and reused by later runs; delete BENCH_DIR/maint to rebuild.",
	)
	return r
}

func bigCount(quick bool) int {
	if quick {
		return 15
	}
	return 170
}

// countModified counts the "M" lines of restic's and dj's diff output.
func countModified(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "M ") || strings.HasPrefix(l, "M\t") {
			n++
		}
	}
	return n
}

// snapshotIDs lists the tool's snapshots, oldest first.
func (h *harness) snapshotIDs(ctx context.Context, t *tool) ([]string, error) {
	res, err := h.plain(ctx, t, "snapshots", "--json")
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(res.Stdout)
	if err != nil {
		return nil, err
	}
	var list []struct {
		ID   string    `json:"id"`
		Time time.Time `json:"time"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("`%s snapshots --json` printed something that is not a JSON list of snapshots: %w", t.name, err)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	ids := make([]string, len(list))
	for i, s := range list {
		ids[i] = s.ID
	}
	return ids, nil
}

// needBuild returns the tools whose pristine repository is missing or was
// written by another build.
func (h *harness) needBuild(tools map[string]*tool) []*tool {
	var out []*tool
	for _, n := range h.toolNames() {
		if t := tools[n]; !h.stampOK(t, h.stamp(n)) {
			out = append(out, t)
		}
	}
	return out
}

// buildEvolving builds the repositories of the evolving tree for the tools
// that need one. The tree is regenerated from its seed, so a repository
// built later matches the ones built before.
func (h *harness) buildEvolving(ctx context.Context, base string, tools map[string]*tool) error {
	todo := h.needBuild(tools)
	if len(todo) == 0 {
		return nil
	}
	cfg := h.cfg
	tree := filepath.Join(base, "tree")
	h.logf("maint: building the %d-snapshot repositories for %s in %s", cfg.maintSteps, toolList(todo), base)
	if err := os.RemoveAll(tree); err != nil {
		return err
	}
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", h.corpus.A, filepath.Join(tree, "A")).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a: %v: %s", err, out)
	}
	g := newGenRand(42)
	bigDir := filepath.Join(tree, "big")
	os.MkdirAll(bigDir, 0o755)
	for i := 0; i < bigCount(cfg.quick); i++ {
		size := 1<<20 + g.Int64N(7<<20)
		if err := g.writeRandomFile(filepath.Join(bigDir, fmt.Sprintf("b%04d.bin", i)), size); err != nil {
			return err
		}
	}
	for _, t := range todo {
		if err := t.removeRepo(); err != nil {
			return err
		}
		os.Remove(t.repo + ".stamp")
		if _, err := h.plain(ctx, t, "init"); err != nil {
			return err
		}
	}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for step := 0; step < cfg.maintSteps; step++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case step == 0:
		case step == cfg.maintSteps-1:
			if err := changeTen(g, tree); err != nil {
				return err
			}
		default:
			if err := mutate(g, tree, step); err != nil {
				return err
			}
		}
		ts := start.Add(time.Duration(step) * time.Hour).Format("2006-01-02 15:04:05")
		for _, t := range todo {
			if _, err := h.plain(ctx, t, "backup", "--time", ts, tree); err != nil {
				return err
			}
		}
		if (step+1)%10 == 0 {
			h.logf("maint: %d/%d snapshots", step+1, cfg.maintSteps)
		}
	}
	for _, t := range todo {
		if err := h.writeStamp(t, h.stamp(t.name)); err != nil {
			return err
		}
	}
	return nil
}

func toolList(ts []*tool) string {
	var n []string
	for _, t := range ts {
		n = append(n, t.name)
	}
	return strings.Join(n, ", ")
}

// mutate changes 2% of the files, adds 10 small files and a big one, and
// deletes as many.
func mutate(g *genRand, tree string, step int) error {
	files, sizes, err := listFiles(tree)
	if err != nil {
		return err
	}
	var bigs, smalls []string
	for _, f := range files {
		if sizes[f] >= 1<<20 {
			bigs = append(bigs, f)
		} else {
			smalls = append(smalls, f)
		}
	}
	changed := map[string]bool{}
	k := len(files) * 2 / 100
	for _, i := range g.Perm(len(files))[:k] {
		p := files[i]
		changed[p] = true
		if sizes[p] >= 1<<20 {
			if err := overwrite(g, p, sizes[p]); err != nil {
				return err
			}
		} else if err := appendText(g, p); err != nil {
			return err
		}
	}
	// Deletions: one big file and 10 small ones that did not change.
	if len(bigs) > 1 {
		if err := os.Remove(bigs[g.IntN(len(bigs))]); err != nil {
			return err
		}
	}
	for removed, tries := 0, 0; removed < 10 && tries < 1000 && len(smalls) > 0; tries++ {
		p := smalls[g.IntN(len(smalls))]
		if changed[p] {
			continue
		}
		if err := os.Remove(p); err == nil {
			removed++
			changed[p] = true
		}
	}
	// Additions.
	dir := filepath.Join(tree, "new", fmt.Sprintf("s%03d", step))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := 0; i < 10; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.txt", i)), g.text(200+g.IntN(3800)), 0o644); err != nil {
			return err
		}
	}
	return g.writeRandomFile(filepath.Join(tree, "big", fmt.Sprintf("n%04d.bin", step)), 1<<20+g.Int64N(7<<20))
}

// changeTen appends text to 10 small files.
func changeTen(g *genRand, tree string) error {
	files, sizes, err := listFiles(tree)
	if err != nil {
		return err
	}
	var smalls []string
	for _, f := range files {
		if sizes[f] < 1<<20 {
			smalls = append(smalls, f)
		}
	}
	if len(smalls) < 10 {
		return fmt.Errorf("only %d small files in %s", len(smalls), tree)
	}
	for _, i := range g.Perm(len(smalls))[:10] {
		if err := appendText(g, smalls[i]); err != nil {
			return err
		}
	}
	return nil
}

// overwrite replaces 64 KiB at a random offset with random bytes.
func overwrite(g *genRand, p string, size int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	g.data.Read(buf)
	off := int64(0)
	if size > int64(len(buf)) {
		off = g.Int64N(size - int64(len(buf)))
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func appendText(g *genRand, p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(g.text(50+g.IntN(400)), '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// buildSmallTree builds the repositories of the small-file tree: two
// snapshots that differ in 10 files.
func (h *harness) buildSmallTree(ctx context.Context, base string, tools map[string]*tool) error {
	todo := h.needBuild(tools)
	if len(todo) == 0 {
		return nil
	}
	cfg := h.cfg
	tree := filepath.Join(base, "smalltree")
	h.logf("maint: building the %d-file repositories for %s", cfg.smallFiles, toolList(todo))
	if err := os.RemoveAll(tree); err != nil {
		return err
	}
	g := newGenRand(7)
	var files []string
	for i := 0; i < cfg.smallFiles; i++ {
		dir := filepath.Join(tree, fmt.Sprintf("d%02d", i/10000), fmt.Sprintf("d%04d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("f%06d.txt", i))
		if err := os.WriteFile(p, g.text(200+g.IntN(3800)), 0o644); err != nil {
			return err
		}
		files = append(files, p)
	}
	for _, t := range todo {
		if err := t.removeRepo(); err != nil {
			return err
		}
		os.Remove(t.repo + ".stamp")
		if _, err := h.plain(ctx, t, "init"); err != nil {
			return err
		}
		res, err := h.timed(ctx, t, "backup", "--time", "2025-06-01 00:00:00", tree)
		if err != nil {
			return err
		}
		h.logf("maint: %s: backup of %d small files: %.1fs, RSS %.0f MiB (not a figure)", t.name, cfg.smallFiles, res.Wall, res.MaxRSS)
	}
	for _, i := range g.Perm(len(files))[:10] {
		if err := appendText(g, files[i]); err != nil {
			return err
		}
	}
	for _, t := range todo {
		if _, err := h.plain(ctx, t, "backup", "--time", "2025-06-02 00:00:00", tree); err != nil {
			return err
		}
		if err := h.writeStamp(t, h.stamp(t.name)); err != nil {
			return err
		}
	}
	return nil
}
