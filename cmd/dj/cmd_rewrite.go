package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
	"dj/repo/pathmatch"
	"dj/repo/snapshot"
)

func rewriteCommand() *cli.Command {
	return &cli.Command{
		Name:      "rewrite",
		Usage:     "remove files from existing snapshots",
		UsageText: "dj rewrite [--exclude PATTERN...] [--iexclude PATTERN...] [--exclude-file FILE] [--iexclude-file FILE] [--forget] [--dry-run] [--host HOST] [--tag TAG] [--path PATH] [SNAPSHOT...]",
		Description: `Writes new snapshots without the files and directories that match the exclude
patterns; patterns mean what they mean for 'dj backup --exclude' and are matched
against the paths as they are stored in the snapshot (see 'dj ls'). Rewrites the
given snapshots or, when none is named, every snapshot that passes --host, --tag
and --path.

A new snapshot keeps the time, host, paths, parent and tags of its original,
names it as "original", and gets the tag "rewrite", unless --forget is given:
then the original is removed once the new snapshot is stored. Only the
directories on the way to an excluded file are written again. Snapshots with
nothing to exclude are left alone. The data of excluded files stays in the
repository until 'dj prune' finds it unused.

Examples:
   dj rewrite --exclude '*.iso' --dry-run
   dj rewrite --exclude /home/ann/.cache --forget latest
   dj rewrite --iexclude-file secrets.txt --tag daily --forget && dj prune`,
		Flags: append(filterFlags(), append(excludePatternFlags(),
			&cli.BoolFlag{Name: "forget", Usage: "remove the original snapshots after writing the new ones"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only print what would be done"},
		)...),
		Action: runRewrite,
	}
}

// excludePatternFlags are backup's pattern options that restic's rewrite
// takes as well.
func excludePatternFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "exclude", Aliases: []string{"e"}, Usage: "exclude paths matching `PATTERN` (repeatable)"},
		&cli.StringSliceFlag{Name: "iexclude", Usage: "like --exclude `PATTERN`, ignoring case (repeatable)"},
		&cli.StringSliceFlag{Name: "exclude-file", Usage: "read exclude patterns from `FILE`"},
		&cli.StringSliceFlag{Name: "iexclude-file", Usage: "read case-insensitive exclude patterns from `FILE`"},
	}
}

// excludePatterns compiles --exclude, --iexclude, --exclude-file and
// --iexclude-file into one list, with backup's rules for pattern files
// (readPatternFile). The list is empty when no pattern is given.
func excludePatterns(c *cli.Context) (pathmatch.List, error) {
	patterns := c.StringSlice("exclude")
	ipatterns := c.StringSlice("iexclude")
	for _, f := range c.StringSlice("exclude-file") {
		lines, err := readPatternFile(f)
		if err != nil {
			return nil, err
		}
		patterns = append(patterns, lines...)
	}
	for _, f := range c.StringSlice("iexclude-file") {
		lines, err := readPatternFile(f)
		if err != nil {
			return nil, err
		}
		ipatterns = append(ipatterns, lines...)
	}
	ex, err := pathmatch.CompileList(patterns, false)
	if err != nil {
		return nil, usageError("%v", err)
	}
	iex, err := pathmatch.CompileList(ipatterns, true)
	if err != nil {
		return nil, usageError("%v", err)
	}
	return append(ex, iex...), nil
}

// snapshotLine describes a snapshot as restic's rewrite does.
func snapshotLine(sn *snapshot.Snapshot) string {
	return fmt.Sprintf("snapshot %s of [%s] at %s by %s@%s", sn.ID.Short(), strings.Join(sn.Paths, " "),
		sn.Time.Local().Format("2006-01-02 15:04:05"), sn.Username, sn.Hostname)
}

func runRewrite(c *cli.Context) error {
	e := newEnv(c)
	ex, err := excludePatterns(c)
	if err != nil {
		return err
	}
	if len(ex) == 0 {
		return usageError("nothing to do: no exclude patterns given (--exclude, --iexclude, --exclude-file, --iexclude-file)")
	}
	opts := maint.RewriteOptions{Snapshots: c.Args().Slice(), Filter: filterFromFlags(c), Exclude: ex.Match,
		Forget: c.Bool("forget"), DryRun: c.Bool("dry-run")}
	if maint.FilterIgnored(opts.Snapshots, opts.Filter) {
		e.warnf("warning: ignoring --host, --tag and --path: snapshot IDs were given\n")
	}
	// A maintenance lock, as for repair snapshots: new trees and snapshots
	// may be written beside backups and mounts, but not beside a prune
	// (which would not see them) or another rewrite of the same snapshots.
	kind, readOnly := repo.LockMaintenance, false
	if opts.DryRun {
		kind, readOnly = repo.LockRead, true
	}
	r, closeRepo, err := e.openLocked(kind, readOnly, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeRepo()
	res, err := maint.Rewrite(e.ctx, r, opts)
	if res == nil {
		return err
	}
	e.warnUnreadable(res.Unreadable)
	// restic's rewrite prints text even with --json.
	printf := func(format string, a ...any) {
		if !e.quiet {
			fmt.Fprintf(e.stdout, format, a...)
		}
	}
	done := map[string]maint.RewrittenSnapshot{}
	for _, rs := range res.Rewritten {
		done[rs.Original.String()] = rs
	}
	for _, sn := range res.Snapshots {
		printf("\n%s\n", snapshotLine(sn))
		rs, ok := done[sn.ID.String()]
		if !ok {
			printf("no changes\n")
			continue
		}
		for _, p := range rs.Excluded {
			printf("excluding %s\n", p)
		}
		switch {
		case opts.DryRun:
			printf("would save new snapshot\n")
			if opts.Forget {
				printf("would remove old snapshot\n")
			}
		case rs.New == nil:
			printf("not saved: stopped by the error below\n")
		default:
			printf("saved new snapshot %s\n", rs.New.Short())
			if rs.Removed {
				printf("removed old snapshot %s\n", sn.ID.Short())
			}
		}
	}
	printf("\n")
	switch n := len(res.Rewritten); {
	case err != nil:
		return err
	case n == 0 && opts.DryRun:
		printf("no snapshots would be modified\n")
	case n == 0:
		printf("no snapshots were modified\n")
	case opts.DryRun:
		printf("would modify %d snapshots\n", n)
	default:
		printf("modified %d snapshots\n", n)
	}
	return nil
}
