package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"dj/fusefs"
	"dj/repo"
	"dj/repo/tree"
)

// mapStateDir holds a state file per mapped device and the private
// mountpoints that serve them.
const mapStateDir = "/run/dj/map"

// mapServeEnv marks the background process of dj map.
const mapServeEnv = "DJ_MAP_SERVE"

func mapCommand() *cli.Command {
	return &cli.Command{
		Name:      "map",
		Usage:     "attach a disk image of a snapshot read-only as a loop device",
		UsageText: "dj map [options] SNAPSHOT:PATH",
		Description: `Serves the disk image at PATH of the snapshot through a private mount and
attaches it read-only as a loop device, with its partitions as devices of
their own (read by the kernel, or added with partx where the kernel has no
reader of the partition table). It prints the devices and returns; a process
in the background serves them until dj unmap. Mount a partition read-only to
browse the guest's files: Proxmox Backup Server's file restore without a
helper VM. Needs root.

Examples:
   dj map latest:/vm-100.vma/drive-scsi0.raw
   mount -o ro,noload /dev/loop0p1 /mnt/vm     # ext4; xfs: -o ro,norecovery
   umount /mnt/vm && dj unmap /dev/loop0`,
		Flags: append(filterFlags(),
			&cli.StringFlag{Name: "cache-size", Value: "256M", Usage: "memory for decoded data of the serving mount: `SIZE`"},
			&cli.BoolFlag{Name: "json", Usage: "print the devices as JSON"},
		),
		Action: runMap,
	}
}

func unmapCommand() *cli.Command {
	return &cli.Command{
		Name:      "unmap",
		Usage:     "detach a loop device of dj map",
		UsageText: "dj unmap DEVICE...\n   dj unmap --all",
		Description: `Detaches the loop devices dj map attached (and their partitions), and stops
the mounts that served them. A partition still mounted keeps its device busy:
unmount it first.

Examples:
   dj unmap /dev/loop0
   dj unmap --all`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "detach every device of dj map"},
		},
		Action: runUnmap,
	}
}

// mapState is what dj map records of a mapped device.
type mapState struct {
	Device     string   `json:"device"`
	Partitions []string `json:"partitions"`
	Mountpoint string   `json:"mountpoint"`
	File       string   `json:"file"`
	Snapshot   string   `json:"snapshot"`
	Path       string   `json:"path"`
	PID        int      `json:"pid"`
	Error      string   `json:"error,omitempty"`
}

func runMap(c *cli.Context) error {
	e := newEnv(c)
	if c.NArg() != 1 || !strings.Contains(c.Args().Get(0), ":") {
		return usageError("map needs SNAPSHOT:PATH of a disk image")
	}
	if os.Geteuid() != 0 {
		return usageError("dj map needs root (it attaches loop devices)")
	}
	if os.Getenv(mapServeEnv) == "1" {
		return serveMap(e, c)
	}
	pw, err := e.password(e.rf.prompt, false)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(mapStateDir, 0o700); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	log, err := os.CreateTemp(mapStateDir, "serve-*.log")
	if err != nil {
		return err
	}
	defer log.Close()
	pwR, pwW, err := os.Pipe()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), mapServeEnv+"=1", "DJ_PASSWORD_FILE=/dev/fd/3")
	cmd.ExtraFiles = []*os.File{pwR, readyW}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pwR.Close()
	readyW.Close()
	fmt.Fprintln(pwW, pw)
	pwW.Close()

	type answer struct {
		st  mapState
		err error
	}
	got := make(chan answer, 1)
	go func() {
		var st mapState
		err := json.NewDecoder(bufio.NewReader(readyR)).Decode(&st)
		got <- answer{st, err}
	}()
	var a answer
	select {
	case a = <-got:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		a.err = errors.New("timed out")
	case <-e.ctx.Done():
		_ = cmd.Process.Kill()
		return e.ctx.Err()
	}
	if a.err != nil || a.st.Error != "" {
		_ = cmd.Wait()
		msg := a.st.Error
		if msg == "" {
			b, _ := os.ReadFile(log.Name())
			msg = strings.TrimSpace(lastNonEmptyLine(string(b)))
			if msg == "" {
				msg = a.err.Error()
			}
		}
		os.Remove(log.Name())
		return errors.New(strings.TrimPrefix(msg, "dj: "))
	}
	_ = cmd.Process.Release()
	_ = os.Rename(log.Name(), strings.TrimSuffix(statePath(a.st.Device), ".json")+".log")
	if c.Bool("json") {
		return json.NewEncoder(e.stdout).Encode(a.st)
	}
	fmt.Fprintln(e.stdout, a.st.Device)
	for _, p := range a.st.Partitions {
		fmt.Fprintln(e.stdout, p)
	}
	return nil
}

func lastNonEmptyLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// serveMap is the background process of dj map: it mounts the image's
// directory privately, attaches the image, reports the devices on file
// descriptor 4, and serves until the mount goes (dj unmap) or a signal.
func serveMap(e *env, c *cli.Context) error {
	ready := os.NewFile(4, "ready")
	report := func(st mapState) {
		if ready != nil {
			_ = json.NewEncoder(ready).Encode(st)
			ready.Close()
			ready = nil
		}
	}
	st, m, err := startMap(e, c)
	if err != nil {
		report(mapState{Error: err.Error()})
		return err
	}
	report(st)
	done := make(chan struct{})
	go func() { m.Wait(); close(done) }()
	select {
	case <-done:
	case <-e.ctx.Done():
		detach(st)
		for i := 0; i < 40 && m.Unmount() != nil; i++ {
			time.Sleep(250 * time.Millisecond)
		}
		<-done
	}
	os.Remove(statePath(st.Device))
	os.Remove(st.Mountpoint)
	return nil
}

