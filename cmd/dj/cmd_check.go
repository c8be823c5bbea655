package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
	"dj/repo/crypto"
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "verify the repository and name what is damaged",
		UsageText: "dj check [--read-data | --read-data-subset n/m|x%|SIZE] [--pack-hashes] [--json]",
		Description: `Checks the structure of the repository: every snapshot, index and key file
loads and matches its name, every indexed pack exists and its header agrees with
the index, every tree of every snapshot loads, and every blob a snapshot needs is
indexed. --read-data also reads every pack whole and decrypts and verifies every
blob in it, which covers every byte of the pack (its header, whose entries must
tile the pack, and each blob are sealed, and each blob must hash to its id);
--pack-hashes adds restic's comparison of each pack's SHA-256 with its name.
--read-data-subset reads a part of them (n/m: the packs
of bucket n of m, so m runs cover everything; x%: a random share; a size like 5G:
random data packs until at least that much is read).

Each problem names the pack and the blobs concerned and, for lost data, the files
and directories of the snapshots that are affected. Packs that no index names
(a backup is running, or one was interrupted) are warnings. The exit code is 1
when anything is wrong. check runs alongside backups and mounts.

Examples:
   dj check
   dj check --read-data-subset 1/7
   dj check --read-data --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "read-data", Usage: "read every pack and verify every blob"},
			&cli.StringFlag{Name: "read-data-subset", Usage: "read and verify only `SUBSET` of the packs: n/m, x% or a size like 5G"},
			&cli.BoolFlag{Name: "pack-hashes", Usage: "when reading data, also compare each pack's SHA-256 with its name (implies --read-data unless a subset is given)"},
		},
		Action: runCheck,
	}
}

// checkProblemJSON is one problem in --json output.
type checkProblemJSON struct {
	MessageType string `json:"message_type"`
	*maint.Problem
}

// checkSummaryJSON ends --json output.
type checkSummaryJSON struct {
	MessageType string `json:"message_type"`
	*maint.CheckResult
}

func runCheck(c *cli.Context) error {
	e := newEnv(c)
	opts := maint.CheckOptions{ReadData: c.Bool("read-data") || c.Bool("pack-hashes"), PackHashes: c.Bool("pack-hashes")}
	// Packs are read whole, one per worker; keep garbage from doubling that.
	opts.IndexLoaded = func() { setMemoryLimit(maintMemoryLimit) }
	opts.Workers = ioThreads(maint.CheckReaders)
	if s := c.String("read-data-subset"); s != "" {
		sub, err := parseSubset(s)
		if err != nil {
			return usageError("--read-data-subset: %v", err)
		}
		opts.ReadData, opts.Subset = true, sub
	}
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadNothing)
	if err != nil {
		return err
	}
	defer closeRepo()

	if bar := newByteProgress(e, "checking"); bar != nil {
		var lastBytes, lastTotal int64
		opts.Progress = func(p maint.CheckProgress) {
			desc := checkPhaseNames[p.Phase]
			switch p.Phase {
			case "packs", "read-data":
				desc = fmt.Sprintf("%s %d/%d", desc, p.Done, p.Total)
			case "trees":
				desc = fmt.Sprintf("%s %d", desc, p.Done)
			}
			if p.Phase == "read-data" {
				lastBytes, lastTotal = p.Bytes, p.TotalBytes
			}
			bar.set(uint64(lastBytes), uint64(lastTotal), desc)
		}
		defer bar.finish()
	}
	res, err := maint.Check(e.ctx, r, opts)
	if err != nil {
		return err
	}
	if e.json {
		enc := jsonEncoder(e.stdout)
		for _, p := range res.Problems {
			if err := enc.Encode(checkProblemJSON{MessageType: string(p.Severity), Problem: p}); err != nil {
				return err
			}
		}
		if res.BrokenPacks == nil {
			res.BrokenPacks = []crypto.ID{}
		}
		if err := enc.Encode(checkSummaryJSON{MessageType: "summary", CheckResult: res}); err != nil {
			return err
		}
	} else if !e.quiet {
		printCheck(e, res, opts)
	} else {
		for _, p := range res.Problems {
			if p.Severity == maint.SeverityError {
				e.warnf("error: %s\n", p.Message)
			}
		}
	}
	if !res.OK() {
		return exitCodeErr{exitError, fmt.Errorf("check found %d error(s)", res.Errors)}
	}
	return nil
}

var checkPhaseNames = map[string]string{
	"snapshots": "loading snapshots", "index": "loading index", "keys": "checking keys",
	"packs": "checking packs", "read-data": "reading packs", "trees": "checking trees",
	"affected": "finding affected files",
}

func printCheck(e *env, res *maint.CheckResult, opts maint.CheckOptions) {
	out := e.stdout
	for _, p := range res.Problems {
		fmt.Fprintf(out, "%s: %s\n", p.Severity, p.Message)
		if e.verbose {
			for _, b := range p.Blobs {
				fmt.Fprintf(out, "    %s blob %s\n", b.Type, b.ID)
			}
		}
		if p.LostBlobs > 0 {
			if len(p.Affected) == 0 {
				fmt.Fprintf(out, "  %d blob(s) lost; no snapshot uses them\n", p.LostBlobs)
			} else {
				fmt.Fprintf(out, "  %d blob(s) lost\n", p.LostBlobs)
			}
		}
		if len(p.Affected) > 0 {
			fmt.Fprintf(out, "  affected:\n")
			for _, a := range p.Affected {
				ids := make([]string, len(a.Snapshots))
				for i, id := range a.Snapshots {
					ids[i] = id.Short()
				}
				word := "snapshot"
				if len(ids) > 1 {
					word = "snapshots"
				}
				fmt.Fprintf(out, "    %s  (%s %s)\n", a.Path, word, strings.Join(ids, ", "))
			}
		}
	}
	read := ""
	if opts.ReadData {
		read = fmt.Sprintf(", read %d packs (%s)", res.PacksRead, formatBytes(uint64(res.BytesRead)))
	}
	fmt.Fprintf(out, "checked %d snapshots, %d trees, %d index files, %d packs%s\n",
		res.Snapshots, res.Trees, res.IndexFiles, res.Packs, read)
	if res.SuggestRepairIndex {
		fmt.Fprintln(out, "the index does not match the packs: run `dj repair index` (add --read-all-packs to drop damaged blobs)")
	}
	if res.SuggestRepairSnapshots {
		fmt.Fprintln(out, "data is lost: after `dj repair index`, run `dj repair snapshots` to write the snapshots without it (--forget removes the damaged ones)")
	}
	if res.SuggestForgetUnreadable {
		fmt.Fprintln(out, "a snapshot file cannot be read (damaged, or cut short by an upload that never finished): `dj repair snapshots --forget` removes it")
	}
	if res.SuggestPrune && res.OK() {
		fmt.Fprintln(out, "unreferenced packs and superseded index files are removed by `dj prune`")
	}
	switch {
	case res.Errors == 0 && res.Warnings == 0:
		fmt.Fprintln(out, "no errors were found")
	case res.Errors == 0:
		fmt.Fprintf(out, "no errors were found, %d warning(s)\n", res.Warnings)
	default:
		fmt.Fprintf(out, "%d error(s), %d warning(s)\n", res.Errors, res.Warnings)
	}
}
