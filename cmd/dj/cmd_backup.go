package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dj/pve"
	"dj/pve/vma"
	"dj/repo"
	"dj/repo/archiver"
	"dj/repo/chunker"
	"dj/repo/pathmatch"
	"dj/repo/snapshot"
)

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "back up files and directories into a new snapshot",
		UsageText: "dj backup [options] PATH...\n   dj backup [options] --files-from LIST [PATH...]\n   dj backup --stdin --stdin-filename NAME < data\n   dj backup --stdin-from-command [--stdin-filename NAME] -- COMMAND [ARGS...]",
		Description: `Saves the given paths as a new snapshot. Unchanged files (same size, mtime,
ctime and inode as in the parent snapshot) are not read again. Files that cannot
be read are reported; the snapshot is still written and the exit code is 3.

The parents of each path are stored as directories, also where the path runs
through a symlink; the path itself is stored as what it is. Excludes apply to
the given paths too. Access times are stored only with --with-atime, so reading
files does not change a snapshot's trees.

--files-from reads one path or glob pattern per line (# comments and empty
lines are ignored), --files-from-verbatim one path per line as it is,
--files-from-raw NUL-terminated paths (find -print0); "-" reads standard input.
Listed paths that do not exist are reported and skipped (exit code 3).

Output: on a terminal, progress (files and bytes done of the total, rate, ETA,
errors, the files being read); -v lists new and changed files, -vv every file
and directory; --json prints restic's lines (status, verbose_status, error, and
one summary at the end). DJ_PROGRESS_FPS sets how often progress is shown.

Examples:
   dj backup ~/documents ~/photos
   dj backup --exclude '*.tmp' --exclude-caches --tag daily /home
   find /srv -name '*.db' -print0 | dj backup --files-from-raw -
   dj backup --files-from ~/backup.list --exclude-if-present .nobackup
   dj backup --skip-if-unchanged /etc
   pg_dump mydb | dj backup --stdin --stdin-filename mydb.sql
   dj backup --stdin-from-command --stdin-filename vm-100.vma -- vzdump 100 --stdout
   dj backup --chunker-files '*.raw' --chunker-files '*.qcow2' /var/lib/images
   dj backup --read-special /dev/vg0/vm-100-disk-0
   vzdump 101 --stdout | dj backup --stdin --stdin-format tar --stdin-filename ct-101.tar

A Proxmox VE dump (VMA) on standard input is recognised and stored as a
directory NAME.vma of the guest's configuration files and one disk image per
disk (drive-scsi0.raw, ...) in fixed 1 MiB chunks, so that daily dumps of a
guest store only the chunks that changed; dj dump SNAPSHOT /NAME.vma writes the
VMA stream back (for qmrestore). A stream that is not valid VMA is stored as one
file (with a warning under --stdin-format vma). --stdin-format tar stores a tar
stream (vzdump of a container) as a directory NAME of its members, so daily
dumps deduplicate file by file; dj dump SNAPSHOT /NAME writes the tar back.`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "exclude", Aliases: []string{"e"}, Usage: "exclude paths matching `PATTERN` (repeatable)"},
			&cli.StringSliceFlag{Name: "iexclude", Usage: "like --exclude, ignoring case"},
			&cli.StringSliceFlag{Name: "exclude-file", Usage: "read exclude patterns from `FILE`"},
			&cli.StringSliceFlag{Name: "iexclude-file", Usage: "read case-insensitive exclude patterns from `FILE`"},
			&cli.BoolFlag{Name: "exclude-caches", Usage: "leave out the content of directories holding a valid CACHEDIR.TAG (the directory and the tag file are kept)"},
			&cli.StringSliceFlag{Name: "exclude-if-present", Usage: "leave out the content of directories holding a tag file `FILE[:HEADER]` (named FILE, starting with HEADER when given), except the tag file (repeatable)"},
			&cli.StringFlag{Name: "exclude-larger-than", Usage: "exclude files larger than `SIZE` (e.g. 1G)"},
			&cli.BoolFlag{Name: "one-file-system", Aliases: []string{"x"}, Usage: "stay on the file systems of the given paths"},
			&cli.StringSliceFlag{Name: "files-from", Usage: "back up the paths and glob patterns listed in `FILE`, one a line (repeatable; - is standard input)"},
			&cli.StringSliceFlag{Name: "files-from-verbatim", Usage: "back up the paths listed in `FILE`, one a line, taken as they are (repeatable)"},
			&cli.StringSliceFlag{Name: "files-from-raw", Usage: "back up the NUL-terminated paths listed in `FILE` (repeatable)"},
			&cli.StringSliceFlag{Name: "tag", Usage: "add `TAG` to the snapshot (repeatable, or comma-separated)"},
			&cli.StringFlag{Name: "host", EnvVars: []string{"DJ_HOST"}, Usage: "record `HOST` as the hostname"},
			&cli.StringFlag{Name: "time", Usage: "record `TIME` (2006-01-02 15:04:05) as the snapshot time"},
			&cli.StringFlag{Name: "parent", Usage: "use snapshot `ID` as the parent instead of the latest one of this host and paths"},
			&cli.BoolFlag{Name: "force", Usage: "read every file, even unchanged ones"},
			&cli.BoolFlag{Name: "ignore-inode", Usage: "ignore inode number changes when looking for modified files"},
			&cli.BoolFlag{Name: "ignore-ctime", Usage: "ignore ctime changes when looking for modified files"},
			&cli.BoolFlag{Name: "skip-if-unchanged", Usage: "write no snapshot when nothing changed since the parent snapshot"},
			&cli.BoolFlag{Name: "with-atime", Usage: "store the access times of files and directories"},
			&cli.UintFlag{Name: "read-concurrency", EnvVars: []string{"DJ_READ_CONCURRENCY"}, DefaultText: "2 per CPU", Usage: "read `N` files at once (each reader also chunks what it reads)"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "read everything but write nothing"},
			&cli.BoolFlag{Name: "stdin", Usage: "back up standard input as one file"},
			&cli.StringFlag{Name: "stdin-filename", Value: "stdin", Usage: "`NAME` of the file made from standard input or the command's output"},
			&cli.BoolFlag{Name: "stdin-from-command", Usage: "run the command after -- and back up its output; a failing command leaves no snapshot"},
			&cli.BoolFlag{Name: "read-special", Usage: "back up the contents of block devices (disks, partitions, LVM volumes, loop devices) as files in fixed-size chunks, instead of their device nodes"},
			&cli.StringFlag{Name: "stdin-format", Value: "auto", Usage: "`FORMAT` of standard input or the command's output: raw (one file), vma (a Proxmox VE dump: its configs and disk images, deduplicated), tar (a container dump or any tar: a tree of its members), auto (vma when it starts like one, else raw)"},
			&cli.StringSliceFlag{Name: "chunker-files", Usage: "cut files matching `PATTERN` (e.g. '*.raw', '*.img', '*.qcow2') into fixed-size chunks, for disk images (repeatable)"},
			&cli.StringFlag{Name: "chunker", Value: "fixed", Usage: "`CHUNKER` of the files matching --chunker-files: fixed (1 MiB) or fixed:SIZE (e.g. fixed:4MiB)"},
		},
		Action: runBackup,
	}
}

