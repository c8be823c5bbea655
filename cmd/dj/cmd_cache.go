package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"dj/cache"
)

// cacheJSON is one cache in `dj cache --json` (restic 0.14 has no JSON
// for its cache command; the fields are its table's columns).
type cacheJSON struct {
	ID       string    `json:"repo_id"`
	Path     string    `json:"path"`
	LastUsed time.Time `json:"last_used"`
	Old      bool      `json:"old"`
	Size     *int64    `json:"size,omitempty"`
}

func cacheCommand() *cli.Command {
	return &cli.Command{
		Name:      "cache",
		Usage:     "list or clean up the local caches of remote repositories",
		UsageText: "dj cache [--cleanup] [--max-age DAYS] [--no-size] [--json]",
		Description: `Lists the local caches of remote repositories under the cache directory
(--cache-dir, default $XDG_CACHE_HOME/dj or ~/.cache/dj): one directory per
repository id with its index, snapshot and tree-pack files, when a dj command
last used it, whether it is old (not used for --max-age days) and its size.
A cache is used whenever a command opens its repository; --cache-max-size bounds
the tree packs each one keeps.

--cleanup removes the old caches (and those an older dj kept per location).

Examples:
   dj cache
   dj cache --json
   dj cache --cleanup --max-age 30`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "cleanup", Usage: "remove the caches not used for --max-age days"},
			&cli.IntFlag{Name: "max-age", Value: 30, Usage: "a cache not used for `DAYS` is old"},
			&cli.BoolFlag{Name: "no-size", Usage: "do not add up the size of each cache"},
		},
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			if c.NArg() != 0 {
				return usageError("cache takes no arguments")
			}
			if c.Int("max-age") < 0 {
				return usageError("invalid --max-age %d: want a number of days, 0 or more", c.Int("max-age"))
			}
			base := e.cacheDir()
			if base == "" {
				return fmt.Errorf("no cache directory: set --cache-dir or $XDG_CACHE_HOME")
			}
			maxAge := time.Duration(c.Int("max-age")) * 24 * time.Hour
			now := time.Now()
			if c.Bool("cleanup") {
				removed, err := cache.RemoveOld(base, now, maxAge)
				if !e.json {
					for _, d := range removed {
						e.printf("removed %s\n", d.Dir)
					}
					if len(removed) == 0 {
						e.printf("no old cache dirs found\n")
					}
				}
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(toCacheJSON(removed, now, maxAge, false))
				}
				return nil
			}
			dirs, err := cache.Dirs(base, !c.Bool("no-size"))
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(toCacheJSON(dirs, now, maxAge, !c.Bool("no-size")))
			}
			t := newTable("Repo ID", "Last Used", "Old", "Size")
			for _, d := range dirs {
				old, size := "", ""
				if d.Old(now, maxAge) {
					old = "yes"
				}
				if !c.Bool("no-size") {
					size = formatBytes(uint64(d.Size))
				}
				t.add(d.ID[:10], fmt.Sprintf("%d days ago", int(now.Sub(d.LastUsed).Hours()/24)), old, size)
			}
			t.write(e.stdout)
			e.printf("%d cache dirs in %s\n", len(dirs), base)
			return nil
		},
	}
}

func toCacheJSON(dirs []cache.DirInfo, now time.Time, maxAge time.Duration, withSize bool) []cacheJSON {
	out := make([]cacheJSON, 0, len(dirs))
	for _, d := range dirs {
		j := cacheJSON{ID: d.ID, Path: d.Dir, LastUsed: d.LastUsed, Old: d.Old(now, maxAge)}
		if withSize {
			size := d.Size
			j.Size = &size
		}
		out = append(out, j)
	}
	return out
}
