package main

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/urfave/cli/v2"

	"dj/pve"
	"dj/repo"
	"dj/repo/archiver"
	"dj/repo/restorer"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

func pveCommand() *cli.Command {
	return &cli.Command{
		Name:      "pve",
		Usage:     "back up and restore Proxmox VE guests",
		UsageText: "dj pve backup VMID...\n   dj pve restore SNAPSHOT VMID\n   dj pve hook PHASE [MODE VMID]",
		Description: `For a Proxmox VE node. backup runs vzdump for each guest and stores its dump
deduplicated: a VM's disks as fixed-chunked images, a container's files as a
tree. restore pipes a stored dump back into qmrestore or pct restore. hook is
vzdump's --script: at backup-end it stores the dump vzdump wrote ($TARGET).

Examples:
   dj pve backup 100 101
   dj pve restore latest 100
   vzdump 100 --script /usr/local/bin/dj-vzdump-hook`,
		Subcommands: []*cli.Command{pveBackupCommand(), pveRestoreCommand(), pveHookCommand()},
	}
}

func pveBackupCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "dump guests with vzdump and back the dumps up",
		UsageText: "dj pve backup [options] VMID...",
		Description: `Runs "vzdump VMID --stdout --mode MODE" for each guest and backs its output up
as one snapshot per guest, tagged pve, vmid=VMID and name=NAME (the guest's
name from qm config or pct config). A VM (VMA) is stored as vm-VMID.vma with its
configuration files and disk images, a container (tar) as ct-VMID.tar with its
files. A vzdump that fails leaves no snapshot.

Examples:
   dj pve backup 100
   dj pve backup --mode stop --tag weekly 100 101`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mode", Value: "snapshot", Usage: "vzdump's `MODE`: snapshot, suspend or stop"},
			&cli.StringSliceFlag{Name: "tag", Usage: "add `TAG` to the snapshots (repeatable, or comma-separated)"},
			&cli.StringFlag{Name: "host", EnvVars: []string{"DJ_HOST"}, Usage: "record `HOST` as the hostname"},
		},
		Action: runPVEBackup,
	}
}

func pveRestoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "restore a guest from a stored dump with qmrestore or pct restore",
		UsageText: "dj pve restore [options] SNAPSHOT VMID [-- EXTRA ARGS]",
		Description: `Writes the guest dump stored in SNAPSHOT (vm-*.vma or ct-*.tar at its root;
"latest" is the newest snapshot tagged vmid=VMID) back as vzdump wrote it and pipes it into "qmrestore - VMID" (a VM) or
"pct restore VMID -" (a container); arguments after -- go to them (such as
--storage local-lvm or --force).

Examples:
   dj pve restore latest 100
   dj pve restore 4bd8a1c2 120 -- --storage local-lvm --unique`,
		Action: runPVERestore,
	}
}

func pveHookCommand() *cli.Command {
	return &cli.Command{
		Name:      "hook",
		Usage:     "vzdump's hook script: back up each dump vzdump writes",
		UsageText: "dj pve hook PHASE [MODE VMID]",
		Description: `Called by vzdump (its --script option, or "script:" in /etc/vzdump.conf) with
the phase and, for the backup phases, the mode and VMID. At backup-end it backs
up the file vzdump wrote ($TARGET; .vma, .tar, and their .zst, .gz and .lzo
forms), tagged pve and vmid=VMID, and removes it with --remove (set
DJ_PVE_REMOVE=1 in a wrapper script). Every other phase does nothing. vzdump
passes no flags to its script: put the repository and password in the
environment of a wrapper, as the README shows.

Example wrapper (/usr/local/bin/dj-vzdump-hook, mode 0700):
   #!/bin/sh
   export DJ_REPOSITORY=/srv/dj DJ_PASSWORD_FILE=/root/.dj-password DJ_PVE_REMOVE=1
   exec dj pve hook "$@"`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "remove", EnvVars: []string{"DJ_PVE_REMOVE"}, Usage: "remove vzdump's file once it is backed up"},
		},
		Action: runPVEHook,
	}
}