// maxReadConcurrency caps --read-concurrency: each reader holds up to
// about 2 MiB of chunks in flight, and more readers than this never help a
// disk.
const maxReadConcurrency = 64

// buildExclude turns the exclude flags into one predicate.
func buildExclude(c *cli.Context) (func(string, os.FileInfo) bool, error) {
	exclude, err := excludePatterns(c)
	if err != nil {
		return nil, err
	}
	var maxSize int64 = -1
	if s := c.String("exclude-larger-than"); s != "" {
		n, err := parseSize(s)
		if err != nil {
			return nil, usageError("--exclude-larger-than: invalid size %q (want a number with an optional K, M, G or T suffix)", s)
		}
		maxSize = n
	}
	if len(exclude) == 0 && maxSize < 0 {
		return nil, nil
	}
	return func(path string, fi os.FileInfo) bool {
		if exclude.Match(path) {
			return true
		}
		return maxSize >= 0 && fi.Mode().IsRegular() && fi.Size() > maxSize
	}, nil
}

// buildTagFiles turns --exclude-if-present and --exclude-caches into tag
// files.
func buildTagFiles(c *cli.Context) ([]archiver.TagFile, error) {
	var tags []archiver.TagFile
	for _, spec := range c.StringSlice("exclude-if-present") {
		tf, err := archiver.ParseTagFile(spec)
		if err != nil {
			return nil, usageError("--exclude-if-present: %v", err)
		}
		tags = append(tags, tf)
	}
	if c.Bool("exclude-caches") {
		tags = append(tags, archiver.CacheDirTag)
	}
	return tags, nil
}

