package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"dj/pve"
	"dj/repo"
	"dj/repo/restorer"
	"dj/repo/tree"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "restore a snapshot into a directory",
		UsageText: "dj restore SNAPSHOT[:PATH] --target DIR [options]",
		Description: `Restores the snapshot (or the directory PATH inside it) below DIR with all
metadata; ownership too when run as root. As with restic, the backed-up absolute
paths are recreated under DIR: /home/ann/x comes back as DIR/home/ann/x, while
SNAPSHOT:/home/ann restores the content of /home/ann directly into DIR.
Nothing is ever written outside DIR. Files whose data is damaged are named and
make the exit code 1; every intact file is still restored. A Proxmox VE dump
stored by backup (NAME.vma) comes back as the VMA file, ready for qmrestore,
unless --vma-as-directory.

A target that holds things already: files, symlinks and empty directories in
the way are replaced, directories are merged, and a non-empty directory where
the snapshot has a file is left as it is and named (exit code 1). With --delete
the target is made to match the snapshot: what its restored directories hold
that the snapshot does not is deleted (only paths the include and exclude
patterns select; -v names each), and files replace directories in their way;
--dry-run says what would happen and changes nothing.
--overwrite (restic's) says which files already there are replaced: always (the
default), if-changed (not those of the snapshot's size and modification time,
whose metadata is set), if-newer (only by a file modified later), never.

Examples:
   dj restore latest --target /tmp/restore
   dj restore 1a2b3c4d:/home/ann/docs --target ~/docs-back --include '*.odt'
   dj restore latest --target /tmp/photos --iinclude '*.jpg'
   dj restore latest:/home/ann --target /home/ann --delete`,
		Flags: append(filterFlags(),
			&cli.StringFlag{Name: "target", Aliases: []string{"t"}, Usage: "restore into `DIR`", Required: true},
			&cli.StringSliceFlag{Name: "include", Aliases: []string{"i"}, Usage: "restore only paths matching `PATTERN`"},
			&cli.StringSliceFlag{Name: "exclude", Aliases: []string{"e"}, Usage: "do not restore paths matching `PATTERN`"},
			&cli.StringSliceFlag{Name: "iinclude", Usage: "like --include, ignoring case: restore only paths matching `PATTERN`"},
			&cli.StringSliceFlag{Name: "iexclude", Usage: "like --exclude, ignoring case: do not restore paths matching `PATTERN`"},
			&cli.StringFlag{Name: "overwrite", Value: "always", Usage: "replace files the target has already: `MODE` always, if-changed, if-newer or never"},
			&cli.BoolFlag{Name: "delete", Usage: "delete what the target's restored directories hold that the snapshot does not (as selected by the patterns), and let files replace directories in their way"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "write and delete nothing: say what the restore would do (with -v, name what --delete would delete)"},
			&cli.BoolFlag{Name: "verify", Usage: "read restored files back and check them against the snapshot"},
			&cli.BoolFlag{Name: "sparse", Usage: "write all-zero chunks as holes in every file"},
			&cli.BoolFlag{Name: "vma-as-directory", Usage: "restore a stored Proxmox VE dump (NAME.vma) as the directory of its configs and disk images, not as the VMA file"},
		),
		Action: runRestore,
	}
}

