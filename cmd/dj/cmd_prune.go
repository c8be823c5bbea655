package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
	"dj/repo/crypto"
)

func pruneFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "max-unused", Value: "5%", Usage: "unused data allowed to stay in partly used packs: `LIMIT` as a percentage of used data or a size"},
		&cli.StringFlag{Name: "max-repack-size", Usage: "repack at most `SIZE` of packs"},
		&cli.DurationFlag{Name: "keep-delete", Value: maint.DefaultKeepDelete, Usage: "keep marked packs for `DURATION` before deleting them"},
		&cli.BoolFlag{Name: "instant-delete", Usage: "delete unused packs at once (takes an exclusive lock: only for a repository nobody else uses)"},
		&cli.BoolFlag{Name: "unsafe-allow-no-snapshots", Usage: "prune even when no snapshot is listed (otherwise prune refuses: an empty listing may be a storage failure)"},
	}
}

func pruneOptions(c *cli.Context, e *env) (maint.PruneOptions, error) {
	opts := maint.PruneOptions{KeepDelete: c.Duration("keep-delete"), InstantDelete: c.Bool("instant-delete"), DryRun: c.Bool("dry-run"),
		AllowNoSnapshots: c.Bool("unsafe-allow-no-snapshots")}
	if mu := c.String("max-unused"); strings.HasSuffix(mu, "%") {
		f, err := strconv.ParseFloat(strings.TrimSuffix(mu, "%"), 64)
		if err != nil || f < 0 {
			return opts, usageError("--max-unused: invalid percentage %q", mu)
		}
		opts.MaxUnused = f / 100
		if f == 0 {
			opts.MaxUnusedBytes = -1
		}
	} else if mu != "" {
		n, err := parseSize(mu)
		if err != nil {
			return opts, usageError("--max-unused: %v", err)
		}
		opts.MaxUnusedBytes = n
		if n == 0 {
			opts.MaxUnusedBytes = -1
		}
	}
	if s := c.String("max-repack-size"); s != "" {
		n, err := parseSize(s)
		if err != nil {
			return opts, usageError("--max-repack-size: %v", err)
		}
		opts.MaxRepackBytes = n
	}
	opts.Logf = e.verboseLogf()
	return opts, nil
}

func pruneCommand() *cli.Command {
	return &cli.Command{
		Name:      "prune",
		Usage:     "remove data that no snapshot needs",
		UsageText: "dj prune [--dry-run] [--max-unused 5%] [--keep-delete 24h] [--instant-delete]",
		Description: `Finds the data the snapshots still use, marks packs that hold none of it for
deletion, repacks packs with too much unused data, and rewrites the index. Prune
does not stop backups or mounts: marked packs stay readable and are deleted by a
later prune once they are older than --keep-delete and no backup that started
before the marking still runs. --dry-run prints what would happen.

Examples:
   dj prune --dry-run
   dj forget --keep-daily 7 --keep-weekly 4 --prune`,
		Flags: append(pruneFlags(), &cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only print what would be done"}),
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			opts, err := pruneOptions(c, e)
			if err != nil {
				return err
			}
			r, err := e.openRepo(false)
			if err != nil {
				return err
			}
			defer r.Close()
			return runPrune(e, r, opts)
		},
	}
}

