package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
)

func statsCommand() *cli.Command {
	modes := make([]string, len(maint.StatsModes))
	for i, m := range maint.StatsModes {
		modes[i] = string(m)
	}
	return &cli.Command{
		Name:      "stats",
		Usage:     "show sizes of snapshots and of the data they use",
		UsageText: "dj stats [--mode MODE] [--host HOST] [--tag TAG] [--path PATH] [--json] [SNAPSHOT...]",
		Description: `Counts the given snapshots ("latest", IDs or ID prefixes), or every snapshot
that passes the filters. The modes are restic's:

   restore-size       what a restore writes: every file and directory, hard
                      links counted once per snapshot (the default)
   files-by-contents  files unique by content, and their size
   blobs-per-file     for each file unique by content, its blobs (unique per
                      path) and their size
   raw-data           the blobs the snapshots use, each once, as stored
                      (compressed and encrypted), with the compression ratio
                      and the deduplication ratio (restore size / unique data)

Examples:
   dj stats
   dj stats --mode raw-data --json
   dj stats --mode files-by-contents latest`,
		Flags: append(filterFlags(),
			&cli.StringFlag{Name: "mode", Value: string(maint.StatsRestoreSize), Usage: "what to count: `MODE` is " + strings.Join(modes, ", ")}),
		Action: runStats,
	}
}

func runStats(c *cli.Context) error {
	e := newEnv(c)
	mode, err := maint.ParseStatsMode(c.String("mode"))
	if err != nil {
		return usageError("--mode: %v", err)
	}
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadNothing)
	if err != nil {
		return err
	}
	defer closeRepo()
	// The snapshot list first, then the index, so every listed snapshot
	// finds its blobs.
	list, err := e.snapshots(r)
	if err != nil {
		return err
	}
	if _, err := r.LoadIndex(e.ctx, false); err != nil {
		return err
	}
	// Explicit IDs are taken among all snapshots (the filters choose only
	// "latest"), as in restic and every other command.
	snaps, err := maint.SelectSnapshots(list, c.Args().Slice(), filterFromFlags(c))
	if err != nil {
		return err
	}
	st, err := maint.ComputeStats(e.ctx, r, snaps, mode)
	if err != nil {
		return err
	}
	if e.json {
		return jsonEncoder(e.stdout).Encode(st)
	}
	if e.quiet {
		return nil
	}
	row := func(name, value string) { e.printf("%24s:  %s\n", name, value) }
	e.printf("Stats in %s mode:\n", mode)
	row("Snapshots processed", fmt.Sprint(st.SnapshotsCount))
	if mode != maint.StatsRawData {
		row("Total File Count", fmt.Sprint(st.TotalFileCount))
	}
	if mode == maint.StatsBlobsPerFile || mode == maint.StatsRawData {
		row("Total Blob Count", fmt.Sprint(st.TotalBlobCount))
	}
	row("Total Size", formatBytes(st.TotalSize))
	if mode == maint.StatsRawData {
		row("Total Uncompressed Size", formatBytes(st.TotalUncompressedSize))
		row("Compression Progress", fmt.Sprintf("%.2f%%", st.CompressionProgress))
		row("Compression Ratio", fmt.Sprintf("%.2fx", st.CompressionRatio))
		row("Compression Space Saving", fmt.Sprintf("%.2f%%", st.CompressionSpaceSaving))
		row("Restore Size", formatBytes(st.RestoreSize))
		row("Deduplication Ratio", fmt.Sprintf("%.2fx", st.DedupRatio))
	}
	return nil
}
