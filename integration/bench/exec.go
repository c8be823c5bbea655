//go:build bench

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tool is one backup program bound to one repository.
type tool struct {
	name  string // "dj" or "restic"
	bin   string
	repo  string
	cache string
	env   []string
	opts  []string // global options before the command (-o KEY=VALUE)
}

// newTool binds the named program to the repository directory repoDir; its
// cache (restic's) lives beside the repository.
func (h *harness) newTool(name, repoDir string) *tool {
	t := &tool{name: name, repo: repoDir, cache: repoDir + ".cache"}
	env := append([]string(nil), h.env...)
	switch name {
	case "dj":
		t.bin = h.cfg.dj
		env = append(env, "DJ_REPOSITORY="+repoDir, "DJ_PASSWORD_FILE="+h.pwFile, "DJ_CACHE_DIR="+t.cache)
	case "restic":
		t.bin = h.cfg.restic
		env = append(env, "RESTIC_REPOSITORY="+repoDir, "RESTIC_PASSWORD_FILE="+h.pwFile, "RESTIC_CACHE_DIR="+t.cache)
	}
	t.env = env
	return t
}

// argv returns the command line of the operation op with its arguments.
// The two programs share most of their syntax; where they differ, this is
// the one place that knows.
func (t *tool) argv(op string, args ...string) []string {
	switch {
	case op == "repack" && t.name == "restic":
		// restic has no repack: the closest is a prune that also
		// rewrites small packs and keeps no unused data.
		argv := append([]string{t.bin}, t.opts...)
		return append(append(argv, "prune", "--max-unused", "0", "--repack-small"), args...)
	}
	argv := append([]string{t.bin}, t.opts...)
	return append(append(argv, op), args...)
}

// removeRepo deletes the repository and its cache.
func (t *tool) removeRepo() error {
	if err := os.RemoveAll(t.repo); err != nil {
		return err
	}
	return os.RemoveAll(t.cache)
}

// cmdResult is what one run of a command cost.
type cmdResult struct {
	Wall   float64 // seconds, measured here
	User   float64 // seconds (GNU time)
	Sys    float64 // seconds (GNU time)
	MaxRSS float64 // MiB (GNU time: maximum resident set size)
	Stdout string  // path of the captured stdout
	Stderr string  // path of the captured stderr
}

// CPU is user+sys seconds.
func (r *cmdResult) CPU() float64 { return r.User + r.Sys }

// run runs argv with env, capturing its output in the log directory, and
// waits for it. With timed, it runs under `/usr/bin/time -v` and the
// result carries CPU time and peak RSS.
func (h *harness) run1(ctx context.Context, label string, env []string, timed bool, argv ...string) (*cmdResult, error) {
	h.mu.Lock()
	h.seq++
	base := filepath.Join(h.logDir, fmt.Sprintf("%04d-%s", h.seq, safeName(label)))
	h.mu.Unlock()
	res := &cmdResult{Stdout: base + ".out", Stderr: base + ".err"}
	stdout, err := os.Create(res.Stdout)
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	stderr, err := os.Create(res.Stderr)
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	full := argv
	timeFile := base + ".time"
	if timed {
		full = append([]string{"/usr/bin/time", "-v", "-o", timeFile}, argv...)
	}
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	if env == nil {
		env = h.env
	}
	cmd.Env = env
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	res.Wall = time.Since(start).Seconds()
	if timed {
		if perr := parseGNUTime(timeFile, res); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return res, fmt.Errorf("`%s` failed after %.1fs: %w%s", shellJoin(argv), res.Wall, err, tailOf(res.Stderr, res.Stdout))
	}
	return res, nil
}

// timed runs an operation of a tool under /usr/bin/time.
func (h *harness) timed(ctx context.Context, t *tool, op string, args ...string) (*cmdResult, error) {
	return h.run1(ctx, t.name+"-"+op, t.env, true, t.argv(op, args...)...)
}

// plain runs an operation of a tool without /usr/bin/time.
func (h *harness) plain(ctx context.Context, t *tool, op string, args ...string) (*cmdResult, error) {
	return h.run1(ctx, t.name+"-"+op, t.env, false, t.argv(op, args...)...)
}

// sh runs a shell pipeline and returns its wall time and its output.
func (h *harness) sh(ctx context.Context, label, script string) (float64, string, error) {
	res, err := h.run1(ctx, label, nil, false, "/bin/sh", "-c", script)
	if res == nil {
		return 0, "", err
	}
	b, _ := os.ReadFile(res.Stdout)
	return res.Wall, strings.TrimSpace(string(b)), err
}

