//go:build bench

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// mainRepo returns a repository of the tool holding one backup of the
// corpus, reused from an earlier run when it was made by the same binary.
func (h *harness) mainRepo(ctx context.Context, name string) (*tool, error) {
	dir := filepath.Join(h.cfg.dir, "repos", name+map[bool]string{true: "-quick"}[h.cfg.quick])
	t := h.newTool(name, dir)
	stamp := h.stamp(name) + " corpus " + h.corpus.BigSHA256
	if h.stampOK(t, stamp) {
		return t, nil
	}
	h.logf("mount: building the %s repository of the corpus in %s", name, dir)
	if err := t.removeRepo(); err != nil {
		return nil, err
	}
	os.MkdirAll(filepath.Dir(dir), 0o755)
	if _, err := h.plain(ctx, t, "init"); err != nil {
		return nil, err
	}
	if _, err := h.plain(ctx, t, "backup", h.corpus.Root); err != nil {
		return nil, err
	}
	return t, h.writeStamp(t, stamp)
}

// stamp identifies the program that wrote a repository, so that a reused
// repository is one the current binary wrote (BENCH_REUSE_REPOS=1 reuses
// dj repositories of other builds too).
func (h *harness) stamp(name string) string {
	if name == "dj" {
		if truthy(os.Getenv("BENCH_REUSE_REPOS")) {
			return "dj (any build)"
		}
		return "dj " + h.versions["dj binary sha256"]
	}
	return h.versions[name]
}

func (h *harness) stampOK(t *tool, want string) bool {
	b, err := os.ReadFile(t.repo + ".stamp")
	if err != nil {
		return false
	}
	got := strings.TrimSpace(string(b))
	if got == want {
		return true
	}
	return want == "dj (any build)" && strings.HasPrefix(got, "dj ")
}

func (h *harness) writeStamp(t *tool, stamp string) error {
	return os.WriteFile(t.repo+".stamp", []byte(stamp+"\n"), 0o644)
}