// guestInfo returns a guest's kind (qemu or lxc) and name from qm config
// or pct config.
func guestInfo(e *env, vmid string) (kind, name string, err error) {
	for _, t := range []struct{ kind, cmd, key string }{{"qemu", "qm", "name:"}, {"lxc", "pct", "hostname:"}} {
		out, err := exec.CommandContext(e.ctx, t.cmd, "config", vmid).Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, t.key); ok {
				return t.kind, strings.TrimSpace(v), nil
			}
		}
		return t.kind, "", nil
	}
	return "", "", fmt.Errorf("guest %s: neither qm config nor pct config knows it", vmid)
}

func validVMID(s string) error {
	if n, err := strconv.Atoi(s); err != nil || n < 100 || n > 999999999 {
		return usageError("%q is not a VMID (a number from 100 up)", s)
	}
	return nil
}

// pveOptions are the archiver options of a guest's snapshot.
func pveOptions(c *cli.Context, vmid, name string) archiver.Options {
	opts := archiver.Options{
		Hostname: c.String("host"), ProgramVersion: "dj " + version,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		Tags: append([]string{"pve", "vmid=" + vmid}, splitTags(c.StringSlice("tag"))...),
	}
	if name != "" {
		opts.Tags = append(opts.Tags, "name="+name)
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
	}
	if u, err := user.Current(); err == nil {
		opts.Username = u.Username
	}
	return opts
}

func runPVEBackup(c *cli.Context) error {
	e := newEnv(c)
	if c.NArg() == 0 {
		return usageError("pve backup needs at least one VMID")
	}
	for _, id := range c.Args().Slice() {
		if err := validVMID(id); err != nil {
			return err
		}
	}
	mode := c.String("mode")
	if mode != "snapshot" && mode != "suspend" && mode != "stop" {
		return usageError("--mode: want snapshot, suspend or stop, got %q", mode)
	}
	r, closeRepo, err := e.openLocked(repo.LockShared, false, loadIndex)
	if err != nil {
		return err
	}
	defer closeRepo()
	setMemoryLimit(320<<20 + r.PackMemory() - r.NativeMemory())
	var failed error
	for _, vmid := range c.Args().Slice() {
		kind, name, err := guestInfo(e, vmid)
		if err != nil {
			e.warnf("error: %v\n", err)
			failed = err
			continue
		}
		file, format := "vm-"+vmid+".vma", "vma"
		if kind == "lxc" {
			file, format = "ct-"+vmid+".tar", "tar"
		}
		opts := pveOptions(c, vmid, name)
		report := newBackupReport(e)
		report.start(nil, nil)
		report.setup(&opts)
		argv := []string{"vzdump", vmid, "--stdout", "--mode", mode}
		sn, err := backupCommandOutput(e, r, argv, file, opts, format)
		report.finish()
		if sn != nil {
			report.summary(sn, false)
		}
		if err != nil && !errors.Is(err, archiver.ErrIncomplete) {
			e.warnf("error: guest %s: %v\n", vmid, err)
			failed = err
		}
	}
	return failed
}

