package main

import (
	"encoding/json"
	"errors"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
)

func tagCommand() *cli.Command {
	return &cli.Command{
		Name:      "tag",
		Usage:     "add, remove or replace the tags of snapshots",
		UsageText: "dj tag [--add TAG[,TAG...]] [--remove TAG[,TAG...]] [--set TAG[,TAG...]] [--host HOST] [--tag TAG] [--path PATH] [--json] [SNAPSHOT...]",
		Description: `Changes the tags of the given snapshots or, when no snapshot is named, of every
snapshot that passes --host, --tag and --path. --add and --remove change the
existing tags; --set replaces them (--set '' removes every tag) and cannot be
combined with --add or --remove. Each option takes a comma-separated list and
may be repeated.

A snapshot whose tags change is written again as a new snapshot file (so its ID
changes) that names the first ID it had as "original", and its old file is
removed; snapshots whose tags stay the same are not touched. With --json, one
line per changed snapshot {"message_type":"changed","old_snapshot_id",
"new_snapshot_id"} and a summary line {"message_type":"summary",
"changed_snapshots"}.

Examples:
   dj tag --add important latest
   dj tag --tag daily --host laptop --add keep,checked
   dj tag --remove tmp
   dj tag --set weekly 1a2b3c4d 5e6f7a8b`,
		Flags: append(filterFlags(),
			&cli.StringSliceFlag{Name: "add", Usage: "add `TAG[,TAG...]` (repeatable)"},
			&cli.StringSliceFlag{Name: "remove", Usage: "remove `TAG[,TAG...]` (repeatable)"},
			&cli.StringSliceFlag{Name: "set", Usage: "replace the tags with `TAG[,TAG...]` (repeatable; '' removes all)"},
		),
		Action: runTag,
	}
}

// tagChangedJSON and tagSummaryJSON are restic's JSON lines of `tag`.
type tagChangedJSON struct {
	MessageType string `json:"message_type"` // "changed"
	maint.TagChange
}

type tagSummaryJSON struct {
	MessageType      string `json:"message_type"` // "summary"
	ChangedSnapshots int    `json:"changed_snapshots"`
}

func runTag(c *cli.Context) error {
	e := newEnv(c)
	opts := maint.TagOptions{
		Snapshots: c.Args().Slice(), Filter: filterFromFlags(c),
		Replace: c.IsSet("set"), Set: splitTags(c.StringSlice("set")),
		Add: splitTags(c.StringSlice("add")), Remove: splitTags(c.StringSlice("remove")),
	}
	if opts.Replace && (c.IsSet("add") || c.IsSet("remove")) {
		return usageError("%v", maint.ErrTagConflict)
	}
	if !opts.Replace && len(opts.Add) == 0 && len(opts.Remove) == 0 {
		return usageError("%v", maint.ErrNoTagChange)
	}
	if maint.FilterIgnored(opts.Snapshots, opts.Filter) {
		e.warnf("warning: ignoring --host, --tag and --path: snapshot IDs were given\n")
	}
	opts.Logf = e.verboseLogf()
	// A maintenance lock: tag replaces snapshot files, so it must not run
	// beside another tag, rewrite, repair or prune; backups and mounts go on.
	r, closeRepo, err := e.openLocked(repo.LockMaintenance, false, loadNothing)
	if err != nil {
		return err
	}
	defer closeRepo()
	res, err := maint.ChangeTags(e.ctx, r, opts)
	if res == nil {
		return err
	}
	e.warnUnreadable(res.Unreadable)
	if e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetEscapeHTML(false)
		for _, ch := range res.Changed {
			if jerr := enc.Encode(tagChangedJSON{MessageType: "changed", TagChange: ch}); jerr != nil {
				return errors.Join(err, jerr)
			}
		}
		if err == nil {
			err = enc.Encode(tagSummaryJSON{MessageType: "summary", ChangedSnapshots: len(res.Changed)})
		}
		return err
	}
	if err != nil {
		e.printf("modified tags on %d snapshots before the error\n", len(res.Changed))
		return err
	}
	if len(res.Changed) == 0 {
		e.printf("no snapshots were modified\n")
	} else {
		e.printf("modified tags on %d snapshots\n", len(res.Changed))
	}
	return nil
}