// mountSection measures the FUSE mounts (issue 3).
func (h *harness) mountSection(ctx context.Context) *report {
	c := h.corpus
	const (
		colSource = "source (no FUSE)"
		colStock  = "loopback (stock, passthrough)"
		colNoPT   = "loopback (no passthrough)"
		colDJ64   = "dj 64M"
	)
	var cols []mountCol
	cols = append(cols, mountCol{name: colSource, data: func(string) string { return c.Root }})
	binDir := filepath.Join(h.cfg.dir, "bin")
	if p := filepath.Join(binDir, "loopback"); fileExists(p) {
		cols = append(cols, mountCol{name: colStock,
			argv: func(mnt string) []string { return []string{p, "-q", mnt, c.Root} },
			data: func(mnt string) string { return mnt }})
	} else {
		h.problem("mount: %s is missing (run.sh installs go-fuse's example/loopback there); no stock loopback column", p)
	}
	if p := filepath.Join(binDir, "loopback-nopt"); fileExists(p) {
		cols = append(cols, mountCol{name: colNoPT,
			argv: func(mnt string) []string { return []string{p, mnt, c.Root} },
			data: func(mnt string) string { return mnt }})
	}
	snapData := func(mnt string) string { return filepath.Join(mnt, "snapshots", "latest", c.Root) }
	for _, n := range h.toolNames() {
		t, err := h.mainRepo(ctx, n)
		if err != nil {
			h.problem("mount: building the %s repository: %v", n, err)
			continue
		}
		cols = append(cols, mountCol{name: n, env: t.env, data: snapData,
			argv: func(mnt string) []string { return t.argv("mount", mnt) }})
		if n == "dj" {
			cols = append(cols, mountCol{name: colDJ64, env: t.env, data: snapData,
				argv: func(mnt string) []string { return t.argv("mount", "--cache-size", "64M", mnt) }})
		}
	}
	var names []string
	for _, col := range cols {
		names = append(names, col.name)
	}
	r := h.newReport("mount", names...)
	r.Corpus = c.describe()
	gib := float64(c.BigBytes) / (1 << 30)
	cacheCap := 512.0 + 100
	r.fig("ready", "mount start → corpus dir listable", "s", false,
		below(0.2, "dj", "< 0.2 s")).withRatio()
	r.fig("find_cold", "`find A | wc -l`, cold, fresh mount", "s", false,
		atLeastTimes(3, "dj", "restic", "≥3× faster")).withRatio()
	r.fig("find_warm", "`find A | wc -l`, warm, same mount", "s", false,
		atLeastTimes(3, "dj", "restic", "≥3× faster")).withRatio()
	r.fig("find_count", fmt.Sprintf("`find A | wc -l` output (source: %d)", c.AEntries), "entries", true)
	r.fig("tar_cold", "`tar cf - A | wc -c`, cold, fresh mount", "s", false,
		atLeastTimes(3, "dj", "restic", "≥3× faster"),
		atLeastTimes(3, colDJ64, "restic", "64M: ≥3× faster")).withRatio()
	r.fig("tar_mbs", fmt.Sprintf("  tar throughput (%s MB of files)", fmtNum(float64(c.ABytes)/1e6)), "MB/s", true).withRatio()
	r.fig("cat_cold", "`cat bigfile`, cold, fresh mount", "MB/s", true,
		atLeastTimes(3, "dj", "restic", "≥3× restic"),
		atLeastTimes(3, colDJ64, "restic", "64M: ≥3× restic"),
		fractionOf(0.85, "dj", colNoPT, "≥85% of loopback (no passthrough)"),
		fractionOf(0.85, "dj", colStock, "≥85% of stock loopback")).withRatio()
	r.fig("cat_warm", "`cat bigfile`, warm, same mount", "MB/s", true,
		atLeastTimes(10, "dj", "restic", "≥10× restic"),
		fractionOfFigure(0.9, "dj", "cat_warm_4k", colSource, "≥90% of a 4 KiB-page page cache")).withRatio()
	r.fig("cat_warm_4k", "  `cat` of a tmpfs copy of bigfile, warm (page cache of 4 KiB pages, like a FUSE file's)", "MB/s", true)
	r.fig("cat_warm_cpu", "  mount-process CPU across the warm cat", "s", false)
	r.fig("cat_cpu", "mount-process CPU per GiB (cold cat)", "s/GiB", false).withRatio()
	r.fig("fio", fmt.Sprintf("fio 4 KiB randread psync %d s, cold, fresh mount", h.cfg.fioSeconds), "IOPS", true,
		atLeastTimes(5, "dj", "restic", "≥5× restic")).withRatio()
	hwmTargets := func() []targetSpec {
		return []targetSpec{
			atLeastTimes(1, colDJ64, "restic", "64M: ≤ restic's"),
			atMost(cacheCap, "dj", fmt.Sprintf("default: ≤ cache+100 = %.0f MiB", cacheCap)),
		}
	}
	r.fig("hwm_find", "mount VmHWM: session find", "MiB", false, hwmTargets()...).withRatio()
	r.fig("hwm_tar", "mount VmHWM: session tar", "MiB", false, hwmTargets()...).withRatio()
	r.fig("hwm_cat", "mount VmHWM: session cat ×2", "MiB", false, hwmTargets()...).withRatio()
	r.fig("hwm_fio", "mount VmHWM: session fio", "MiB", false, hwmTargets()...).withRatio()
	r.fig("sha_ok", "mounted bigfile sha256 = source (rep 1)", "", true)
	r.fig("many_ready", fmt.Sprintf("mount start → `ls MNT/snapshots` shows all %d snapshots (tiny repo)", h.cfg.many), "s", false,
		below(1, "dj", "< 1 s")).withRatio()
	r.fig("many_hwm", fmt.Sprintf("mount VmHWM after listing %d snapshots", h.cfg.many), "MiB", false).withRatio()

	mntRoot := filepath.Join(h.cfg.dir, "mnt")
	fioSize := "1G"
	if c.BigBytes != 1<<30 {
		fioSize = strconv.FormatInt(c.BigBytes, 10)
	}
	broken := map[string]bool{}
	for rep := 1; rep <= h.cfg.runs && ctx.Err() == nil; rep++ {
		for _, col := range cols {
			if broken[col.name] || ctx.Err() != nil {
				continue
			}
			mnt := filepath.Join(mntRoot, safeName(col.name))
			for _, kind := range []string{"find", "tar", "cat", "fio"} {
				if ctx.Err() != nil {
					break
				}
				h.logf("mount: rep %d/%d, %s, session %s", rep, h.cfg.runs, col.name, kind)
				err := h.mountSession(ctx, r, col, mnt, kind, rep, fioSize, gib)
				if err != nil {
					h.problem("mount: %s, session %s: %v", col.name, kind, err)
					r.text("ready", col.name, "failed")
					if strings.Contains(err.Error(), "listable") || strings.Contains(err.Error(), "start `") {
						broken[col.name] = true
						break
					}
				}
			}
		}
	}
	if ctx.Err() == nil {
		h.manySnapshots(ctx, r)
	}
	r.Notes = append(r.Notes,
		"Every session is a fresh server: `sync; echo 3 > /proc/sys/vm/drop_caches`, start the server, poll the corpus directory's A every 10 ms until it lists (\"mount start → corpus dir listable\", 4 samples per rep), drop the caches again, then the cold command; warm figures repeat it on the same mount.",
		"dj and restic mount the corpus's repository (one backup of it) and are read at MNT/snapshots/latest/CORPUS; the loopbacks serve CORPUS itself; \"source (no FUSE)\" runs the same commands on CORPUS: its cold cat reads the disk, its warm cat the page cache of ext4, whose large folios no FUSE file gets on this kernel; the ceiling of a warm read through a mount is the warm cat of a tmpfs copy (4 KiB pages, like a FUSE file's page cache), measured in the source column.",
		"loopback (stock, passthrough) is `go install github.com/hanwen/go-fuse/v2/example/loopback@v2.12.1`, run as root on a kernel with FUSE passthrough: file data bypasses the daemon, so it is a ceiling only for passthrough designs. loopback (no passthrough) is integration/bench/loopback-nopt: the same go-fuse loopback whose files offer no passthrough fd, so every read is served by the daemon's pread (perf-baseline.md's C3, the relevant ceiling for a decrypting daemon).",
		fmt.Sprintf("fio: `fio --name=rr --rw=randread --bs=4k --size=%s --runtime=%d --time_based --ioengine=psync --filename=DIR/B/bigfile --readonly`; fio's default invalidate=1 drops the file's page cache at the start.", fioSize, h.cfg.fioSeconds),
		"Mount-process CPU across the warm cat is the change of utime+stime over that read, in seconds: 0 means the kernel served every byte from its page cache without a request reaching the server.",
		"VmHWM is read from /proc/PID/status of the server just before its unmount; mount CPU is the change of utime+stime in /proc/PID/stat across the cold cat, per GiB read.",
		fmt.Sprintf("The many-snapshots rows use a separate repository of %d snapshots of a tiny directory (one `backup --time` per snapshot, a day apart), %d fresh mounts per rep; the time runs from the server's start until a listing of MNT/snapshots shows them all.", h.cfg.many, 2),
		"\"dj 64M\" is `dj mount --cache-size 64M`; dj's default cache is 512 MiB.",
	)
	return r
}

