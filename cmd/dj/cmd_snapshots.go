package main

import (
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/snapshot"
)

func filterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "host", Aliases: []string{"H"}, Usage: "only snapshots of `HOST` (repeatable)"},
		&cli.StringSliceFlag{Name: "tag", Usage: "only snapshots with `TAG[,TAG...]` (repeatable: any of them)"},
		&cli.StringSliceFlag{Name: "path", Usage: "only snapshots that include `PATH` (repeatable)"},
	}
}

func filterFromFlags(c *cli.Context) snapshot.Filter {
	return snapshot.Filter{Hosts: c.StringSlice("host"), Tags: c.StringSlice("tag"), Paths: c.StringSlice("path")}
}

// snapshotJSON is restic's JSON shape of a snapshot.
type snapshotJSON struct {
	Time           time.Time         `json:"time"`
	Parent         *crypto.ID        `json:"parent,omitempty"`
	Tree           crypto.ID         `json:"tree"`
	Paths          []string          `json:"paths"`
	Hostname       string            `json:"hostname,omitempty"`
	Username       string            `json:"username,omitempty"`
	UID            uint32            `json:"uid,omitempty"`
	GID            uint32            `json:"gid,omitempty"`
	Tags           []string          `json:"tags,omitempty"`
	Original       *crypto.ID        `json:"original,omitempty"`
	ProgramVersion string            `json:"program_version,omitempty"`
	Summary        *snapshot.Summary `json:"summary,omitempty"`
	ID             crypto.ID         `json:"id"`
	ShortID        string            `json:"short_id"`
}

func toJSON(s *snapshot.Snapshot) snapshotJSON {
	return snapshotJSON{Time: s.Time, Parent: s.Parent, Tree: s.Tree, Paths: s.Paths, Hostname: s.Hostname,
		Username: s.Username, UID: s.UID, GID: s.GID, Tags: s.Tags, Original: s.Original, ProgramVersion: s.ProgramVersion,
		Summary: s.Summary, ID: s.ID, ShortID: s.ID.Short()}
}

func snapshotsCommand() *cli.Command {
	return &cli.Command{
		Name:      "snapshots",
		Usage:     "list snapshots",
		UsageText: "dj snapshots [--host HOST] [--tag TAG] [--path PATH] [--latest N] [--json]",
		Description: `Lists the snapshots in the repository, oldest first.

Examples:
   dj snapshots
   dj snapshots --host laptop --latest 1 --json`,
		Flags: append(filterFlags(), &cli.IntFlag{Name: "latest", Usage: "only the newest `N` snapshots of each host and path set"}),
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			r, err := e.openRepo(false)
			if err != nil {
				return err
			}
			defer r.Close()
			unlock, err := e.lock(r, repo.LockRead, true)
			if err != nil {
				return err
			}
			defer unlock()
			list, problems, err := r.Snapshots(e.ctx)
			if err != nil {
				return err
			}
			for _, p := range problems {
				e.warnf("warning: snapshot %s cannot be read: %v\n", p.ID.Short(), p.Err)
			}
			list = filterFromFlags(c).Apply(list)
			if n := c.Int("latest"); n > 0 {
				list = latestPerGroup(list, n)
			}
			if e.json {
				out := make([]snapshotJSON, 0, len(list))
				for _, s := range list {
					out = append(out, toJSON(s))
				}
				return e.printJSON(out)
			}
			if e.quiet {
				return nil
			}
			t := newTable("ID", "Time", "Host", "Tags", "Paths", "Size")
			for _, s := range list {
				size := ""
				if s.Summary != nil {
					size = formatBytes(s.Summary.TotalBytesProcessed)
				}
				t.add(s.ID.Short(), s.Time.Local().Format("2006-01-02 15:04:05"), s.Hostname, strings.Join(s.Tags, ","), strings.Join(s.Paths, ","), size)
			}
			t.write(e.stdout)
			e.printf("%d snapshots\n", len(list))
			return nil
		},
	}
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
