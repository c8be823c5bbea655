package main

import (
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/snapshot"
)

func maintenanceCommands() []*cli.Command {
	return []*cli.Command{forgetCommand(), pruneCommand(), diffCommand(), repackCommand(), checkCommand(), statsCommand(), repairCommand()}
}

func pruneFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "max-unused", Value: "5%", Usage: "unused data allowed to stay in partly used packs: `LIMIT` as a percentage of used data or a size"},
		&cli.StringFlag{Name: "max-repack-size", Usage: "repack at most `SIZE` of packs"},
		&cli.DurationFlag{Name: "keep-delete", Value: maint.DefaultKeepDelete, Usage: "keep marked packs for `DURATION` before deleting them"},
		&cli.BoolFlag{Name: "instant-delete", Usage: "delete unused packs at once (takes an exclusive lock: only for a repository nobody else uses)"},
	}
}

func pruneOptions(c *cli.Context, e *env) (maint.PruneOptions, error) {
	opts := maint.PruneOptions{KeepDelete: c.Duration("keep-delete"), InstantDelete: c.Bool("instant-delete"), DryRun: c.Bool("dry-run")}
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
	if e.verbose {
		opts.Logf = func(f string, a ...any) { e.printf(f, a...) }
	}
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

// maintMemoryLimit is the soft memory limit of check, prune and repack:
// they hold a few whole packs at a time, and the index.
const maintMemoryLimit = 160 << 20

func runPrune(e *env, r *repo.Repository, opts maint.PruneOptions) error {
	setMemoryLimit(maintMemoryLimit)
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

func forgetCommand() *cli.Command {
	keep := func(name, alias, usage string) cli.Flag {
		return &cli.StringFlag{Name: "keep-" + name, Aliases: []string{alias}, Usage: usage}
	}
	within := func(name, usage string) cli.Flag {
		return &cli.StringFlag{Name: "keep-within" + name, Usage: usage}
	}
	// As in restic, -H is --keep-hourly here, so --host has no short form.
	flags := filterFlags()
	for _, f := range flags {
		if h, ok := f.(*cli.StringSliceFlag); ok && h.Name == "host" {
			h.Aliases = nil
		}
	}
	flags = append(flags,
		keep("last", "l", "keep the last `N` snapshots"),
		keep("hourly", "H", "keep the last `N` hourly snapshots"),
		keep("daily", "d", "keep the last `N` daily snapshots"),
		keep("weekly", "w", "keep the last `N` weekly snapshots"),
		keep("monthly", "m", "keep the last `N` monthly snapshots"),
		keep("yearly", "y", "keep the last `N` yearly snapshots"),
		within("", "keep snapshots newer than `DURATION` (e.g. 1y5m7d2h) relative to the newest"),
		within("-hourly", "keep hourly snapshots within `DURATION`"),
		within("-daily", "keep daily snapshots within `DURATION`"),
		within("-weekly", "keep weekly snapshots within `DURATION`"),
		within("-monthly", "keep monthly snapshots within `DURATION`"),
		within("-yearly", "keep yearly snapshots within `DURATION`"),
		&cli.StringSliceFlag{Name: "keep-tag", Usage: "keep snapshots with all of `TAG[,TAG...]` (repeatable: any of the lists)"},
		&cli.StringFlag{Name: "group-by", Aliases: []string{"g"}, Value: "host,paths", Usage: "group snapshots by `FIELDS` (host, paths, tags; '' for one group)"},
		&cli.BoolFlag{Name: "compact", Aliases: []string{"c"}, Usage: "compact tables: no paths and size columns, one tag a line"},
		&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only print what would be removed"},
		&cli.BoolFlag{Name: "prune", Usage: "prune right after forgetting"},
		&cli.BoolFlag{Name: "unsafe-allow-remove-all", Usage: "allow a policy that removes every snapshot"},
	)
	flags = append(flags, pruneFlags()...)
	return &cli.Command{
		Name:      "forget",
		Usage:     "remove snapshots by ID or by a retention policy",
		UsageText: "dj forget [policy options] [--host HOST] [--tag TAG[,TAG...]] [--path PATH] [--group-by FIELDS] [--prune] [SNAPSHOT...]",
		Description: `Removes the given snapshots, or applies a retention policy to each group of
snapshots (by default: same host and paths). The rules are restic's, so existing
policies carry over; every kept snapshot says which rule kept it. Data is freed by
prune (--prune runs it right after).

--host, --tag and --path limit the policy to the snapshots they select, as in
restic: --tag a,b selects snapshots with both tags, repeated --tag any of the
lists, --tag '' untagged snapshots; snapshots not selected are kept. The short
forms -l -H -d -w -m -y are restic's for --keep-last ... --keep-yearly (so --host
has no short form here).

Examples:
   dj forget 1a2b3c4d
   dj forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --prune
   dj forget -d 7 -w 5 -m 12 --host laptop --tag daily
   dj forget --keep-within 30d --dry-run --json
   dj forget --keep-last 3 --group-by '' --compact --dry-run`,
		Flags:  flags,
		Action: runForget,
	}
}

// forgetGroupJSON is restic's JSON shape of one forget group.
type forgetGroupJSON struct {
	Tags    []string         `json:"tags"`
	Host    string           `json:"host"`
	Paths   []string         `json:"paths"`
	Keep    []snapshotJSON   `json:"keep"`
	Remove  []snapshotJSON   `json:"remove"`
	Reasons []keepReasonJSON `json:"reasons"`
}

// keepReasonJSON is restic's shape of a kept snapshot's reasons (dj adds
// the snapshot's id).
type keepReasonJSON struct {
	Snapshot snapshotJSON   `json:"snapshot"`
	Matches  []string       `json:"matches"`
	Counters map[string]int `json:"counters"`
}

func runForget(c *cli.Context) error {
	e := newEnv(c)
	var p maint.ExpirePolicy
	counts := []struct {
		flag string
		dst  *int
	}{{"keep-last", &p.Last}, {"keep-hourly", &p.Hourly}, {"keep-daily", &p.Daily}, {"keep-weekly", &p.Weekly}, {"keep-monthly", &p.Monthly}, {"keep-yearly", &p.Yearly}}
	for _, ct := range counts {
		if s := c.String(ct.flag); s != "" {
			n, err := maint.ParseKeepCount(s)
			if err != nil {
				return usageError("--%s: %v", ct.flag, err)
			}
			*ct.dst = n
		}
	}
	durs := []struct {
		flag string
		dst  *maint.Duration
	}{{"keep-within", &p.Within}, {"keep-within-hourly", &p.WithinHourly}, {"keep-within-daily", &p.WithinDaily},
		{"keep-within-weekly", &p.WithinWeekly}, {"keep-within-monthly", &p.WithinMonthly}, {"keep-within-yearly", &p.WithinYearly}}
	for _, d := range durs {
		if s := c.String(d.flag); s != "" {
			v, err := maint.ParseDuration(s)
			if err != nil {
				return usageError("--%s: %v", d.flag, err)
			}
			*d.dst = v
		}
	}
	for _, t := range c.StringSlice("keep-tag") {
		p.Tags = append(p.Tags, maint.ParseTagList(t))
	}
	if err := p.Validate(); err != nil {
		return usageError("%v", err)
	}
	ids := c.Args().Slice()
	if len(ids) == 0 && p.Empty() && !c.Bool("unsafe-allow-remove-all") {
		return usageError("no policy given: nothing to do (give snapshot IDs or --keep-* options; --unsafe-allow-remove-all to remove everything)")
	}
	var pruneOpts maint.PruneOptions
	if c.Bool("prune") {
		var err error
		if pruneOpts, err = pruneOptions(c, e); err != nil {
			return err
		}
	}
	r, err := e.openRepo(false)
	if err != nil {
		return err
	}
	defer r.Close()
	unlock, err := e.lock(r, repo.LockShared, false)
	if err != nil {
		return err
	}
	list, problems, err := r.Snapshots(e.ctx)
	if err != nil {
		unlock()
		return err
	}
	e.warnUnreadable(problems)
	var remove []*snapshot.Snapshot
	var groups []forgetGroupJSON
	if len(ids) > 0 {
		// As in restic, "latest" is the newest snapshot the filters select.
		var errs []error
		remove, errs = snapshot.FindAll(list, ids, filterFromFlags(c))
		if len(errs) > 0 {
			unlock()
			return errs[0]
		}
	} else {
		filtered := filterFromFlags(c).Apply(list)
		byGroup, keys, err := maint.GroupSnapshots(filtered, c.String("group-by"))
		if err != nil {
			unlock()
			return usageError("%v", err)
		}
		e.printf("Applying Policy: %s\n", p)
		names := sortedGroups(keys)
		for _, k := range names {
			keep, rem, reasons := maint.ApplyPolicy(byGroup[k], p)
			if len(keep) == 0 && !c.Bool("unsafe-allow-remove-all") {
				unlock()
				which := "selected"
				if h := groupHeader(keys[k]); h != "" {
					which = "of the group " + h
				}
				return usageError("the policy would remove every snapshot %s; refusing (use --unsafe-allow-remove-all)", which)
			}
			g := forgetGroupJSON{Tags: keys[k].Tags, Host: keys[k].Hostname, Paths: keys[k].Paths}
			matches := make([][]string, 0, len(reasons))
			for _, r := range reasons {
				g.Reasons = append(g.Reasons, keepReasonJSON{Snapshot: toJSON(r.Snapshot), Matches: r.Matches, Counters: r.Counters})
				matches = append(matches, r.Matches)
			}
			for _, s := range keep {
				g.Keep = append(g.Keep, toJSON(s))
			}
			for _, s := range rem {
				g.Remove = append(g.Remove, toJSON(s))
			}
			groups = append(groups, g)
			remove = append(remove, rem...)
			if h := groupHeader(keys[k]); h != "" {
				e.printf("snapshots for %s:\n", h)
			}
			// restic's order in the tables: oldest first.
			if len(keep) > 0 {
				e.printf("keep %d snapshots:\n", len(keep))
				snaps, why := oldestFirst(keep, matches)
				if !e.quiet && !e.json {
					snapshotTable(snaps, c.Bool("compact"), why).write(e.stdout)
				}
				e.printf("%d snapshots\n\n", len(keep))
			}
			if len(rem) > 0 {
				e.printf("remove %d snapshots:\n", len(rem))
				snaps, _ := oldestFirst(rem, nil)
				if !e.quiet && !e.json {
					snapshotTable(snaps, c.Bool("compact"), nil).write(e.stdout)
				}
				e.printf("%d snapshots\n\n", len(rem))
			}
		}
	}
	if e.json && len(ids) == 0 {
		if groups == nil {
			groups = []forgetGroupJSON{}
		}
		_ = e.printJSON(groups)
	}
	if !c.Bool("dry-run") {
		for _, s := range remove {
			if err := r.RemoveSnapshot(e.ctx, s.ID); err != nil {
				unlock()
				return err
			}
		}
		if !e.json {
			e.printf("removed %d snapshots\n", len(remove))
		}
	} else if !e.json {
		if len(ids) > 0 && len(remove) > 0 {
			// restic's line for a dry run with explicit IDs.
			e.printf("Would have removed the following snapshots:\n{%s}\n\n", strings.Join(shortIDs(remove), " "))
		}
		e.printf("dry run: would remove %d snapshots\n", len(remove))
	}
	unlock()
	if c.Bool("prune") && !c.Bool("dry-run") {
		return runPrune(e, r, pruneOpts)
	}
	return nil
}

// shortIDs returns the short IDs of list.
func shortIDs(list []*snapshot.Snapshot) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = s.ID.Short()
	}
	return out
}