// mountSession runs one fresh-mount session of the given kind and records
// its figures.
func (h *harness) mountSession(ctx context.Context, r *report, col mountCol, mnt, kind string, rep int, fioSize string, gib float64) error {
	c := h.corpus
	data := col.data(mnt)
	var m *mountProc
	if col.argv != nil {
		if err := dropCaches(); err != nil {
			return err
		}
		var err error
		m, err = h.startMount(col.name+"-"+kind, mnt, col.env, col.argv(mnt))
		if err != nil {
			return err
		}
		defer func() {
			if m != nil {
				m.stop()
			}
		}()
		ready, err := m.waitReady(ctx, filepath.Join(data, "A"), 1, 2*time.Minute)
		if err != nil {
			return err
		}
		r.add("ready", col.name, ready)
	}
	if err := dropCaches(); err != nil {
		return err
	}
	q := shellQuote
	var firstErr error
	note := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	switch kind {
	case "find":
		for _, key := range []string{"find_cold", "find_warm"} {
			wall, out, err := h.sh(ctx, col.name+"-find", "find "+q(filepath.Join(data, "A"))+" | wc -l")
			if err != nil {
				note(err)
				r.text(key, col.name, "failed")
				break
			}
			r.add(key, col.name, wall)
			n, _ := strconv.Atoi(out)
			if key == "find_cold" {
				r.add("find_count", col.name, float64(n))
			}
			if n != c.AEntries {
				note(fmt.Errorf("`find A | wc -l` printed %d, the source has %d entries", n, c.AEntries))
			}
		}
	case "tar":
		wall, out, err := h.sh(ctx, col.name+"-tar", "tar cf - -C "+q(data)+" A | wc -c")
		if err != nil {
			note(err)
			r.text("tar_cold", col.name, "failed")
			break
		}
		n, _ := strconv.ParseInt(out, 10, 64)
		if n < c.ABytes {
			note(fmt.Errorf("`tar cf - A | wc -c` printed %d, less than the %d bytes of the files", n, c.ABytes))
		}
		r.add("tar_cold", col.name, wall)
		r.add("tar_mbs", col.name, float64(c.ABytes)/wall/1e6)
	case "cat":
		big := filepath.Join(data, "B", "bigfile")
		var cpu0 float64
		if m != nil {
			cpu0, _ = m.cpu()
		}
		wall, _, err := h.sh(ctx, col.name+"-cat", "cat "+q(big)+" > /dev/null")
		if err != nil {
			note(err)
			r.text("cat_cold", col.name, "failed")
			break
		}
		r.add("cat_cold", col.name, float64(c.BigBytes)/wall/1e6)
		if m != nil {
			if cpu1, err := m.cpu(); err == nil {
				r.add("cat_cpu", col.name, (cpu1-cpu0)/gib)
			}
		}
		var cpuWarm float64
		if m != nil {
			cpuWarm, _ = m.cpu()
		}
		wall, _, err = h.sh(ctx, col.name+"-cat-warm", "cat "+q(big)+" > /dev/null")
		if err != nil {
			note(err)
			r.text("cat_warm", col.name, "failed")
			break
		}
		r.add("cat_warm", col.name, float64(c.BigBytes)/wall/1e6)
		if m != nil {
			if cpu, err := m.cpu(); err == nil {
				r.add("cat_warm_cpu", col.name, cpu-cpuWarm)
			}
		} else {
			note(h.catTmpfsCopy(ctx, r, col.name, big))
		}
		if rep == 1 {
			_, out, err := h.sh(ctx, col.name+"-sha256", "sha256sum "+q(big))
			sum, _, _ := strings.Cut(out, " ")
			switch {
			case err != nil:
				note(err)
				r.text("sha_ok", col.name, "error")
			case sum == c.BigSHA256:
				r.text("sha_ok", col.name, "yes")
			default:
				r.text("sha_ok", col.name, "NO")
				note(fmt.Errorf("sha256 of the mounted bigfile is %s, the source's is %s", sum, c.BigSHA256))
			}
		}
	case "fio":
		_, out, err := h.sh(ctx, col.name+"-fio", fmt.Sprintf("fio --name=rr --rw=randread --bs=4k --size=%s --runtime=%d --time_based --ioengine=psync --filename=%s --readonly --output-format=json",
			fioSize, h.cfg.fioSeconds, q(filepath.Join(data, "B", "bigfile"))))
		if err != nil {
			note(err)
			r.text("fio", col.name, "failed")
			break
		}
		iops, err := fioIOPS(out)
		if err != nil {
			note(err)
			r.text("fio", col.name, "failed")
			break
		}
		r.add("fio", col.name, iops)
	}
	if m != nil {
		if v, err := m.hwm(); err == nil {
			r.add("hwm_"+kind, col.name, v)
		} else {
			note(fmt.Errorf("reading VmHWM: %v", err))
		}
		err := m.stop()
		m = nil
		note(err)
	}
	return firstErr
}

