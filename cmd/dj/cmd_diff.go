package main

import (
	"path"
	"sort"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
	"dj/repo/snapshot"
)

func diffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "show what changed between two snapshots",
		UsageText: "dj diff [--metadata] [--top N] [--json] SNAPSHOT-A SNAPSHOT-B [PATH]",
		Description: `Lists added (+), removed (-) and modified (M) files, type changes (T) and, with
--metadata, metadata-only changes (U), with totals. Identical subtrees are skipped
without being read.

Examples:
   dj diff 1a2b3c4d latest
   dj diff --metadata --json 1a2b3c4d 5e6f7a8b /home/ann`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "metadata", Usage: "also list metadata-only changes"},
			&cli.IntFlag{Name: "top", Usage: "list only the `N` changes with the largest size difference"},
			&cli.BoolFlag{Name: "exact-stats", Usage: "count blobs exactly as restic does (reads shared subtrees too)"},
		},
		Action: runDiff,
	}
}

func runDiff(c *cli.Context) error {
	e := newEnv(c)
	if c.NArg() < 2 || c.NArg() > 3 {
		return usageError("diff needs two snapshot IDs and optionally a path")
	}
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeRepo()
	a, err := findSnapshot(e.ctx, r, c.Args().Get(0), snapshot.Filter{})
	if err != nil {
		return err
	}
	b, err := findSnapshot(e.ctx, r, c.Args().Get(1), snapshot.Filter{})
	if err != nil {
		return err
	}
	opts := maint.DiffOptions{Metadata: c.Bool("metadata"), Sizes: r.Index(), ExactStats: c.Bool("exact-stats") || e.json}
	if c.NArg() == 3 {
		opts.Path = path.Clean("/" + c.Args().Get(2))
	}
	top := c.Int("top")
	var kept []maint.Change
	if !e.json {
		e.printf("comparing snapshot %s to %s:\n\n", a.ID.Short(), b.ID.Short())
	}
	stats, err := maint.Diff(e.ctx, r, a.Tree, b.Tree, opts, func(ch maint.Change) error {
		if top > 0 {
			kept = append(kept, ch)
			return nil
		}
		return printChange(e, ch)
	})
	if err != nil {
		return err
	}
	if top > 0 {
		sort.SliceStable(kept, func(i, j int) bool { return sizeDelta(kept[i]) > sizeDelta(kept[j]) })
		if len(kept) > top {
			kept = kept[:top]
		}
		for _, ch := range kept {
			if err := printChange(e, ch); err != nil {
				return err
			}
		}
	}
	if e.json {
		// One object per line, like the changes, so `tail -n 1 | jq` works.
		return printJSONLine(e, map[string]any{"message_type": "statistics", "source_snapshot": a.ID.Short(), "target_snapshot": b.ID.Short(),
			"changed_files": stats.ChangedFiles, "added": stats.Added, "removed": stats.Removed})
	}
	e.printf("\nFiles:       %5d new, %5d removed, %5d changed\n", stats.Added.Files, stats.Removed.Files, stats.ChangedFiles)
	e.printf("Dirs:        %5d new, %5d removed\n", stats.Added.Dirs, stats.Removed.Dirs)
	e.printf("Others:      %5d new, %5d removed\n", stats.Added.Others, stats.Removed.Others)
	e.printf("Data Blobs:  %5d new, %5d removed\n", stats.Added.DataBlobs, stats.Removed.DataBlobs)
	e.printf("Tree Blobs:  %5d new, %5d removed\n", stats.Added.TreeBlobs, stats.Removed.TreeBlobs)
	e.printf("  Added:   %s\n", formatBytes(stats.Added.Bytes))
	e.printf("  Removed: %s\n", formatBytes(stats.Removed.Bytes))
	return nil
}

func nodeSize(ch maint.Change) (before, after int64) {
	if ch.Before != nil {
		before = int64(ch.Before.Size)
	}
	if ch.After != nil {
		after = int64(ch.After.Size)
	}
	return
}

func sizeDelta(ch maint.Change) int64 {
	b, a := nodeSize(ch)
	if a > b {
		return a - b
	}
	return b - a
}

func printChange(e *env, ch maint.Change) error {
	if e.json {
		return printJSONLine(e, map[string]any{"message_type": "change", "path": ch.Path, "modifier": ch.Modifier})
	}
	if e.verbose {
		b, a := nodeSize(ch)
		e.printf("%-5s%s  (%d -> %d bytes)\n", ch.Modifier, ch.Path, b, a)
		return nil
	}
	e.printf("%-5s%s\n", ch.Modifier, ch.Path)
	return nil
}