// findDump returns the guest dump at the root of a snapshot.
func findDump(e *env, r *repo.Repository, sn *snapshot.Snapshot) (*tree.Node, error) {
	root, err := r.LoadTree(e.ctx, sn.Tree)
	if err != nil {
		return nil, err
	}
	var found []*tree.Node
	for _, n := range root.Nodes {
		if n.Type == tree.Dir && (strings.HasSuffix(n.Name, ".vma") || strings.HasSuffix(n.Name, ".tar")) {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("snapshot %s holds %d guest dumps at its root (want one vm-*.vma or ct-*.tar)", sn.ID.Short(), len(found))
	}
	return found[0], nil
}

func runPVERestore(c *cli.Context) error {
	e := newEnv(c)
	if c.NArg() < 2 {
		return usageError("pve restore needs a snapshot and a VMID")
	}
	vmid := c.Args().Get(1)
	if err := validVMID(vmid); err != nil {
		return err
	}
	extra := c.Args().Slice()[2:]
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeRepo()
	// "latest" is the newest dump of this guest, never another guest's.
	var f snapshot.Filter
	if ref := c.Args().Get(0); ref == "latest" {
		f.Tags = []string{"vmid=" + vmid}
	}
	sn, err := findSnapshot(e.ctx, r, c.Args().Get(0), f)
	if err != nil {
		return err
	}
	dump, err := findDump(e, r, sn)
	if err != nil {
		return err
	}
	var argv []string
	var write func(w io.Writer) error
	if strings.HasSuffix(dump.Name, ".vma") {
		argv = append([]string{"qmrestore", "-", vmid}, extra...)
		write = func(w io.Writer) error { return pve.WriteVMA(e.ctx, r, dump, w) }
	} else {
		argv = append([]string{"pct", "restore", vmid, "-"}, extra...)
		write = func(w io.Writer) error { return restorer.WriteTar(e.ctx, r, *dump.Subtree, ".", w) }
	}
	cmd := exec.CommandContext(e.ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = e.stderr, e.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	bw := bufio.NewWriterSize(in, 1<<20)
	werr := write(bw)
	if werr == nil {
		werr = bw.Flush()
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s failed: %w", strings.Join(argv, " "), err)
	}
	if werr != nil {
		return fmt.Errorf("write %s: %w", dump.Name, werr)
	}
	if !e.quiet {
		fmt.Fprintf(e.stderr, "restored guest %s from %s of snapshot %s\n", vmid, dump.Name, sn.ID.Short())
	}
	return nil
}

func runPVEHook(c *cli.Context) error {
	e := newEnv(c)
	phase := c.Args().Get(0)
	if phase == "" {
		return usageError("pve hook needs the phase vzdump passes")
	}
	if phase != "backup-end" {
		return nil
	}
	vmid := c.Args().Get(2)
	if err := validVMID(vmid); err != nil {
		return err
	}
	target := os.Getenv("TARGET")
	if target == "" {
		return usageError("pve hook backup-end: vzdump set no $TARGET")
	}
	f, err := os.Open(target)
	if err != nil {
		return err
	}
	defer f.Close()
	in, base, closeIn, err := decompressed(f, path.Base(target))
	if err != nil {
		return err
	}
	defer closeIn()
	format := "raw"
	switch {
	case strings.HasSuffix(base, ".vma"):
		format = "vma"
	case strings.HasSuffix(base, ".tar"):
		format = "tar"
	}
	name := "vm-" + vmid + ".vma"
	if format == "tar" || os.Getenv("VMTYPE") == "lxc" {
		name = "ct-" + vmid + ".tar"
	}
	r, closeRepo, err := e.openLocked(repo.LockShared, false, loadIndex)
	if err != nil {
		return err
	}
	defer closeRepo()
	setMemoryLimit(320<<20 + r.PackMemory() - r.NativeMemory())
	opts := pveOptions(c, vmid, os.Getenv("HOSTNAME"))
	report := newBackupReport(e)
	report.start(nil, nil)
	report.setup(&opts)
	sn, err := backupStream(e, r, in, name, nil, opts, format)
	report.finish()
	if sn != nil {
		report.summary(sn, false)
	}
	if err != nil {
		return err
	}
	if c.Bool("remove") {
		if err := os.Remove(target); err != nil {
			return fmt.Errorf("backed up, but: %w", err)
		}
	}
	return nil
}

// decompressed returns the content of a vzdump file, decompressed by its
// extension (.zst, .gz, .lzo), and its name without that extension.
func decompressed(f *os.File, name string) (io.Reader, string, func(), error) {
	switch {
	case strings.HasSuffix(name, ".zst"):
		d, err := zstd.NewReader(f)
		if err != nil {
			return nil, "", nil, err
		}
		return d, strings.TrimSuffix(name, ".zst"), d.Close, nil
	case strings.HasSuffix(name, ".gz"):
		d, err := gzip.NewReader(f)
		if err != nil {
			return nil, "", nil, err
		}
		return d, strings.TrimSuffix(name, ".gz"), func() { d.Close() }, nil
	case strings.HasSuffix(name, ".lzo"):
		cmd := exec.Command("lzop", "-dc")
		cmd.Stdin = f
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, "", nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, "", nil, fmt.Errorf("lzop: %w", err)
		}
		return out, strings.TrimSuffix(name, ".lzo"), func() { _ = cmd.Wait() }, nil
	}
	return f, name, func() {}, nil
}
