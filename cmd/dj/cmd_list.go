package main

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"dj/backend"
	"dj/repo"
	"dj/repo/index"
	"dj/repo/pack"
)

// listFileTypes maps the types `dj list` takes to the files they list;
// "blobs" lists the index instead.
func listFileTypes() map[string]backend.FileType {
	return map[string]backend.FileType{
		"packs":     backend.PackFile,
		"index":     backend.IndexFile,
		"snapshots": backend.SnapshotFile,
		"keys":      backend.KeyFile,
		"locks":     backend.LockFile,
	}
}

// listTypes are the arguments `dj list` takes, in restic's order.
func listTypes() []string {
	return []string{"blobs", "packs", "index", "snapshots", "keys", "locks"}
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list the IDs of the repository's files or blobs",
		UsageText: "dj list blobs|packs|index|snapshots|keys|locks",
		Description: `Prints the IDs of all files of one type, one per line, as restic's list does.
"blobs" prints every blob of the index as "data ID" or "tree ID". The output is
the same with --json (plain lines, like restic's).

Examples:
   dj list snapshots
   dj list packs | wc -l
   dj list blobs | grep '^tree '`,
		Action: runList,
	}
}

func runList(c *cli.Context) error {
	e := newEnv(c)
	if c.NArg() != 1 {
		return usageError("list needs exactly one type: %s", strings.Join(listTypes(), ", "))
	}
	kind := c.Args().First()
	ft, isFile := listFileTypes()[kind]
	if !isFile && kind != "blobs" {
		return usageError("list: unknown type %q (want one of %s)", kind, strings.Join(listTypes(), ", "))
	}
	r, err := e.openRepo(false)
	if err != nil {
		return err
	}
	defer r.Close()
	// Listing the locks must work while the repository is locked (that is
	// when one wants to see them), so it takes no lock itself.
	if kind != "locks" {
		unlock, err := e.lock(r, repo.LockRead, true)
		if err != nil {
			return err
		}
		defer unlock()
	}
	w := bufio.NewWriter(e.stdout)
	if kind == "blobs" {
		if _, err := r.LoadIndex(e.ctx, false); err != nil {
			return err
		}
		r.Index().Each(func(pb index.PackedBlob) bool {
			if pb.Type == pack.DataBlob || pb.Type == pack.TreeBlob {
				fmt.Fprintf(w, "%s %s\n", pb.Type, pb.ID)
			}
			return true
		})
		return w.Flush()
	}
	ids, err := r.ListFiles(e.ctx, ft)
	if err != nil {
		return err
	}
	for _, id := range ids {
		fmt.Fprintln(w, id)
	}
	return w.Flush()
}
