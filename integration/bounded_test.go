package integration

// Runs of dj against hostile or broken repositories: every run has a time
// limit and an address-space limit (ulimit -v), its peak RSS is measured,
// and a panic, a Go runtime crash or a hang is told apart from an error.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// boundedVMemKiB is the address space a dj run gets: enough for the Go
	// runtime's reservations and honest work, far below what a length
	// taken from hostile input could ask for.
	boundedVMemKiB = 4 << 20
	// boundedMaxRSS is the peak resident memory a dj run may reach.
	boundedMaxRSS = 1 << 30
)

// timeBinary is GNU time, used to measure a run's peak memory when it is
// installed.
const timeBinary = "/usr/bin/time"

// maxRSSMark starts the line GNU time adds to stderr: the peak RSS in KiB.
const maxRSSMark = "DJ-BOUNDED-MAXRSS-KIB "

// boundedResult is one finished bounded run.
type boundedResult struct {
	args     []string
	code     int
	stdout   string // the first 64 KiB
	outBytes int64
	stderr   string
	timedOut bool
	crashed  string // "panic", "fatal error" (a runtime crash such as out of memory), or ""
	maxRSS   int64  // bytes
	took     time.Duration
}

// answer is the run's outcome in a few words for the reliability record.
func (r boundedResult) answer() string {
	switch {
	case r.timedOut:
		return "HANG"
	case r.crashed != "":
		return "CRASH " + r.crashed
	case r.code == 0 && strings.TrimSpace(r.stderr) == "":
		return "ok"
	}
	line := strings.TrimSpace(r.stderr)
	if i := strings.LastIndex(line, "\n"); i >= 0 && r.code != 0 {
		line = line[i+1:]
	} else if i >= 0 {
		line = line[:i]
	}
	if len(line) > 90 {
		line = line[:90] + "…"
	}
	if r.code == 0 {
		return "ok, warns: " + line
	}
	return fmt.Sprintf("exit %d: %s", r.code, line)
}

// limitedBuffer keeps the first n bytes written and the last 4 KiB, and
// counts all.
type limitedBuffer struct {
	buf   bytes.Buffer
	n     int
	total int64
	tail  []byte
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.total += int64(len(p))
	if room := b.n - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	b.tail = append(b.tail, p[max(0, len(p)-4096):]...)
	if len(b.tail) > 4096 {
		b.tail = b.tail[len(b.tail)-4096:]
	}
	return len(p), nil
}

// boundedCmd returns a command that runs argv under the address-space
// limit (bash execs into it). With measure, GNU time (if installed) runs
// argv and reports its peak memory on stderr; without it the pid is argv's.
func boundedCmd(ctx context.Context, measure bool, argv ...string) *exec.Cmd {
	script := fmt.Sprintf(`ulimit -v %d && exec "$@"`, boundedVMemKiB)
	if _, err := os.Stat(timeBinary); err == nil && measure {
		// time forks the command from its own small process, so the peak
		// it reports is the command's alone (wait4's rusage of a child
		// started by Go counts the test process's own peak: it is forked
		// sharing the test's memory).
		script = fmt.Sprintf(`ulimit -v %d && exec %s -f '%s%%M' "$@"`, boundedVMemKiB, timeBinary, maxRSSMark)
	}
	cmd := exec.CommandContext(ctx, "bash", append([]string{"-c", script, "bounded"}, argv...)...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// runBounded runs dj with args (and extra environment) within timeout.
func (e *env) runBounded(timeout time.Duration, extra []string, args ...string) boundedResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := boundedCmd(ctx, true, append([]string{e.bin}, args...)...)
	cmd.Env = append(append(cleanEnv(), e.extraEnv...), extra...)
	out := &limitedBuffer{n: 64 << 10}
	errb := &limitedBuffer{n: 256 << 10}
	cmd.Stdout, cmd.Stderr = out, errb
	start := time.Now()
	err := cmd.Run()
	res := boundedResult{args: args, stdout: out.buf.String(), outBytes: out.total, stderr: errb.buf.String(), took: time.Since(start)}
	if _, err := os.Stat(timeBinary); err != nil && cmd.ProcessState != nil {
		// Without GNU time, wait4's figure: it counts the test process's
		// own peak too (the child is forked sharing its memory), an upper
		// bound.
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			res.maxRSS = ru.Maxrss << 10
		}
	}
	if tail := string(errb.tail); strings.Contains(tail, maxRSSMark) {
		// The peak GNU time measured, from the end of stderr (the first
		// 256 KiB kept may not reach it).
		var kib int64
		fmt.Sscan(tail[strings.LastIndex(tail, maxRSSMark)+len(maxRSSMark):], &kib)
		res.maxRSS = kib << 10
	}
	if i := strings.LastIndex(res.stderr, maxRSSMark); i >= 0 {
		res.stderr = res.stderr[:i]
		if j := strings.LastIndex(strings.TrimSuffix(res.stderr, "\n"), "\n"); strings.Contains(res.stderr[j+1:], "Command exited with non-zero status") {
			res.stderr = res.stderr[:j+1]
		}
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		res.timedOut = true
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		e.t.Fatalf("run dj %v: %v", args, err)
	}
	switch {
	case strings.Contains(res.stderr, "panic:") || strings.Contains(res.stderr, "goroutine "):
		res.crashed = "panic"
	case strings.Contains(res.stderr, "fatal error:"):
		res.crashed = "fatal error"
	}
	return res
}

