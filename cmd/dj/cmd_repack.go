package main

import (
	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
)

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
			opts.Logf = e.verboseLogf()
			setMemoryLimit(maintMemoryLimit)
			kind := repo.LockMaintenance
			if opts.InstantDelete {
				kind = repo.LockExclusive
			}
			r, closeRepo, err := e.openLocked(kind, false, loadIndex)
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