// oldestFirst returns list (newest first, as [maint.ApplyPolicy] gives it)
// reversed, with reasons (one entry per snapshot, or nil) reversed alike.
func oldestFirst(list []*snapshot.Snapshot, reasons [][]string) ([]*snapshot.Snapshot, [][]string) {
	snaps := make([]*snapshot.Snapshot, len(list))
	var why [][]string
	if reasons != nil {
		why = make([][]string, len(reasons))
	}
	for i := range list {
		snaps[len(list)-1-i] = list[i]
		if reasons != nil {
			why[len(list)-1-i] = reasons[i]
		}
	}
	return snaps, why
}

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
	r, closeRepo, err := e.openLocked(repo.LockRead, true, true)
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

func repackCommand() *cli.Command {
	return &cli.Command{
		Name:      "repack",
		Usage:     "rewrite small packs into full ones, optionally recompressing",
		UsageText: "dj repack [--pack-size SIZE] [--compression LEVEL] [--dry-run]",
		Description: `Merges packs smaller than half the target size into full packs (data and tree
blobs stay apart) and, with --compression, recompresses every blob at that level
where that saves space. Every blob is verified before it is copied; the old packs
are marked for deletion like prune's (or deleted at once with --instant-delete).

Examples:
   dj repack
   dj repack --compression best`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "pack-size", Usage: "target pack `SIZE` (default: the repository's, 16M)"},
			&cli.StringFlag{Name: "compression", Usage: "recompress blobs at `LEVEL`: fastest, default, better or best"},
			&cli.Float64Flag{Name: "min-fill", Value: 0.5, Usage: "repack packs smaller than this `FRACTION` of the target size"},
			&cli.BoolFlag{Name: "instant-delete", Usage: "delete the old packs at once (exclusive lock)"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only print what would be done"},
		},
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			opts := maint.RepackOptions{Compression: c.String("compression"), MinFill: c.Float64("min-fill"),
				InstantDelete: c.Bool("instant-delete"), DryRun: c.Bool("dry-run")}
			if s := c.String("pack-size"); s != "" {
				n, err := parseSize(s)
				if err != nil || n < 1<<20 || n > 512<<20 {
					return usageError("--pack-size: want a size between 1M and 512M, got %q", s)
				}
				opts.PackSize = int(n)
			}
			if e.verbose {
				opts.Logf = func(f string, a ...any) { e.printf(f, a...) }
			}
			setMemoryLimit(maintMemoryLimit)
			kind := repo.LockMaintenance
			if opts.InstantDelete {
				kind = repo.LockExclusive
			}
			r, closeRepo, err := e.openLocked(kind, false, true)
			if err != nil {
				return err
			}
			defer closeRepo()
			st, err := maint.Repack(e.ctx, r, opts)
			if e.json {
				_ = e.printJSON(st)
				return err
			}
			if err != nil {
				return err
			}
			about := ""
			if opts.DryRun {
				about = "about "
			}
			e.printf("packs: %d before, %s%d after (%d rewritten into %s%d)\n", st.PacksBefore, about, st.PacksAfter, st.PacksRewritten, about, st.PacksWritten)
			e.printf("blobs moved: %d, recompressed: %d\n", st.BlobsMoved, st.BlobsRecompressed)
			e.printf("stored bytes of rewritten packs: %s before, %s%s after (%s saved)\n",
				formatBytes(uint64(st.BytesBefore)), about, formatBytes(uint64(st.BytesAfter)), formatBytes(uint64(max(0, st.BytesBefore-st.BytesAfter))))
			if opts.DryRun {
				e.printf("dry run: nothing was written (the new pack count and sizes are estimates)\n")
			}
			return nil
		},
	}
}