// catTmpfsCopy records the warm read of a copy of big in /dev/shm: the
// speed of a page cache made of 4 KiB pages. A FUSE file's page cache is
// made of 4 KiB pages on the kernels these benchmarks run on, where ext4's
// holds large folios, so this, not the source's warm cat, is the ceiling of
// a warm read through any FUSE mount (README.md, section mount, has the
// evidence).
func (h *harness) catTmpfsCopy(ctx context.Context, r *report, col, big string) error {
	dir, err := os.MkdirTemp("/dev/shm", "dj-bench-")
	if err != nil {
		r.text("cat_warm_4k", col, "no /dev/shm")
		return nil
	}
	defer os.RemoveAll(dir)
	cp := filepath.Join(dir, "bigfile")
	q := shellQuote
	// The copy's write is its pages' first use, as the cold cat is a
	// mount's; the timed cat is the second, as the mount's warm cat is.
	if _, _, err := h.sh(ctx, col+"-tmpfs-copy", "cp "+q(big)+" "+q(cp)); err != nil {
		r.text("cat_warm_4k", col, "failed")
		return fmt.Errorf("copying bigfile to /dev/shm: %w", err)
	}
	wall, _, err := h.sh(ctx, col+"-tmpfs-cat", "cat "+q(cp)+" > /dev/null")
	if err != nil {
		r.text("cat_warm_4k", col, "failed")
		return err
	}
	r.add("cat_warm_4k", col, float64(h.corpus.BigBytes)/wall/1e6)
	return nil
}

