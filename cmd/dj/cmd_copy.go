package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
)

// fromRepoFlags are copy's flags for the source repository, named as
// restic names them.
func fromRepoFlags() repoFlags {
	return repoFlags{repo: "from-repo", repoFile: "from-repository-file", passwordFile: "from-password-file",
		passwordCommand: "from-password-command", passwordEnv: "DJ_FROM_PASSWORD",
		noRepo:     "use --from-repo or set DJ_FROM_REPOSITORY",
		noPassword: "use --from-password-file, DJ_FROM_PASSWORD, DJ_FROM_PASSWORD_FILE, --from-password-command",
		prompt:     "enter password for source repository: "}
}

func copyCommand() *cli.Command {
	return &cli.Command{
		Name:      "copy",
		Usage:     "copy snapshots from another repository",
		UsageText: "dj copy --from-repo LOCATION [--host HOST] [--tag TAG] [--path PATH] [SNAPSHOT...]",
		Description: `Copies snapshots from the source repository (--from-repo) into the
repository given with -r. Without SNAPSHOT arguments every snapshot that passes
the --host, --tag and --path filters is copied. Snapshots copied before (the
copy records the source snapshot as its "original") are skipped, so running
copy again copies only what is new.

The two repositories have different keys, so every blob the target lacks is
downloaded, decrypted and encrypted again; files are not chunked again. Data
that an earlier copy brought over is recognised without reading it again. An
interrupted copy keeps what it uploaded: run it again to finish.

The source is opened with a read lock, the target with the lock of a backup.

Examples:
   dj -r /srv/backup copy --from-repo /mnt/old-backup
   DJ_FROM_PASSWORD_FILE=~/.old-pw dj -r rest:http://nas:8000/ copy --from-repo /srv/backup latest
   dj copy --from-repo /srv/backup --host laptop --tag daily`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "from-repo", EnvVars: []string{"DJ_FROM_REPOSITORY"}, Usage: "source repository `LOCATION` to copy snapshots from"},
			&cli.StringFlag{Name: "from-repository-file", EnvVars: []string{"DJ_FROM_REPOSITORY_FILE"}, Usage: "read the source repository location from `FILE`"},
			&cli.StringFlag{Name: "from-password-file", EnvVars: []string{"DJ_FROM_PASSWORD_FILE"}, Usage: "read the source repository password from `FILE`"},
			&cli.StringFlag{Name: "from-password-command", EnvVars: []string{"DJ_FROM_PASSWORD_COMMAND"}, Usage: "run `COMMAND` and use its output as the source repository password (also: DJ_FROM_PASSWORD)"},
		}, filterFlags()...),
		Action: runCopy,
	}
}

func runCopy(c *cli.Context) error {
	e := newEnv(c)
	from := *e
	from.rf = fromRepoFlags()
	// Both locations are needed; say so before asking for any password.
	if _, err := e.location(); err != nil {
		return err
	}
	if _, err := from.location(); err != nil {
		return err
	}
	dst, closeDst, err := e.openLocked(repo.LockShared, false, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeDst()
	src, closeSrc, err := from.openLocked(repo.LockRead, true, loadIndexSnapshots)
	if errors.Is(err, repo.ErrWrongPassword) {
		// Not wrapped: the general hint names the target's password flags.
		return exitCodeErr{code: exitWrongPass, err: fmt.Errorf("source: %v (check the password, or DJ_FROM_PASSWORD / --from-password-file)", err)}
	}
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer closeSrc()

	opts := maint.CopyOptions{Snapshots: c.Args().Slice(), Filter: filterFromFlags(c)}
	bar := newByteProgress(e, "copying")
	opts.Logf = func(format string, args ...any) {
		if bar != nil {
			bar.mu.Lock()
			_ = bar.bar.Clear()
			bar.mu.Unlock()
		}
		e.printf(format, args...)
	}
	if bar != nil {
		opts.Progress = func(p maint.CopyProgress) {
			bar.set(p.Bytes, 0, fmt.Sprintf("snapshot %d/%d, %d blobs, %s added", min(p.SnapshotsDone+1, p.SnapshotsTotal),
				p.SnapshotsTotal, p.Blobs, formatBytes(p.BytesAdded)))
		}
	}
	res, err := maint.Copy(e.ctx, src, dst, opts)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(res)
	}
	if e.verbose {
		e.printf("\n%d snapshots copied, %d already copied; %s added in %d data and %d tree blobs, %s read from the source\n",
			res.Copied, res.Skipped, formatBytes(res.BytesAdded), res.DataBlobsAdded, res.TreeBlobsAdded, formatBytes(res.BytesRead))
	}
	return nil
}
