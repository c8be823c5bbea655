//go:build bench

package main

// This file runs FUSE servers for the sections: start, wait until ready,
// read their memory and CPU, stop, and clean up mounts left behind.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// mountProc is one running FUSE server.
type mountProc struct {
	h       *harness
	label   string
	mnt     string
	cmd     *exec.Cmd
	start   time.Time
	done    chan struct{}
	waitErr error
	stderr  string
}

// startMount starts argv, which mounts a file system at mnt and serves it
// in the foreground.
func (h *harness) startMount(label, mnt string, env, argv []string) (*mountProc, error) {
	if isMounted(mnt) {
		exec.Command("fusermount3", "-uz", mnt).Run()
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.seq++
	base := filepath.Join(h.logDir, fmt.Sprintf("%04d-mount-%s", h.seq, safeName(label)))
	h.mu.Unlock()
	out, err := os.Create(base + ".out")
	if err != nil {
		return nil, err
	}
	m := &mountProc{h: h, label: label, mnt: mnt, done: make(chan struct{}), stderr: base + ".out"}
	m.cmd = exec.Command(argv[0], argv[1:]...)
	if env == nil {
		env = h.env
	}
	m.cmd.Env = env
	m.cmd.Stdout = out
	m.cmd.Stderr = out
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	m.start = time.Now()
	if err := m.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start `%s`: %w", shellJoin(argv), err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		out.Close()
		close(m.done)
	}()
	h.mu.Lock()
	h.mounts[m] = struct{}{}
	h.mu.Unlock()
	return m, nil
}

// waitReady polls dir every 10 ms until it lists at least min entries and
// returns the seconds since the mount was started.
func (m *mountProc) waitReady(ctx context.Context, dir string, min int, timeout time.Duration) (float64, error) {
	deadline := m.start.Add(timeout)
	for {
		if ents, err := os.ReadDir(dir); err == nil && len(ents) >= min {
			return time.Since(m.start).Seconds(), nil
		}
		select {
		case <-m.done:
			return 0, fmt.Errorf("%s exited before %s was listable (%v)%s", m.label, dir, m.waitErr, tailOf(m.stderr))
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: %s not listable with %d entries after %s%s", m.label, dir, min, timeout, tailOf(m.stderr))
		}
	}
}

// procStatus reads a "kB" field of /proc/PID/status, in MiB.
func (m *mountProc) procStatus(field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, err := strconv.ParseFloat(f[1], 64)
				return kb / 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, m.cmd.Process.Pid)
}

// hwm is the peak resident set size of the server (VmHWM), in MiB.
func (m *mountProc) hwm() (float64, error) { return m.procStatus("VmHWM") }

// cpu is the server's user+system CPU time so far, in seconds.
func (m *mountProc) cpu() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad /proc/PID/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	// Fields after the name: state(0) ... utime(11) stime(12), in clock ticks.
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad utime/stime")
	}
	return (ut + st) / 100, nil
}

// stop unmounts and waits for the server to exit. It reports an error when
// the server did not exit by itself with status 0.
func (m *mountProc) stop() error {
	defer func() {
		m.h.mu.Lock()
		delete(m.h.mounts, m)
		m.h.mu.Unlock()
	}()
	var lastOut []byte
	for i := 0; i < 40 && isMounted(m.mnt); i++ {
		out, err := exec.Command("fusermount3", "-u", m.mnt).CombinedOutput()
		if err == nil {
			break
		}
		lastOut = out
		select {
		case <-m.done:
		case <-time.After(250 * time.Millisecond):
		}
	}
	var problem error
	select {
	case <-m.done:
		if m.waitErr != nil {
			problem = fmt.Errorf("%s exited with %v after the unmount%s", m.label, m.waitErr, tailOf(m.stderr))
		}
	case <-time.After(15 * time.Second):
		problem = fmt.Errorf("%s did not exit within 15s of `fusermount3 -u %s` (%s); killed it", m.label, m.mnt, strings.TrimSpace(string(lastOut)))
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.done
		}
	}
	if isMounted(m.mnt) {
		exec.Command("fusermount3", "-uz", m.mnt).Run()
		if problem == nil {
			problem = fmt.Errorf("%s: %s was still mounted after the server exited", m.label, m.mnt)
		}
	}
	return problem
}

// isMounted reports whether something is mounted at dir.
func isMounted(dir string) bool {
	for _, mp := range mountPoints() {
		if mp == dir {
			return true
		}
	}
	return false
}

func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cleanupMounts stops every server this run started and lazily unmounts
// anything left below the work directory's mount points.
func (h *harness) cleanupMounts() {
	h.mu.Lock()
	var list []*mountProc
	for m := range h.mounts {
		list = append(list, m)
	}
	h.mu.Unlock()
	for _, m := range list {
		if err := m.stop(); err != nil {
			h.logf("cleanup: %v", err)
		}
	}
	prefix := filepath.Join(h.cfg.dir, "mnt") + "/"
	for _, mp := range mountPoints() {
		if strings.HasPrefix(mp, prefix) {
			exec.Command("fusermount3", "-uz", mp).Run()
		}
	}
}

// mountCol is one column of the mount table: a FUSE server, or the source
// tree itself.
type mountCol struct {
	name string
	argv func(mnt string) []string // nil: no FUSE, work on the corpus itself
	env  []string
	data func(mnt string) string // the directory that holds A and B
}