func runPrune(e *env, r *repo.Repository, opts maint.PruneOptions) error {
	kind := repo.LockMaintenance
	if opts.InstantDelete {
		kind = repo.LockExclusive
	}
	unlock, err := e.lock(r, kind, false)
	if err != nil {
		return err
	}
	defer unlock()
	plan, err := maint.PlanPrune(e.ctx, r, opts)
	if err != nil {
		return err
	}
	// Beyond the index and the plan, prune holds a few whole packs.
	setMemoryLimit(maintMemoryLimit)
	stats, err := plan.Execute(e.ctx, r, opts)
	if e.json {
		_ = e.printJSON(map[string]any{
			"message_type": "prune", "dry_run": opts.DryRun, "snapshots": plan.Snapshots,
			"used_blobs": plan.UsedBlobs, "used_bytes": plan.UsedBytes, "unused_blobs": plan.UnusedBlobs, "unused_bytes": plan.UnusedBytes,
			"duplicate_blobs": plan.Duplicates, "packs_total": plan.PacksTotal,
			"packs_marked": idStrings(plan.Mark), "packs_repacked": idStrings(plan.Repack), "repack_bytes": plan.RepackBytes,
			"packs_deleted": idStrings(deletedPacks(plan, opts)), "unindexed_packs_deleted": idStrings(plan.Unindexed),
			"temp_files_removed": stats.TempFilesRemoved,
			"packs_resurrected":  idStrings(plan.Resurrect), "packs_pending": plan.KeptPending,
			"freed_bytes_now": plan.FreedBytesNow, "freed_bytes_later": plan.FreedLater,
			"blobs_moved": stats.BlobsMoved, "packs_written": stats.PacksWritten,
			"unindexed_packs_waiting": waitingJSON(plan.UnindexedWaiting),
			"packs_retained":          stats.PacksRetained, "bytes_retained": stats.BytesRetained,
			"index_files_retained": stats.IndexFilesRetained, "retained_until": retainedUntilJSON(stats.RetainedUntil),
		})
		return err
	}
	verb := func(now, dry string) string {
		if opts.DryRun {
			return dry
		}
		return now
	}
	e.printf("%d snapshots use %d blobs (%s); %d blobs (%s) are unused, %d duplicates\n",
		plan.Snapshots, plan.UsedBlobs, formatBytes(uint64(plan.UsedBytes)), plan.UnusedBlobs, formatBytes(uint64(plan.UnusedBytes)), plan.Duplicates)
	e.printf("%s %d unused packs for deletion\n", verb("marked", "would mark"), len(plan.Mark))
	e.printf("%s %d packs (%s)\n", verb("repacked", "would repack"), len(plan.Repack), formatBytes(uint64(plan.RepackBytes)))
	if len(plan.Resurrect) > 0 {
		e.printf("%s %d marked packs that snapshots need again\n", verb("restored", "would restore"), len(plan.Resurrect))
	}
	deleted := len(deletedPacks(plan, opts))
	e.printf("%s %d marked and %d unindexed packs, freeing %s\n", verb("deleted", "would delete"), deleted, len(plan.Unindexed), formatBytes(uint64(plan.FreedBytesNow)))
	if plan.FreedLater > 0 {
		why := fmt.Sprintf("after %s", opts.KeepDelete)
		if plan.WaitingForWriter {
			why += " and once running backups finish"
		}
		e.printf("%s stays in %d packs marked for deletion, to be freed by a prune %s\n", formatBytes(uint64(plan.FreedLater)), plan.KeptPending+len(plan.Mark)+len(plan.Repack), why)
	}
	if stats.PacksRetained > 0 || stats.IndexFilesRetained > 0 {
		until := "its retention ends"
		if !stats.RetainedUntil.IsZero() {
			until = stats.RetainedUntil.Local().Format("2006-01-02 15:04:05")
		}
		e.printf("the storage keeps %d packs (%s) and %d index files under retention (object lock) until %s; no index needs them, and a prune after that deletes them\n",
			stats.PacksRetained, formatBytes(uint64(stats.BytesRetained)), stats.IndexFilesRetained, until)
	}
	if w := plan.UnindexedWaiting; len(w) > 0 {
		var size int64
		var latest time.Time
		writer := false
		for _, p := range w {
			size += p.Size
			writer = writer || p.Writer || p.DeletableAt.IsZero()
			if p.DeletableAt.After(latest) {
				latest = p.DeletableAt
			}
		}
		when := "by a prune after " + latest.Local().Format("2006-01-02 15:04:05")
		if writer {
			when = "once the backups that may own them finish (or their locks go stale)"
			if !latest.IsZero() {
				when += ", the last after " + latest.Local().Format("2006-01-02 15:04:05")
			}
		}
		e.printf("kept %d unindexed packs (%s) too young to delete (they may belong to a running backup): deletable %s\n", len(w), formatBytes(uint64(size)), when)
		if e.verbose {
			for _, p := range w {
				at := "when the running backup is done"
				if !p.DeletableAt.IsZero() {
					at = "after " + p.DeletableAt.Local().Format("2006-01-02 15:04:05")
				}
				e.printf("  unindexed %s %s, deletable %s\n", p.ID, formatBytes(uint64(p.Size)), at)
			}
		}
	}
	if opts.DryRun && e.verbose {
		for _, id := range plan.Mark {
			e.printf("  mark    %s\n", id)
		}
		for _, id := range plan.Repack {
			e.printf("  repack  %s\n", id)
		}
		for _, id := range append(append([]string{}, idStrings(plan.Delete)...), idStrings(plan.Unindexed)...) {
			e.printf("  delete  %s\n", id)
		}
	}
	return err
}

// waitingJSON lists the unindexed packs prune left for later.
func waitingJSON(w []maint.WaitingPack) []map[string]any {
	out := make([]map[string]any, 0, len(w))
	for _, p := range w {
		m := map[string]any{"id": p.ID.String(), "size": p.Size, "waiting_for_writer": p.Writer}
		if !p.DeletableAt.IsZero() {
			m["deletable_at"] = p.DeletableAt
		}
		out = append(out, m)
	}
	return out
}

// deletedPacks lists the indexed packs prune deletes: marked packs whose
// time has come, and with --instant-delete also those it marks now.
func deletedPacks(plan *maint.PrunePlan, opts maint.PruneOptions) []crypto.ID {
	out := append([]crypto.ID(nil), plan.Delete...)
	if opts.InstantDelete {
		out = append(append(out, plan.Mark...), plan.Repack...)
	}
	return out
}

func idStrings(ids []crypto.ID) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, id.String())
	}
	return out
}

// retainedUntilJSON is the end of a retention as JSON: RFC 3339, or null.
func retainedUntilJSON(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}