// fioIOPS reads the read IOPS from fio's JSON output.
func fioIOPS(out string) (float64, error) {
	i := strings.IndexByte(out, '{')
	if i < 0 {
		return 0, fmt.Errorf("no JSON in fio's output: %.200s", out)
	}
	var v struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out[i:]), &v); err != nil {
		return 0, fmt.Errorf("fio's JSON: %w", err)
	}
	if len(v.Jobs) == 0 {
		return 0, errors.New("fio reported no job")
	}
	if v.Jobs[0].Error != 0 {
		return 0, fmt.Errorf("fio job error %d", v.Jobs[0].Error)
	}
	return v.Jobs[0].Read.IOPS, nil
}

// manySnapshots measures how long a mount of a repository with many
// snapshots takes to list them all.
func (h *harness) manySnapshots(ctx context.Context, r *report) {
	for _, n := range h.toolNames() {
		t, err := h.manyRepo(ctx, n)
		if err != nil {
			h.problem("mount: building the %d-snapshot %s repository: %v", h.cfg.many, n, err)
			r.text("many_ready", n, "failed")
			continue
		}
		mnt := filepath.Join(h.cfg.dir, "mnt", "many-"+n)
		for rep := 1; rep <= h.cfg.runs && ctx.Err() == nil; rep++ {
			for i := 0; i < 2; i++ {
				h.logf("mount: %d snapshots, %s, rep %d/%d, mount %d/2", h.cfg.many, n, rep, h.cfg.runs, i+1)
				if err := func() error {
					if err := dropCaches(); err != nil {
						return err
					}
					m, err := h.startMount(n+"-many", mnt, t.env, t.argv("mount", mnt))
					if err != nil {
						return err
					}
					defer m.stop()
					ready, err := m.waitReady(ctx, filepath.Join(mnt, "snapshots"), h.cfg.many, 2*time.Minute)
					if err != nil {
						return err
					}
					r.add("many_ready", n, ready)
					if v, err := m.hwm(); err == nil {
						r.add("many_hwm", n, v)
					}
					return m.stop()
				}(); err != nil {
					h.problem("mount: %d snapshots, %s: %v", h.cfg.many, n, err)
					r.text("many_ready", n, "failed")
					return
				}
			}
		}
	}
}

// manyRepo returns a repository of the tool with cfg.many snapshots of a
// tiny directory, building it when missing.
func (h *harness) manyRepo(ctx context.Context, name string) (*tool, error) {
	dir := filepath.Join(h.cfg.dir, "repos", fmt.Sprintf("many%d-%s", h.cfg.many, name))
	t := h.newTool(name, dir)
	stamp := h.stamp(name)
	if h.stampOK(t, stamp) {
		return t, nil
	}
	tiny := filepath.Join(h.cfg.dir, "tiny-"+name)
	if err := os.MkdirAll(tiny, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tiny, "README"), []byte("a tiny directory, backed up many times\n"), 0o644); err != nil {
		return nil, err
	}
	h.logf("mount: building %s with %d snapshots (one `%s backup --time` each; built once and reused)", dir, h.cfg.many, name)
	if err := t.removeRepo(); err != nil {
		return nil, err
	}
	os.MkdirAll(filepath.Dir(dir), 0o755)
	if _, err := h.plain(ctx, t, "init"); err != nil {
		return nil, err
	}
	base := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	start := time.Now()
	for i := 0; i < h.cfg.many; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := os.WriteFile(filepath.Join(tiny, "counter"), []byte(strconv.Itoa(i)+"\n"), 0o644); err != nil {
			return nil, err
		}
		ts := base.AddDate(0, 0, i).Format("2006-01-02 15:04:05")
		if _, err := h.plain(ctx, t, "backup", "--time", ts, tiny); err != nil {
			return nil, err
		}
		if (i+1)%100 == 0 {
			h.logf("mount: %s: %d/%d snapshots (%.2fs each)", name, i+1, h.cfg.many, time.Since(start).Seconds()/float64(i+1))
		}
	}
	return t, h.writeStamp(t, stamp)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
