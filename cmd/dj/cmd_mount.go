package main

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dj/fusefs"
	"dj/repo"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount the repository as a read-only file system",
		UsageText: "dj mount [options] MOUNTPOINT\n   dj mount [options] SNAPSHOT[:PATH] MOUNTPOINT",
		Description: `Shows every snapshot as an ordinary directory tree, for ls, cp, find, diff -r,
rsync and any other program:

   MOUNTPOINT/snapshots/<time>/...   and snapshots/latest
   MOUNTPOINT/ids/<short id>/...
   MOUNTPOINT/hosts/<host>/<time>/...
   MOUNTPOINT/tags/<tag>/<time>/...
   MOUNTPOINT/versions/<path>/<name>@<time>   every distinct version of each file

With SNAPSHOT[:PATH], that snapshot (or one directory of it) is the root. New
snapshots appear without remounting. dj mount runs in the foreground until
Ctrl-C, SIGTERM or 'fusermount3 -u MOUNTPOINT'.

Memory stays within --cache-size plus a margin: the listing of a directory
too large for a quarter of it (a million files take about 165 MB) is kept
in unlinked temporary files in $TMPDIR (or /tmp) while it is cached.

Examples:
   dj mount /mnt/backup
   dj mount latest:/home/ann /mnt/ann`,
		Flags: append(filterFlags(),
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users access the mount (adds default_permissions)"},
			&cli.BoolFlag{Name: "owner-root", Usage: "show every file as owned by root"},
			&cli.BoolFlag{Name: "no-default-permissions", Usage: "with --allow-other, let everyone read everything"},
			&cli.StringFlag{Name: "cache-size", Value: "512M", Usage: "memory for decoded data: `SIZE`"},
			&cli.DurationFlag{Name: "refresh", Value: 30 * time.Second, Usage: "re-read the snapshot list at most every `DURATION`"},
			&cli.StringSliceFlag{Name: "path-template", Usage: "lay out snapshot directories with `TEMPLATE` (%i %I %h %u %t %T)"},
			&cli.StringFlag{Name: "time-template", Usage: "format snapshot times with Go `LAYOUT`"},
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request"},
		),
		Action: runMount,
	}
}

// mountRepo adapts the repository to what the mount needs: the snapshot
// list with unreadable snapshots logged, and index reloads when new
// snapshots appear, so their data loads.
type mountRepo struct {
	*repo.Repository
	warn func(format string, args ...any)
}

func (m mountRepo) Snapshots(ctx context.Context) ([]*snapshot.Snapshot, error) {
	list, problems, err := m.Repository.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range problems {
		m.warn("snapshot %s cannot be read: %v", p.ID.Short(), p.Err)
	}
	return list, nil
}

// ReloadIndex loads the index files written since the mount started; the
// mount calls it when a refresh finds new snapshots.
func (m mountRepo) ReloadIndex(ctx context.Context) error {
	_, err := m.Repository.RefreshIndex(ctx)
	return err
}

// mountRoom is the mount's memory beyond --cache-size: the packs and
// blobs being loaded, the inodes the kernel has looked up, the collector's
// slack. Under it the collector works hard as the heap nears the limit,
// and below about 64 MiB it thrashes: a cold tar of the Go tree through a
// 64M mount took 2.1-2.6 s and 2.0-2.6 CPU-seconds with 64 MiB of room,
// 3.8-4.1 s and 4.4-4.8 CPU-seconds with 48 (2026-12-06, paired; peak RSS
// 148-150 against 132-135 MiB). 48 MiB had looked enough only while an
// uncollected key derivation's 19 MiB counted in the heap the limit is
// sized from (until 1eddba6 collected it). With 64 MiB a long random read
// over the default cache peaks at 599-600 MiB (fio; bound: cache + 100).
const mountRoom = 64 << 20