func parseGNUTime(file string, res *cmdResult) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("read /usr/bin/time output: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	found := 0
	for s.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), ": ")
		if !ok {
			continue
		}
		x, perr := strconv.ParseFloat(strings.TrimSpace(v), 64)
		switch k {
		case "User time (seconds)":
			res.User = x
		case "System time (seconds)":
			res.Sys = x
		case "Maximum resident set size (kbytes)":
			res.MaxRSS = x / 1024
		default:
			continue
		}
		if perr == nil {
			found++
		}
	}
	if found != 3 {
		return fmt.Errorf("unexpected /usr/bin/time output in %s", file)
	}
	return s.Err()
}

// tailOf returns the last lines of the first non-empty file, for error
// messages.
func tailOf(files ...string) string {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		s := strings.TrimSpace(string(b))
		lines := strings.Split(s, "\n")
		if len(lines) > 6 {
			lines = lines[len(lines)-6:]
		}
		s = strings.Join(lines, " | ")
		if len(s) > 800 {
			s = "..." + s[len(s)-800:]
		}
		return ": " + s
	}
	return ""
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string {
	s = unsafeChars.ReplaceAllString(s, "_")
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

func shellJoin(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t'\"$|&;<>*?") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}

// dropCaches writes dirty data and empties the page cache, dentries and
// inodes, so the next read comes from the disk.
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// duBytes is `du -sb`: the apparent size of everything under dir,
// directories included.
func duBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += fi.Size()
		return nil
	})
	return total, err
}

// checkTools makes sure every program the sections need is there and
// records their versions.
func (h *harness) checkTools(ctx context.Context) error {
	h.versions = map[string]string{}
	need := []string{"/usr/bin/time", "fusermount3", "fio", "tar", "find", "sha256sum"}
	for _, n := range need {
		if _, err := exec.LookPath(n); err != nil {
			return fmt.Errorf("%s is missing (run `make bench-deps`): %w", n, err)
		}
	}
	if h.cfg.tools["dj"] {
		if _, err := os.Stat(h.cfg.dj); err != nil {
			return fmt.Errorf("dj binary %s: %w (run `make build`, or set DJ_BIN, or BENCH_TOOLS=restic)", h.cfg.dj, err)
		}
		// Work on a private copy: a `make build` elsewhere during the run
		// must not swap the binary under the benchmarks.
		cp := filepath.Join(h.cfg.dir, "bin", "dj-under-test")
		if err := copyFile(h.cfg.dj, cp, 0o755); err != nil {
			return fmt.Errorf("copy the dj binary: %w", err)
		}
		h.versions["dj binary"] = h.cfg.dj
		h.cfg.dj = cp
		h.versions["dj"] = firstLineOf(ctx, h.cfg.dj, "version")
		sum, err := fileSHA256(h.cfg.dj)
		if err != nil {
			return err
		}
		h.versions["dj binary sha256"] = sum[:16]
	}
	if h.cfg.tools["restic"] {
		p, err := exec.LookPath(h.cfg.restic)
		if err != nil {
			return fmt.Errorf("restic is missing (run `make bench-deps`, or set RESTIC_BIN, or BENCH_TOOLS=dj): %w", err)
		}
		h.cfg.restic = p
		h.versions["restic"] = firstLineOf(ctx, p, "version")
	}
	h.versions["fio"] = firstLineOf(ctx, "fio", "--version")
	h.versions["fuse3"] = firstLineOf(ctx, "fusermount3", "-V")
	h.versions["go"] = runtime.Version()
	h.versions["time"] = firstLineOf(ctx, "/usr/bin/time", "--version")
	return nil
}

func firstLineOf(ctx context.Context, argv ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// machineInfo describes the machine for the results.
func machineInfo() map[string]string {
	m := map[string]string{"cpus": strconv.Itoa(runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				f := strings.Fields(l)
				if len(f) >= 2 {
					kb, _ := strconv.ParseFloat(f[1], 64)
					m["memory"] = fmt.Sprintf("%.1f GiB", kb/1024/1024)
				}
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m["kernel"] = utsString(u.Release[:])
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		m["debian"] = strings.TrimSpace(string(b))
	}
	return m
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// errText shortens an error for a table cell.
func errText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return "failed (exit " + strconv.Itoa(ee.ExitCode()) + ")"
	}
	return "failed"
}

// copyFile copies src to dst (through a temporary file and a rename).
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// startServer starts cmd, a server that writes to out and dies with the
// harness; stop ends it (SIGTERM, then SIGKILL after 5 s), exited is
// closed once it has ended (and out is closed).
func startServer(cmd *exec.Cmd, out *os.File) (stop func(), exited <-chan struct{}, err error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	return func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}, done, nil
}