// assertSane fails the test for a panic, a runtime crash, a hang, peak
// memory beyond boundedMaxRSS, or a failure without a word on stderr.
func assertSane(t *testing.T, what string, r boundedResult) {
	t.Helper()
	assertSaneWithin(t, what, r, boundedMaxRSS)
}

// assertSaneWithin is assertSane with maxRSS for the peak memory.
func assertSaneWithin(t *testing.T, what string, r boundedResult, maxRSS int64) {
	t.Helper()
	switch {
	case r.timedOut:
		t.Errorf("%s: dj %s did not finish in time (hang)", what, strings.Join(r.args, " "))
	case r.crashed != "":
		t.Errorf("%s: dj %s crashed (%s):\n%.3000s", what, strings.Join(r.args, " "), r.crashed, r.stderr)
	case r.maxRSS > maxRSS:
		t.Errorf("%s: dj %s peaked at %d MiB resident (at most %d)", what, strings.Join(r.args, " "), r.maxRSS>>20, maxRSS>>20)
	case r.code != 0 && strings.TrimSpace(r.stderr) == "":
		t.Errorf("%s: dj %s failed with exit %d and no message", what, strings.Join(r.args, " "), r.code)
	}
}

// hashOutside returns a manifest (path -> type, mode and SHA-256) of every
// entry below root except those below skip: what a restore into skip must
// leave as it was.
func hashOutside(t *testing.T, root, skip string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := fmt.Sprintf("%s %v %d", fi.Mode().Type(), fi.Mode().Perm(), fi.Size())
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			v += fmt.Sprintf(" uid %d gid %d", st.Uid, st.Gid)
		}
		m[p] = v
		return nil
	})
	if err != nil {
		t.Fatalf("hash %s: %v", root, err)
	}
	return m
}

// sameOutside lists the differences between two hashOutside manifests.
func sameOutside(before, after map[string]string) []string {
	var d []string
	for p, v := range before {
		if w, ok := after[p]; !ok {
			d = append(d, "removed "+p)
		} else if w != v {
			d = append(d, fmt.Sprintf("changed %s: %s -> %s", p, v, w))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			d = append(d, "created "+p)
		}
	}
	return d
}

// boundedMount is a dj mount run under the address-space limit.
type boundedMount struct {
	*mounted
}

// mountBounded starts dj mount under the address-space limit and waits
// until it serves. If dj exits instead, it returns nil and dj's output.
func (e *env) mountBounded(args ...string) (*boundedMount, string) {
	e.t.Helper()
	requireRoot(e.t)
	dir := filepath.Join(e.dir, "mnt")
	os.MkdirAll(dir, 0o755)
	var log bytes.Buffer
	cmd := boundedCmd(context.Background(), false, append(append([]string{e.bin, "mount"}, args...), dir)...)
	cmd.Env = append(cleanEnv(), e.extraEnv...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	m := &mounted{t: e.t, cmd: cmd, dir: dir, log: &log}
	deadline := time.Now().Add(30 * time.Second)
	for !isMounted(dir) {
		if isZombie(cmd.Process.Pid) {
			cmd.Wait()
			return nil, log.String()
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			e.t.Fatalf("dj mount did not come up:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Cleanup(m.stop)
	return &boundedMount{m}, ""
}

// isZombie reports whether the child pid has exited (and is not reaped).
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// peakRSS is the mount process's peak resident memory so far, in bytes.
func (m *boundedMount) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			var kib int64
			fmt.Sscan(f[1], &kib)
			return kib << 10
		}
	}
	return 0
}

// shellBounded runs a shell command (a reader of the mount) within
// timeout.
func shellBounded(timeout time.Duration, script string) (out string, timedOut bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.WaitDelay = 5 * time.Second
	buf := &limitedBuffer{n: 64 << 10}
	cmd.Stdout, cmd.Stderr = buf, buf
	err = cmd.Run()
	return buf.buf.String(), ctx.Err() != nil, err
}
