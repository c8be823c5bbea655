package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
)

func repairCommand() *cli.Command {
	return &cli.Command{
		Name:      "repair",
		Usage:     "repair the index or damaged snapshots",
		UsageText: "dj repair index [--read-all-packs]\n   dj repair snapshots [--forget] [--dry-run] [SNAPSHOT...]",
		Description: `Repairs what 'dj check' reports. First 'dj repair index', then, if data is
lost, 'dj repair snapshots'.

Example:
   dj repair index && dj check && dj repair snapshots --forget`,
		Subcommands: []*cli.Command{repairIndexCommand(), repairSnapshotsCommand()},
	}
}

func repairIndexCommand() *cli.Command {
	return &cli.Command{
		Name:      "index",
		Usage:     "rebuild the index from the packs in storage",
		UsageText: "dj repair index [--read-all-packs] [--json]",
		Description: `Reads the header of every pack and writes a new index that replaces all index
files: packs missing from storage leave the index, packs no index named join it,
packs that prune marked for deletion stay marked. The intact blobs of a pack
whose header is damaged are copied into new packs. With --read-all-packs every
pack is read whole and every blob verified: damaged blobs leave the index, and
the intact blobs of a damaged pack are copied into new packs. Nothing is
deleted except the old index files; prune removes the damaged packs later.

Examples:
   dj repair index
   dj repair index --read-all-packs`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "read-all-packs", Usage: "read every pack whole and verify every blob"},
		},
		Action: runRepairIndex,
	}
}

func runRepairIndex(c *cli.Context) error {
	e := newEnv(c)
	r, closeRepo, err := e.openLocked(repo.LockMaintenance, false, loadNothing)
	if err != nil {
		return err
	}
	defer closeRepo()
	opts := maint.RepairIndexOptions{ReadAllPacks: c.Bool("read-all-packs")}
	if bar := newByteProgress(e, "reading packs"); bar != nil {
		opts.Progress = func(done, total int, bytes int64) {
			bar.set(uint64(bytes), 0, fmt.Sprintf("reading packs %d/%d", done, total))
		}
		defer bar.finish()
	}
	opts.Logf = e.verboseLogf()
	res, err := maint.RepairIndex(e.ctx, r, opts)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	if res.OldIndexProblems > 0 {
		e.printf("%d old index file(s) could not be read\n", res.OldIndexProblems)
	}
	for _, id := range res.PacksAdded {
		e.printf("added pack %s, which no index named\n", id.Short())
	}
	for _, id := range res.PacksDropped {
		e.printf("dropped pack %s, which is missing from storage\n", id.Short())
	}
	for _, b := range res.BrokenPacks {
		e.printf("damaged pack %s: %s; %d blob(s) kept, %d lost\n", b.Pack.Short(), b.Error, b.Salvaged, b.Lost)
	}
	if res.PacksWritten > 0 {
		e.printf("copied %d intact blob(s) of damaged packs into %d new pack(s)\n", res.BlobsSalvaged, res.PacksWritten)
	}
	e.printf("indexed %d packs (%d marked for deletion) with %d blobs; wrote %d index file(s), removed %d old one(s)\n",
		res.Packs, res.PendingPacks, res.Blobs, res.IndexFilesWritten, res.IndexFilesRemoved)
	if res.BlobsLost > 0 || len(res.PacksDropped) > 0 {
		e.printf("data was lost: run `dj check` to see which snapshots are affected, and `dj repair snapshots`\n")
	}
	return nil
}

func repairSnapshotsCommand() *cli.Command {
	return &cli.Command{
		Name:      "snapshots",
		Usage:     "write snapshots without their missing or damaged data",
		UsageText: "dj repair snapshots [--forget] [--dry-run] [--host HOST] [--tag TAG] [--path PATH] [--json] [SNAPSHOT...]",
		Description: `For every snapshot whose trees or data are missing, writes a new snapshot with
the same time, host and paths, tagged "repaired", that refers to the original:
files whose data is missing are left out, directories whose listing cannot be
read are kept as empty directories. Each dropped file and emptied directory is
listed. Intact snapshots are not touched. --forget removes the damaged
snapshots (and snapshot files that cannot be read) once the repaired ones are
stored. Run 'dj repair index --read-all-packs' first, so that damaged blobs are
known as missing; repair refuses while packs that no index names hold data the
snapshots need.

Examples:
   dj repair snapshots --dry-run
   dj repair snapshots --forget`,
		Flags: append(filterFlags(),
			&cli.BoolFlag{Name: "forget", Usage: "remove the damaged snapshots after writing the repaired ones"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only print what would be done"},
		),
		Action: runRepairSnapshots,
	}
}

func runRepairSnapshots(c *cli.Context) error {
	e := newEnv(c)
	r, closeRepo, err := e.openLocked(repo.LockMaintenance, false, loadNothing)
	if err != nil {
		return err
	}
	defer closeRepo()
	opts := maint.RepairSnapshotsOptions{Snapshots: c.Args().Slice(), Filter: filterFromFlags(c), Forget: c.Bool("forget"), DryRun: c.Bool("dry-run")}
	opts.Logf = e.verboseLogf()
	res, err := maint.RepairSnapshots(e.ctx, r, opts)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	for _, rs := range res.Repaired {
		e.printf("snapshot %s:\n", rs.Original.Short())
		for _, p := range rs.DroppedFiles {
			e.printf("  dropped file %s (data missing)\n", p)
		}
		for _, p := range rs.EmptiedDirs {
			e.printf("  emptied directory %s (listing missing)\n", p)
		}
		switch {
		case rs.New == nil:
			e.printf("  would be saved as a new snapshot\n")
		case rs.Removed:
			e.printf("  saved as %s, original removed\n", rs.New.Short())
		default:
			e.printf("  saved as %s\n", rs.New.Short())
		}
	}
	for _, id := range res.Unreadable {
		removed := false
		for _, x := range res.RemovedUnreadable {
			removed = removed || x == id
		}
		if removed {
			e.printf("removed unreadable snapshot file %s\n", id.Short())
		} else {
			e.printf("snapshot file %s cannot be read (--forget removes it)\n", id.Short())
		}
	}
	e.printf("%d snapshots checked, %d intact, %d damaged\n", res.Checked, res.Intact, len(res.Repaired))
	if res.DryRun {
		e.printf("dry run: nothing was changed\n")
	} else if len(res.Repaired) > 0 && !opts.Forget {
		e.printf("the damaged snapshots remain; remove them with `dj forget` or repair with --forget\n")
	}
	return nil
}