func runRestore(c *cli.Context) error {
	e := newEnv(c)
	if c.NArg() != 1 {
		return usageError("restore needs exactly one snapshot ID (SNAPSHOT or SNAPSHOT:PATH)")
	}
	ref, sub, _ := strings.Cut(c.Args().First(), ":")
	hugeHeap(e.ctx, restoreHeap)
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeRepo()
	sn, err := findSnapshot(e.ctx, r, ref, filterFromFlags(c))
	if err != nil {
		return err
	}
	root := sn.Tree
	if sub != "" {
		n, err := r.FindNode(e.ctx, sn.Tree, path.Clean("/"+sub))
		if err != nil {
			return err
		}
		if n.Type != tree.Dir {
			return usageError("%s is a %s, not a directory; use `dj dump` for single files", sub, n.Type)
		}
		root = *n.Subtree
	}
	overwrite, err := restorer.ParseOverwrite(c.String("overwrite"))
	if err != nil {
		return usageError("%v", err)
	}
	target := c.String("target")
	dryRun := c.Bool("dry-run")
	if !dryRun {
		if err := os.MkdirAll(target, 0o700); err != nil {
			return fmt.Errorf("create target: %w", err)
		}
	}
	var mu sync.Mutex
	opts := restorer.Options{
		Target: target, Include: c.StringSlice("include"), Exclude: c.StringSlice("exclude"),
		InsensitiveInclude: c.StringSlice("iinclude"), InsensitiveExclude: c.StringSlice("iexclude"),
		Sparse: c.Bool("sparse"), Verify: c.Bool("verify"), Owner: os.Geteuid() == 0, Delete: c.Bool("delete"), Overwrite: overwrite, DryRun: dryRun,
		// Across a network each blob costs a round trip: more in flight,
		// and the chunks of queued small files loaded together.
		Workers: remoteWorkers(e), BatchBytes: remoteBatchBytes(e),
		AsFile: func(n *tree.Node) func(context.Context, io.Writer) error {
			if c.Bool("vma-as-directory") || !pve.IsVMADir(n) {
				return nil
			}
			return func(ctx context.Context, w io.Writer) error { return pve.WriteVMA(ctx, r, n, w) }
		},
		Warn: func(p string, err error) {
			mu.Lock()
			defer mu.Unlock()
			e.warnf("warning: %s: %v\n", p, err)
		},
	}
	would := ""
	if dryRun {
		would = "would have "
	}
	if e.verbosity >= 1 && !e.json {
		opts.Deleted = func(p string) {
			mu.Lock()
			defer mu.Unlock()
			e.printf("%sdeleted %s\n", would, p)
		}
	}
	bar := newByteProgress(e, "restoring")
	if bar != nil {
		opts.Progress = func(p restorer.Progress) {
			bar.set(p.BytesDone, p.BytesTotal, fmt.Sprintf("%d/%d files", p.FilesDone, p.FilesTotal))
		}
	}
	if !e.json {
		if dryRun {
			e.printf("dry run, nothing is written: ")
		}
		e.printf("restoring snapshot %s of %v to %s\n", sn.ID.Short(), sn.Paths, target)
	}
	st, err := restorer.Restore(e.ctx, r, root, opts)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	if e.json {
		_ = e.printJSON(map[string]any{"message_type": "summary", "dry_run": dryRun, "files_restored": st.Files, "dirs_restored": st.Dirs,
			"others_restored": st.Others, "bytes_restored": st.Bytes, "files_deleted": st.Deleted,
			"files_skipped": st.Skipped, "bytes_skipped": st.SkippedBytes, "errors": len(st.Errors)})
	} else {
		e.printf("%srestored %d files, %d dirs, %d others, %s\n", would, st.Files, st.Dirs, st.Others, formatBytes(st.Bytes))
		if st.Skipped > 0 {
			e.printf("%sleft %d existing entries as they were (--overwrite %s), %s\n", would, st.Skipped, overwrite, formatBytes(st.SkippedBytes))
		}
		switch {
		case st.Deleted == 1:
			e.printf("%sdeleted 1 entry the snapshot does not have\n", would)
		case st.Deleted > 1:
			e.printf("%sdeleted %d entries the snapshot does not have\n", would, st.Deleted)
		}
	}
	if len(st.Errors) > 0 {
		for _, fe := range st.Errors {
			what := "damaged"
			if errors.Is(fe.Err, restorer.ErrDirInTheWay) || errors.Is(fe.Err, restorer.ErrFileInTheWay) {
				what = "not restored"
			}
			e.warnf("%s: %s: %v\n", what, fe.Path, fe.Err)
		}
		return exitCodeErr{exitError, fmt.Errorf("%d file(s) could not be restored intact", len(st.Errors))}
	}
	return nil
}

// restoreHeap is the heap a restore marks for huge pages (hugeHeap):
// about its peak with a remote repository's 16 workers. Paired runs on
// 2026-12-06 (cold page cache, medians): restore of the remote bench's
// corpus (272 MB) over SFTP across 20 ms 3.39 -> 3.12 s and CPU 2.6 ->
// 1.8 s, peak RSS unchanged (158-182 vs 166-177 MiB; 8 pairs); from S3
// across 20 ms 2.06 -> 1.50 s (3 pairs); of the local bench's corpus
// (1.3 GB) 2.94 -> 2.61 s, peak RSS 97 -> 105 MiB (3 pairs).
const restoreHeap = 192 << 20

// remoteBatchBytes is how many bytes of queued file contents a restore
// worker loads at once from a repository across a network (0, none, for a
// local one, which answers each read at once).
func remoteBatchBytes(e *env) int {
	if e.remote() {
		return 4 << 20
	}
	return 0
}

// remoteWorkers is the restore's writers for a repository across a
// network (each blob read is a request that waits a round trip), or 0 (the
// restorer's default) for a local one.
func remoteWorkers(e *env) int {
	if e.remote() {
		return 8 * runtime.GOMAXPROCS(0)
	}
	return 0
}