// startMap mounts, attaches and records one image.
func startMap(e *env, c *cli.Context) (mapState, *fusefs.Mounted, error) {
	ref, sub, _ := strings.Cut(c.Args().Get(0), ":")
	sub = path.Clean("/" + sub)
	cacheSize, err := parseSize(c.String("cache-size"))
	if err != nil || cacheSize < 1<<20 {
		return mapState{}, nil, usageError("--cache-size: want a size of at least 1M, got %q", c.String("cache-size"))
	}
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadIndexSnapshots)
	if err != nil {
		return mapState{}, nil, err
	}
	sn, err := findSnapshot(e.ctx, r, ref, filterFromFlags(c))
	if err != nil {
		closeRepo()
		return mapState{}, nil, err
	}
	n, err := r.FindNode(e.ctx, sn.Tree, sub)
	if err != nil {
		closeRepo()
		return mapState{}, nil, err
	}
	if n.Type != tree.File {
		closeRepo()
		return mapState{}, nil, usageError("%s is a %s, not a disk image", sub, n.Type)
	}
	sum := sha256.Sum256([]byte(sn.ID.String() + sub))
	mnt := filepath.Join(mapStateDir, fmt.Sprintf("mnt-%x", sum[:6]))
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		closeRepo()
		return mapState{}, nil, err
	}
	setMemoryLimit(cacheSize + mountRoom) // a mount, with a mount's room
	logf := mountLogf(e.stderr)
	opts := fusefs.Options{CacheSize: cacheSize, FsName: "dj-map:" + r.Config().ID[:10], Logf: logf, Remote: e.remote(),
		Root: &fusefs.SubRoot{Snapshot: sn, Path: path.Dir(sub)}}
	// The mount outlives this function: its repository stays open until
	// the process ends.
	m, err := fusefs.Mount(context.WithoutCancel(e.ctx), mnt, mountRepo{r, logf}, opts)
	if err != nil {
		closeRepo()
		return mapState{}, nil, err
	}
	st := mapState{Mountpoint: mnt, File: filepath.Join(mnt, path.Base(sub)), Snapshot: sn.ID.String(), Path: sub, PID: os.Getpid()}
	out, err := exec.Command("losetup", "--read-only", "--partscan", "--find", "--show", st.File).CombinedOutput()
	if err != nil {
		_ = m.Unmount()
		return mapState{}, nil, fmt.Errorf("losetup: %v: %s", err, strings.TrimSpace(string(out)))
	}
	st.Device = strings.TrimSpace(string(out))
	st.Partitions = partitions(st.Device)
	if len(st.Partitions) == 0 {
		// No partition table reader in this kernel (or no table): partx
		// reads it in user space and adds the partitions.
		_ = exec.Command("partx", "--add", st.Device).Run()
		st.Partitions = partitions(st.Device)
	}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(statePath(st.Device), b, 0o600); err != nil {
		detach(st)
		_ = m.Unmount()
		return mapState{}, nil, err
	}
	return st, m, nil
}

// partitions lists the partition devices of a loop device.
func partitions(dev string) []string {
	list, _ := filepath.Glob(dev + "p[0-9]*")
	sort.Slice(list, func(i, j int) bool {
		if len(list[i]) != len(list[j]) {
			return len(list[i]) < len(list[j])
		}
		return list[i] < list[j]
	})
	return list
}

func statePath(dev string) string {
	return filepath.Join(mapStateDir, filepath.Base(dev)+".json")
}

// detach removes a device's partitions and the device.
func detach(st mapState) error {
	if len(st.Partitions) > 0 {
		_ = exec.Command("partx", "--delete", st.Device).Run()
	}
	if out, err := exec.Command("losetup", "--detach", st.Device).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup --detach %s: %v: %s", st.Device, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func runUnmap(c *cli.Context) error {
	e := newEnv(c)
	devs := c.Args().Slice()
	if c.Bool("all") {
		list, _ := filepath.Glob(filepath.Join(mapStateDir, "loop*.json"))
		for _, p := range list {
			devs = append(devs, "/dev/"+strings.TrimSuffix(filepath.Base(p), ".json"))
		}
		if len(devs) == 0 {
			return nil
		}
	}
	if len(devs) == 0 {
		return usageError("unmap needs a device of dj map (or --all)")
	}
	var failed error
	for _, dev := range devs {
		if err := unmapOne(dev); err != nil {
			e.warnf("error: %v\n", err)
			failed = err
		}
	}
	return failed
}

func unmapOne(dev string) error {
	b, err := os.ReadFile(statePath(dev))
	if err != nil {
		return fmt.Errorf("%s is not a device of dj map", dev)
	}
	var st mapState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: state file: %w", dev, err)
	}
	for _, p := range st.Partitions {
		if mountedDevice(p) {
			return fmt.Errorf("%s is mounted: unmount it first", p)
		}
	}
	if err := detach(st); err != nil {
		return err
	}
	// The loop device lets go of the image asynchronously: retry while the
	// mount is busy. The serving process ends when its mount goes.
	var out []byte
	for i := 0; i < 40; i++ {
		if out, err = exec.Command("fusermount3", "-u", st.Mountpoint).CombinedOutput(); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("stop the mount of %s: %s", dev, strings.TrimSpace(string(out)))
	}
	os.Remove(statePath(dev))
	os.Remove(strings.TrimSuffix(statePath(dev), ".json") + ".log")
	return nil
}

// mountedDevice reports whether dev is mounted somewhere.
func mountedDevice(dev string) bool {
	b, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == dev {
			return true
		}
	}
	return false
}
