//go:build bench

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// findSnapshots is the number of snapshots `find` searches.
const findSnapshots = 100

// findCase is one `find` command line of the find section.
type findCase struct {
	key  string   // figure key prefix
	desc string   // what the row says
	args []string // arguments of `find`
}

var findCases = []findCase{
	{key: "find_go", desc: "`find '*.go'` (every Go file of every snapshot)", args: []string{"*.go"}},
	{key: "find_few", desc: "`find go.mod` (a few matches per snapshot)", args: []string{"go.mod"}},
}

// findSection measures `find` over many snapshots of the Go tree (issue 8).
func (h *harness) findSection(ctx context.Context) *report {
	names := h.toolNames()
	r := h.newReport("find", names...)
	cfg := h.cfg
	for _, fc := range findCases {
		r.fig(fc.key, fmt.Sprintf("%s over %d snapshots, warm", fc.desc, findSnapshots), "s", false,
			atLeastTimes(3, "dj", "restic", "≥3× restic")).withRatio()
		r.fig(fc.key+"_cold", "  … cold (after drop_caches)", "s", false).withRatio()
		r.fig(fc.key+"_cpu", "  … CPU user+sys, warm", "s", false).withRatio()
		r.fig(fc.key+"_rss", "  … peak RSS", "MiB", false).withRatio()
		r.fig(fc.key+"_lines", "  … lines printed (the same for both: headers and paths)", "lines", true)
	}
	r.fig("repo_size", fmt.Sprintf("repository size with %d snapshots (du -sb)", findSnapshots), "MB", false).withRatio()

	base := filepath.Join(cfg.dir, "find"+map[bool]string{true: "-quick"}[cfg.quick])
	if err := os.MkdirAll(base, 0o755); err != nil {
		h.problem("find: %v", err)
		return r
	}
	tools := map[string]*tool{}
	for _, n := range names {
		tools[n] = h.newTool(n, filepath.Join(base, "repo-"+n))
	}
	if err := h.buildFindRepos(ctx, base, tools); err != nil {
		h.problem("find: building the %d-snapshot repositories: %v", findSnapshots, err)
		return r
	}
	for _, n := range names {
		if sz, err := duBytes(tools[n].repo); err == nil {
			r.add("repo_size", n, float64(sz)/1e6)
		}
	}
	lines := map[string]map[string]float64{}
	for _, fc := range findCases {
		lines[fc.key] = map[string]float64{}
		failed := map[string]bool{}
		for run := 1; run <= cfg.runs && ctx.Err() == nil; run++ {
			for _, n := range names {
				t := tools[n]
				if failed[n] {
					continue
				}
				if !h.stampOK(t, h.stamp(n)) {
					failed[n] = true
					r.text(fc.key, n, "no repository")
					continue
				}
				// The output goes through `wc -l`: a million paths
				// need not be kept in the logs.
				script := shellJoin(t.argv("find", fc.args...)) + " | wc -l"
				for _, temp := range []string{"cold", "warm"} {
					key := fc.key
					if temp == "cold" {
						key += "_cold"
						dropCaches()
					}
					h.logf("find: %s: find %s (%s), run %d/%d", n, strings.Join(fc.args, " "), temp, run, cfg.runs)
					res, err := h.run1(ctx, n+"-find-"+temp, t.env, true, "/bin/bash", "-c", "set -o pipefail; "+script)
					if err != nil {
						h.problem("find: %s: %v", n, err)
						r.text(key, n, "failed")
						failed[n] = true
						break
					}
					r.add(key, n, res.Wall)
					r.add(fc.key+"_rss", n, res.MaxRSS)
					if temp == "warm" {
						r.add(fc.key+"_cpu", n, res.CPU())
					}
					if b, err := os.ReadFile(res.Stdout); err == nil {
						if c, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
							if run == 1 && temp == "cold" {
								r.add(fc.key+"_lines", n, float64(c))
							}
							lines[fc.key][n] = float64(c)
						}
					}
					h.logf("find: %s: %.2fs, CPU %.2fs, RSS %.0f MiB", n, res.Wall, res.CPU(), res.MaxRSS)
				}
			}
		}
		if a, b := lines[fc.key]["dj"], lines[fc.key]["restic"]; a > 0 && b > 0 && a != b {
			h.problem("find %s: dj printed %.0f lines, restic %.0f", strings.Join(fc.args, " "), a, b)
		}
	}
	r.Notes = append(r.Notes,
		fmt.Sprintf("The repositories hold %d snapshots of A (%s): between snapshots 10 Go files get a line appended, a new Go file is added in a new directory and one file is deleted. The changes come from a fixed seed and both tools back up the same states.", findSnapshots, h.corpus.Source),
		"Each command's output goes through `wc -l` (its time included); the text output of the two tools is the same (restic's: a header per snapshot, then the paths), so the line counts must agree. Cold: after drop_caches; warm: right after, on the same repository.",
		"restic skips subtrees in which an earlier snapshot had no match; dj searches every subtree once for all snapshots and reports its matches under every path that holds it.",
		"The repositories are built once per binary (the build's timings are not figures) and reused by later runs; delete BENCH_DIR/find to rebuild.",
	)
	return r
}

// buildFindRepos builds the repositories of the find section for the tools
// that need one: findSnapshots backups of an evolving copy of A.
func (h *harness) buildFindRepos(ctx context.Context, base string, tools map[string]*tool) error {
	todo := h.needBuild(tools)
	if len(todo) == 0 {
		return nil
	}
	tree := filepath.Join(base, "tree")
	h.logf("find: building the %d-snapshot repositories for %s in %s", findSnapshots, toolList(todo), base)
	if err := os.RemoveAll(tree); err != nil {
		return err
	}
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", h.corpus.A, filepath.Join(tree, "A")).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a: %v: %s", err, out)
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
	g := newGenRand(8)
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for step := 0; step < findSnapshots; step++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if step > 0 {
			if err := mutateGoTree(g, tree, step); err != nil {
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
			h.logf("find: %d/%d snapshots", step+1, findSnapshots)
		}
	}
	for _, t := range todo {
		if err := h.writeStamp(t, h.stamp(t.name)); err != nil {
			return err
		}
	}
	return nil
}

// mutateGoTree appends a line to 10 Go files, adds a Go file in a new
// directory and deletes one file.
func mutateGoTree(g *genRand, tree string, step int) error {
	files, _, err := listFiles(tree)
	if err != nil {
		return err
	}
	var gofiles []string
	for _, f := range files {
		if strings.HasSuffix(f, ".go") {
			gofiles = append(gofiles, f)
		}
	}
	if len(gofiles) < 10 {
		return fmt.Errorf("only %d Go files in %s", len(gofiles), tree)
	}
	for _, i := range g.Perm(len(gofiles))[:10] {
		f, err := os.OpenFile(gofiles[i], os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(f, "// step %d: %s\n", step, g.text(40))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	dir := filepath.Join(tree, "A", "new", fmt.Sprintf("s%03d", step))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "new.go"), []byte(fmt.Sprintf("package s%03d\n", step)), 0o644); err != nil {
		return err
	}
	return os.Remove(files[g.IntN(len(files))])
}
