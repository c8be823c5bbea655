package main

import (
	"slices"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/snapshot"
)

// filterFlags are the snapshot filter options of every command that
// selects snapshots (restic's --host, --tag and --path). See
// [snapshot.Filter] for what they mean.
func filterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "host", Aliases: []string{"H"}, Usage: "only snapshots of `HOST` (repeatable: any of them)"},
		&cli.StringSliceFlag{Name: "tag", Usage: "only snapshots with all of `TAG[,TAG...]` (repeatable: any of the lists; '' selects untagged snapshots)"},
		&cli.StringSliceFlag{Name: "path", Usage: "only snapshots that include `PATH` (repeatable: all of them)"},
	}
}

// filterFromFlags is the snapshot filter given by the options of
// [filterFlags]. Each --tag value is kept whole: the filter splits it.
func filterFromFlags(c *cli.Context) snapshot.Filter {
	return snapshot.Filter{Hosts: c.StringSlice("host"), Tags: c.StringSlice("tag"), Paths: c.StringSlice("path")}
}

// snapshotJSON is restic's JSON shape of a snapshot: its encoding, then
// its id and short id.
type snapshotJSON struct {
	snapshot.Snapshot
	ID      crypto.ID `json:"id"`
	ShortID string    `json:"short_id"`
}

func toJSON(s *snapshot.Snapshot) snapshotJSON {
	return snapshotJSON{Snapshot: *s, ID: s.ID, ShortID: s.ID.Short()}
}

func snapshotsCommand() *cli.Command {
	return &cli.Command{
		Name:      "snapshots",
		Usage:     "list snapshots",
		UsageText: "dj snapshots [--host HOST] [--tag TAG[,TAG...]] [--path PATH] [--latest N] [--group-by FIELDS] [--compact] [--json] [SNAPSHOT...]",
		Description: `Lists the snapshots in the repository, oldest first: all of them, those the
filters select, or those named by ID (a unique prefix will do; "latest" is the
newest snapshot the filters select, other IDs ignore the filters).

--tag a,b selects snapshots that have both tags a and b; repeated, --tag a --tag b
selects snapshots that have a or b; --tag '' selects snapshots without tags.
Repeated --host values are alternatives; repeated --path values must all be among
a snapshot's paths.

--group-by lists the snapshots in groups of the same host, paths and/or tags
(with --json: a list of {"group_key": {...}, "snapshots": [...]}, as restic).

Examples:
   dj snapshots
   dj snapshots --host laptop --latest 1 --json
   dj snapshots --tag daily,db --tag weekly
   dj snapshots --group-by host,paths --compact
   dj snapshots 1a2b3c4d latest`,
		Flags: append(filterFlags(),
			&cli.IntFlag{Name: "latest", Usage: "only the newest `N` snapshots of each host and path set"},
			&cli.StringFlag{Name: "group-by", Aliases: []string{"g"}, Usage: "group snapshots by `FIELDS`: host, paths and/or tags, separated by commas"},
			&cli.BoolFlag{Name: "compact", Aliases: []string{"c"}, Usage: "compact table: no paths and size columns, one tag a line"},
		),
		Action: runSnapshots,
	}
}

// snapshotGroupJSON is restic's JSON shape of one group of
// `snapshots --group-by`.
type snapshotGroupJSON struct {
	GroupKey  maint.GroupKey `json:"group_key"`
	Snapshots []snapshotJSON `json:"snapshots"`
}