func runMount(c *cli.Context) error {
	e := newEnv(c)
	var ref, mnt string
	switch c.NArg() {
	case 1:
		mnt = c.Args().Get(0)
	case 2:
		ref, mnt = c.Args().Get(0), c.Args().Get(1)
	default:
		return usageError("mount needs a mountpoint (and optionally SNAPSHOT[:PATH] before it)")
	}
	cacheSize, err := parseSize(c.String("cache-size"))
	if err != nil || cacheSize < 1<<20 {
		return usageError("--cache-size: want a size of at least 1M, got %q", c.String("cache-size"))
	}
	loc, err := e.location()
	if err != nil {
		return err
	}
	if err := refuseInsideRepo(loc, mnt); err != nil {
		return err
	}
	hugeHeap(e.ctx, cacheSize+mountRoom) // the cache, and room for the loads in flight
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeRepo()
	// The cache is the mount's memory, with mountRoom for the loads in
	// flight and the inodes of what the kernel has looked up.
	setMemoryLimit(cacheSize + mountRoom)
	logf := mountLogf(e.stderr)
	opts := fusefs.Options{
		Filter: filterFromFlags(c), PathTemplates: c.StringSlice("path-template"), TimeTemplate: c.String("time-template"),
		CacheSize: cacheSize, Refresh: c.Duration("refresh"), AllowOther: c.Bool("allow-other"), OwnerRoot: c.Bool("owner-root"),
		NoDefaultPermissions: c.Bool("no-default-permissions"), DebugFUSE: c.Bool("debug-fuse"),
		FsName: "dj:" + r.Config().ID[:10], Logf: logf, Remote: e.remote(),
	}
	if ref != "" {
		sref, sub, _ := strings.Cut(ref, ":")
		sn, err := findSnapshot(e.ctx, r, sref, filterFromFlags(c))
		if err != nil {
			return err
		}
		if sub != "" {
			n, err := r.FindNode(e.ctx, sn.Tree, path.Clean("/"+sub))
			if err != nil {
				return err
			}
			if n.Type != tree.Dir {
				return usageError("%s is not a directory", sub)
			}
		}
		opts.Root = &fusefs.SubRoot{Snapshot: sn, Path: sub}
	}
	m, err := fusefs.Mount(e.ctx, mnt, mountRepo{r, logf}, opts)
	if err != nil {
		return err
	}
	if !e.quiet {
		fmt.Fprintf(e.stderr, "dj mount: serving repository %s at %s; unmount with Ctrl-C or `fusermount3 -u %s`\n", r.Config().ID[:10], m.Mountpoint(), m.Mountpoint())
	}
	done := make(chan struct{})
	go func() { m.Wait(); close(done) }()
	select {
	case <-done:
		if !e.quiet {
			fmt.Fprintf(e.stderr, "dj mount: %s was unmounted\n", m.Mountpoint())
		}
		return nil
	case <-e.ctx.Done():
	}
	// A signal: unmount cleanly, retrying while the mount is busy.
	var uerr error
	for i := 0; i < 20; i++ {
		if uerr = m.Unmount(); uerr == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if uerr != nil {
		return fmt.Errorf("unmount %s: %w (close programs using it, then run `fusermount3 -u %s`)", m.Mountpoint(), uerr, m.Mountpoint())
	}
	<-done
	if !e.quiet {
		fmt.Fprintf(e.stderr, "dj mount: unmounted %s cleanly\n", m.Mountpoint())
	}
	return nil
}

// refuseInsideRepo refuses a mountpoint inside a local repository: the
// mount would hide the repository's own files from dj.
func refuseInsideRepo(loc, mnt string) error {
	if strings.Contains(loc, ":") && !strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "local:") {
		return nil
	}
	repoDir, err1 := filepath.Abs(strings.TrimPrefix(loc, "local:"))
	mp, err2 := filepath.Abs(mnt)
	if err1 != nil || err2 != nil {
		return nil
	}
	if rd, err := filepath.EvalSymlinks(repoDir); err == nil {
		repoDir = rd
	}
	if m, err := filepath.EvalSymlinks(mp); err == nil {
		mp = m
	}
	if mp == repoDir || strings.HasPrefix(mp, repoDir+string(os.PathSeparator)) {
		return usageError("refusing to mount at %s: it is inside the repository %s; choose a mountpoint outside it", mnt, repoDir)
	}
	return nil
}
