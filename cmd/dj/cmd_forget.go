package main

import (
	"errors"
	"strings"

	"github.com/urfave/cli/v2"

	"dj/backend"
	"dj/maint"
	"dj/repo"
	"dj/repo/snapshot"
)

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
			printForgetTable(e, "keep", keep, matches, c.Bool("compact"))
			printForgetTable(e, "remove", rem, nil, c.Bool("compact"))
		}
	}
	if e.json && len(ids) == 0 {
		if groups == nil {
			groups = []forgetGroupJSON{}
		}
		_ = e.printJSON(groups)
	}
	if !c.Bool("dry-run") {
		removed, retained := 0, 0
		for _, s := range remove {
			err := r.RemoveSnapshot(e.ctx, s.ID)
			if errors.Is(err, backend.ErrRetained) {
				// Object lock: the snapshot stays until its retention
				// ends; say so, and go on with the others.
				retained++
				e.warnf("snapshot %s stays: %v; forget it again after that\n", s.ID.Short(), err)
				continue
			}
			if err != nil {
				unlock()
				return err
			}
			removed++
		}
		if removed > 0 && removed == len(list) {
			// forget itself removed the last snapshots: prune may run on none.
			pruneOpts.AllowNoSnapshots = true
		}
		if !e.json {
			e.printf("removed %d snapshots\n", removed)
			if retained > 0 {
				e.printf("%d snapshots stay under the storage's retention (object lock)\n", retained)
			}
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

// printForgetTable prints the snapshots forget keeps or removes (what) as
// restic does, oldest first, with the reasons for keeping them (one entry
// per snapshot, or nil); nothing when list is empty.
func printForgetTable(e *env, what string, list []*snapshot.Snapshot, reasons [][]string, compact bool) {
	if len(list) == 0 {
		return
	}
	e.printf("%s %d snapshots:\n", what, len(list))
	snaps, why := oldestFirst(list, reasons)
	if !e.quiet && !e.json {
		snapshotTable(snaps, compact, why).write(e.stdout)
	}
	e.printf("%d snapshots\n\n", len(list))
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