func readPatternFile(name string) ([]string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read exclude file: %w", err)
	}
	var out []string
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, os.ExpandEnv(line))
	}
	return out, nil
}

// parseSize parses sizes like 100, 10K, 5M, 1G, 2T (binary units).

func splitTags(in []string) []string {
	var out []string
	for _, t := range in {
		for _, p := range strings.Split(t, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func runBackup(c *cli.Context) error {
	e := newEnv(c)
	stdinMode := c.Bool("stdin") || c.Bool("stdin-from-command")
	if stdinMode && c.Bool("stdin") && c.NArg() > 0 {
		return usageError("--stdin takes no paths")
	}
	if c.Bool("stdin-from-command") && c.NArg() == 0 {
		return usageError("--stdin-from-command needs a command after --")
	}
	for _, f := range []string{"files-from", "files-from-verbatim", "files-from-raw"} {
		if stdinMode && c.IsSet(f) {
			return usageError("--%s cannot be used with --stdin or --stdin-from-command", f)
		}
	}
	exclude, err := buildExclude(c)
	if err != nil {
		return err
	}
	tagFiles, err := buildTagFiles(c)
	if err != nil {
		return err
	}
	var targets []string
	missing := 0
	if !stdinMode {
		if targets, missing, err = backupTargets(e, c); err != nil {
			return err
		}
	}
	// One P more than the cores: the blob workers keep the cores busy
	// while a pack's fsync or a file's O_DIRECT read blocks a thread.
	cores := ioThreads(1)
	fileWorkers := int(min(c.Uint("read-concurrency"), maxReadConcurrency))
	if fileWorkers == 0 {
		fileWorkers = 2 * cores
	}
	opts := archiver.Options{
		Exclude: exclude, ExcludeIfPresent: tagFiles, OneFileSystem: c.Bool("one-file-system"), Tags: splitTags(c.StringSlice("tag")),
		Hostname: c.String("host"), DryRun: c.Bool("dry-run"), ProgramVersion: "dj " + version,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		IgnoreInode: c.Bool("ignore-inode"), IgnoreCtime: c.Bool("ignore-ctime"),
		SkipIfUnchanged: c.Bool("skip-if-unchanged"), WithAtime: c.Bool("with-atime"),
		FileWorkers: fileWorkers, BlobWorkers: cores,
		ReadSpecial: c.Bool("read-special"),
	}
	if pats := c.StringSlice("chunker-files"); len(pats) > 0 {
		size, err := chunker.ParseFixed(c.String("chunker"))
		if err != nil {
			return usageError("--chunker: %v", err)
		}
		list, err := pathmatch.CompileList(pats, false)
		if err != nil {
			return usageError("--chunker-files: %v", err)
		}
		opts.FixedChunkSize = size
		opts.FixedChunks = func(path string, _ os.FileInfo) bool { return list.Match(path) }
	} else if c.IsSet("chunker") {
		return usageError("--chunker applies to the files of --chunker-files; name them")
	}
	format := c.String("stdin-format")
	switch format {
	case "auto", "raw", "vma", "tar":
	default:
		return usageError("--stdin-format: want auto, raw, vma or tar, got %q", format)
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
	}
	if u, err := user.Current(); err == nil {
		opts.Username = u.Username
	}
	if t := c.String("time"); t != "" {
		ts, err := time.ParseInLocation("2006-01-02 15:04:05", t, time.Local)
		if err != nil {
			if ts, err = time.Parse(time.RFC3339Nano, t); err != nil {
				return usageError("--time: want 2006-01-02 15:04:05 or RFC 3339, got %q", t)
			}
		}
		opts.Time = ts
	}

	r, closeRepo, err := e.openLocked(repo.LockShared, false, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeRepo()
	// Beyond the index, a backup holds about 100 MiB (the chunks in
	// flight, the packs' temporary files' buffers), and the packs
	// themselves when they are filled in memory (a remote repository);
	// the compressor's C memory, outside the heap, comes off the heap's
	// share (peak RSS of the bench's backup 143 MiB without that, 124
	// with it, the time unchanged).
	setMemoryLimit(128<<20 + r.PackMemory() - r.NativeMemory())

	var paths []string
	if !stdinMode {
		if paths, err = archiver.CleanPaths(targets); err != nil {
			return err
		}
		if !c.Bool("force") {
			opts.Parent, err = findParent(e, r, c.String("parent"), opts.Hostname, paths)
			if err != nil {
				return err
			}
		}
	}

	report := newBackupReport(e)
	report.start(opts.Parent, paths)
	report.setup(&opts)

	var sn *snapshot.Snapshot
	switch {
	case c.Bool("stdin"):
		sn, err = backupStream(e, r, os.Stdin, c.String("stdin-filename"), nil, opts, format)
	case c.Bool("stdin-from-command"):
		sn, err = backupCommandOutput(e, r, c.Args().Slice(), c.String("stdin-filename"), opts, format)
	default:
		sn, err = archiver.Backup(e.ctx, r, paths, opts)
	}
	report.finish()
	if sn == nil {
		return err
	}
	report.summary(sn, opts.DryRun)
	if err == nil && missing > 0 {
		err = fmt.Errorf("%w: %d listed path(s) do not exist", archiver.ErrIncomplete, missing)
	}
	return err
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// backupCommandOutput runs argv and backs up its standard output. A command
// that exits non-zero leaves no snapshot.
func backupCommandOutput(e *env, r *repo.Repository, argv []string, name string, opts archiver.Options, format string) (*snapshot.Snapshot, error) {
	if name == "stdin" {
		name = filepath.Base(argv[0])
	}
	cmd := exec.CommandContext(e.ctx, argv[0], argv[1:]...)
	cmd.Stderr = e.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	finish := func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("command %q failed (%v); no snapshot was written", strings.Join(argv, " "), err)
		}
		return nil
	}
	sn, err := backupStream(e, r, out, name, finish, opts, format)
	if err != nil && cmd.ProcessState == nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	return sn, err
}

// backupStream backs up the stream in as one file named name, or, when it
// is a VMA archive (format vma, or auto and it starts like one), as the
// archive's configs and disk images under NAME.vma. finish is called once
// the stream is read whole (see archiver.BackupReader).
func backupStream(e *env, r *repo.Repository, in io.Reader, name string, finish func() error, opts archiver.Options, format string) (*snapshot.Snapshot, error) {
	switch format {
	case "raw":
		return archiver.BackupReader(e.ctx, r, in, name, finish, opts)
	case "tar":
		return archiver.ImportTar(e.ctx, r, in, name, finish, opts)
	}
	br := bufio.NewReaderSize(in, pve.MaxPeek)
	if pve.Sniff(br) {
		if !strings.HasSuffix(name, ".vma") {
			name += ".vma"
		}
		// The chunks being assembled (up to 128 MiB) come on top of the
		// usual backup's memory.
		setMemoryLimit(320<<20 + r.PackMemory() - r.NativeMemory())
		return pve.BackupVMA(e.ctx, r, br, name, pve.BackupOptions{Archiver: opts, Finish: finish})
	}
	head, _ := br.Peek(8)
	if format == "vma" || vma.Magic(head) {
		e.warnf("warning: %s is not a valid VMA stream; it is stored as one file\n", name)
	}
	// Read on past what was peeked without copying through the buffer.
	buffered, _ := br.Peek(br.Buffered())
	return archiver.BackupReader(e.ctx, r, io.MultiReader(bytes.NewReader(buffered), in), name, finish, opts)
}

// findParent picks the parent snapshot: --parent, or the newest snapshot of
// this host with exactly these paths.
func findParent(e *env, r *repo.Repository, ref, host string, paths []string) (*snapshot.Snapshot, error) {
	list, _, err := r.Snapshots(e.ctx)
	if err != nil {
		return nil, err
	}
	if ref != "" {
		return snapshot.Find(list, ref)
	}
	var best *snapshot.Snapshot
	for _, s := range list {
		if s.Hostname == host && s.HasPaths(paths) && (best == nil || !s.Time.Before(best.Time)) {
			best = s
		}
	}
	return best, nil
}
