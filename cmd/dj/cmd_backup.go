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

	"dj/maint"
	"dj/repo"
	"dj/repo/archiver"
	"dj/repo/pathmatch"
	"dj/repo/snapshot"
)

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "back up files and directories into a new snapshot",
		UsageText: "dj backup [options] PATH...\n   dj backup --stdin --stdin-filename NAME < data\n   dj backup --stdin-from-command [--stdin-filename NAME] -- COMMAND [ARGS...]",
		Description: `Saves the given paths as a new snapshot. Unchanged files (same size, mtime,
ctime and inode as in the parent snapshot) are not read again. Files that cannot
be read are reported; the snapshot is still written and the exit code is 3.

Examples:
   dj backup ~/documents ~/photos
   dj backup --exclude '*.tmp' --exclude-caches --tag daily /home
   pg_dump mydb | dj backup --stdin --stdin-filename mydb.sql
   dj backup --stdin-from-command --stdin-filename vm.vma -- vzdump 100 --stdout`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "exclude", Aliases: []string{"e"}, Usage: "exclude paths matching `PATTERN` (repeatable)"},
			&cli.StringSliceFlag{Name: "iexclude", Usage: "like --exclude, ignoring case"},
			&cli.StringSliceFlag{Name: "exclude-file", Usage: "read exclude patterns from `FILE`"},
			&cli.StringSliceFlag{Name: "iexclude-file", Usage: "read case-insensitive exclude patterns from `FILE`"},
			&cli.BoolFlag{Name: "exclude-caches", Usage: "exclude directories holding a valid CACHEDIR.TAG"},
			&cli.StringFlag{Name: "exclude-larger-than", Usage: "exclude files larger than `SIZE` (e.g. 1G)"},
			&cli.BoolFlag{Name: "one-file-system", Aliases: []string{"x"}, Usage: "stay on the file systems of the given paths"},
			&cli.StringSliceFlag{Name: "tag", Usage: "add `TAG` to the snapshot (repeatable, or comma-separated)"},
			&cli.StringFlag{Name: "host", EnvVars: []string{"DJ_HOST"}, Usage: "record `HOST` as the hostname"},
			&cli.StringFlag{Name: "time", Usage: "record `TIME` (2006-01-02 15:04:05) as the snapshot time"},
			&cli.StringFlag{Name: "parent", Usage: "use snapshot `ID` as the parent instead of the latest one of this host and paths"},
			&cli.BoolFlag{Name: "force", Usage: "read every file, even unchanged ones"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "read everything but write nothing"},
			&cli.BoolFlag{Name: "stdin", Usage: "back up standard input as one file"},
			&cli.StringFlag{Name: "stdin-filename", Value: "stdin", Usage: "`NAME` of the file made from standard input or the command's output"},
			&cli.BoolFlag{Name: "stdin-from-command", Usage: "run the command after -- and back up its output; a failing command leaves no snapshot"},
		},
		Action: runBackup,
	}
}

const cachedirSignature = "Signature: 8a477f597d28d172789f06886806bc55"

// buildExclude turns the exclude flags into one predicate.
func buildExclude(c *cli.Context) (func(string, os.FileInfo) bool, error) {
	patterns := c.StringSlice("exclude")
	ipatterns := c.StringSlice("iexclude")
	for _, f := range c.StringSlice("exclude-file") {
		lines, err := readPatternFile(f)
		if err != nil {
			return nil, err
		}
		patterns = append(patterns, lines...)
	}
	for _, f := range c.StringSlice("iexclude-file") {
		lines, err := readPatternFile(f)
		if err != nil {
			return nil, err
		}
		ipatterns = append(ipatterns, lines...)
	}
	ex, err := pathmatch.CompileList(patterns, false)
	if err != nil {
		return nil, usageError("%v", err)
	}
	iex, err := pathmatch.CompileList(ipatterns, true)
	if err != nil {
		return nil, usageError("%v", err)
	}
	var maxSize int64 = -1
	if s := c.String("exclude-larger-than"); s != "" {
		n, err := parseSize(s)
		if err != nil {
			return nil, usageError("--exclude-larger-than: %v", err)
		}
		maxSize = n
	}
	caches := c.Bool("exclude-caches")
	if len(ex) == 0 && len(iex) == 0 && maxSize < 0 && !caches {
		return nil, nil
	}
	return func(path string, fi os.FileInfo) bool {
		if ex.Match(path) || iex.Match(path) {
			return true
		}
		if maxSize >= 0 && fi.Mode().IsRegular() && fi.Size() > maxSize {
			return true
		}
		if caches && fi.IsDir() {
			if b, err := readHead(filepath.Join(path, "CACHEDIR.TAG"), len(cachedirSignature)); err == nil && string(b) == cachedirSignature {
				return true
			}
		}
		return false
	}, nil
}

func readHead(name string, n int) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	_, err = io.ReadFull(f, b)
	return b, err
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
func parseSize(s string) (int64, error) { return maint.ParseSize(s) }

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
	if !stdinMode && c.NArg() == 0 {
		return usageError("nothing to back up: give at least one path")
	}
	if c.Bool("stdin-from-command") && c.NArg() == 0 {
		return usageError("--stdin-from-command needs a command after --")
	}
	exclude, err := buildExclude(c)
	if err != nil {
		return err
	}
	opts := archiver.Options{
		Exclude: exclude, OneFileSystem: c.Bool("one-file-system"), Tags: splitTags(c.StringSlice("tag")),
		Hostname: c.String("host"), DryRun: c.Bool("dry-run"), ProgramVersion: "dj " + version,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
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

	// A backup holds about 100 MiB: two packs being filled, two uploading,
	// and the chunks in flight.
	setMemoryLimit(128 << 20)
	r, closeRepo, err := e.openLocked(repo.LockShared, false, true)
	if err != nil {
		return err
	}
	defer closeRepo()

	var paths []string
	if !stdinMode {
		for _, p := range c.Args().Slice() {
			ap, err := filepath.Abs(p)
			if err != nil {
				return err
			}
			paths = append(paths, ap)
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
		sn, err = archiver.BackupReader(e.ctx, r, os.Stdin, c.String("stdin-filename"), nil, opts)
	case c.Bool("stdin-from-command"):
		sn, err = backupCommandOutput(e, r, c.Args().Slice(), c.String("stdin-filename"), opts)
	default:
		sn, err = archiver.Backup(e.ctx, r, paths, opts)
	}
	report.finish()
	if sn == nil {
		return err
	}
	report.summary(sn, opts.DryRun)
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
func backupCommandOutput(e *env, r *repo.Repository, argv []string, name string, opts archiver.Options) (*snapshot.Snapshot, error) {
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
	sn, err := archiver.BackupReader(e.ctx, r, out, name, finish, opts)
	if err != nil && cmd.ProcessState == nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	return sn, err
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