func runSnapshots(c *cli.Context) error {
	e := newEnv(c)
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadNothing)
	if err != nil {
		return err
	}
	defer closeRepo()
	list, err := e.snapshots(r)
	if err != nil {
		return err
	}
	f := filterFromFlags(c)
	if refs := c.Args().Slice(); len(refs) > 0 {
		if !f.Empty() && !slices.Contains(refs, "latest") {
			e.warnf("Ignoring filters as there are explicit snapshot ids given\n")
		}
		var errs []error
		list, errs = snapshot.FindAll(list, refs, f)
		for _, err := range errs {
			e.warnf("Ignoring snapshot: %v\n", err)
		}
		snapshot.SortByTime(list)
	} else {
		list = f.Apply(list)
	}
	groups, keys, err := maint.GroupSnapshots(list, c.String("group-by"))
	if err != nil {
		return usageError("%v", err)
	}
	names := sortedGroups(keys)
	for _, k := range names {
		if n := c.Int("latest"); n > 0 {
			groups[k] = latestPerGroup(groups[k], n)
		}
	}
	if e.json {
		if c.String("group-by") == "" {
			out := make([]snapshotJSON, 0, len(list))
			for _, k := range names {
				for _, s := range groups[k] {
					out = append(out, toJSON(s))
				}
			}
			return e.printJSON(out)
		}
		out := make([]snapshotGroupJSON, 0, len(names))
		for _, k := range names {
			g := snapshotGroupJSON{GroupKey: keys[k], Snapshots: make([]snapshotJSON, 0, len(groups[k]))}
			for _, s := range groups[k] {
				g.Snapshots = append(g.Snapshots, toJSON(s))
			}
			out = append(out, g)
		}
		return e.printJSON(out)
	}
	if e.quiet {
		return nil
	}
	for _, k := range names {
		if h := groupHeader(keys[k]); h != "" {
			e.printf("snapshots for %s:\n", h)
		}
		snapshotTable(groups[k], c.Bool("compact"), nil).write(e.stdout)
		e.printf("%d snapshots\n", len(groups[k]))
	}
	if len(names) == 0 {
		snapshotTable(nil, c.Bool("compact"), nil).write(e.stdout)
		e.printf("0 snapshots\n")
	}
	return nil
}

// sortedGroups returns the keys of the groups of [maint.GroupSnapshots]
// ordered by host, then paths, then tags.
func sortedGroups(keys map[string]maint.GroupKey) []string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sortKey := func(k maint.GroupKey) string {
		return k.Hostname + "\x00" + strings.Join(k.Paths, "\x01") + "\x00" + strings.Join(k.Tags, "\x01")
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := sortKey(keys[names[i]]), sortKey(keys[names[j]])
		if a != b {
			return a < b
		}
		return names[i] < names[j]
	})
	return names
}

// groupHeader describes a group as restic's header does:
// "(host [h], tags [a, b], paths [/a, /b])"; it is empty for the group of
// all snapshots.
func groupHeader(k maint.GroupKey) string {
	var parts []string
	if k.Hostname != "" {
		parts = append(parts, "host ["+k.Hostname+"]")
	}
	if len(k.Tags) > 0 {
		parts = append(parts, "tags ["+strings.Join(k.Tags, ", ")+"]")
	}
	if len(k.Paths) > 0 {
		parts = append(parts, "paths ["+strings.Join(k.Paths, ", ")+"]")
	}
	if len(parts) == 0 {
		return ""
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// snapshotTable lays out snapshots as restic does: ID, time, host, tags
// (one a line when compact), then, unless compact, reasons (when reasons is
// not nil; one a line), paths (one a line) and size.
func snapshotTable(list []*snapshot.Snapshot, compact bool, reasons [][]string) *table {
	if compact {
		reasons = nil
	}
	head := []string{"ID", "Time", "Host", "Tags"}
	if reasons != nil {
		head = append(head, "Reasons")
	}
	if !compact {
		head = append(head, "Paths", "Size")
	}
	t := newTable(head...)
	for i, s := range list {
		var cols [][]string
		tags := []string{strings.Join(s.Tags, ",")}
		if compact {
			tags = s.Tags
		}
		cols = append(cols, []string{s.ID.Short()}, []string{s.Time.Local().Format("2006-01-02 15:04:05")}, []string{s.Hostname}, tags)
		if reasons != nil {
			cols = append(cols, reasons[i])
		}
		if !compact {
			size := ""
			if s.Summary != nil {
				size = formatBytes(s.Summary.TotalBytesProcessed)
			}
			cols = append(cols, s.Paths, []string{size})
		}
		// One row a line: cells with several lines continue on rows whose
		// other cells are empty.
		lines := 1
		for _, col := range cols {
			lines = max(lines, len(col))
		}
		for l := 0; l < lines; l++ {
			row := make([]string, len(cols))
			for j, col := range cols {
				if l < len(col) {
					row[j] = col[l]
				}
			}
			t.add(row...)
		}
	}
	return t
}

// latestPerGroup keeps the n newest snapshots of every host+paths group,
// preserving order.
func latestPerGroup(list []*snapshot.Snapshot, n int) []*snapshot.Snapshot {
	count := map[string]int{}
	keep := map[*snapshot.Snapshot]bool{}
	for i := len(list) - 1; i >= 0; i-- {
		s := list[i]
		key := s.Hostname + "\x00" + strings.Join(s.Paths, "\x00")
		if count[key] < n {
			count[key]++
			keep[s] = true
		}
	}
	var out []*snapshot.Snapshot
	for _, s := range list {
		if keep[s] {
			out = append(out, s)
		}
	}
	return out
}
