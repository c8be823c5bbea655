package integration

// The network battery (issue 12): dj reaches an SFTP, an S3 and a REST
// server through testserver.DelayProxy, which resets connections
// mid-transfer and stalls others (no byte either way for longer than the
// timeouts, which the test mode shortens to 2s with DJ_TEST_TIMEOUT).
// Backup, restore, reads through the mount and prune either succeed with
// correct data (compared with the SHA-256 manifest of the source) or
// fail cleanly, and never hang; afterwards, without faults, check
// --read-data passes and every snapshot restores byte-identical.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"dj/internal/testserver"
)

// netEnvVars shorten the timeouts and retries so that a stall costs
// seconds, not minutes.
var netEnvVars = []string{"DJ_TEST_TIMEOUT=2s", "DJ_TEST_RETRY=attempts=8,delay=100ms"}

// netHang is how long a command may take under faults before it counts
// as hung.
const netHang = 90 * time.Second

// netTarget is a repository on a server, reached directly (env) and
// through the proxy (args and extra environment).
type netTarget struct {
	name  string
	e     *env
	proxy *testserver.DelayProxy
	pre   []string // arguments before the command (-o ... for SFTP)
	extra []string // environment reaching the server through the proxy
}

// runDeadline runs dj through the proxy with the network faults, and
// fails the test if it does not end within netHang.
func (n *netTarget) runDeadline(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), netHang)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.e.bin, append(append([]string{}, n.pre...), args...)...)
	cmd.Env = append(append(append(cleanEnv(), n.e.extraEnv...), netEnvVars...), n.extra...)
	// A hung dj is asked for its goroutines (SIGQUIT) before it is killed:
	// the dump goes to the test's log.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	defer func() {
		if r.code != 0 || time.Since(start) > 3*time.Second {
			t.Logf("%s: dj %s: exit %d after %v: %s", n.name, args[0], r.code, time.Since(start).Round(time.Millisecond), lastLine(r.stderr))
		}
	}()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Logf("dj %s on %s: its goroutines at the deadline:\n%s", strings.Join(args, " "), n.name, r.stderr)
		t.Fatalf("dj %s on %s hung (no end within %v) under network faults:\n%s", strings.Join(args, " "), n.name, netHang, tail(r.stderr, 20))
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run dj: %v", err)
	}
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Fatalf("dj %s panicked:\n%s", strings.Join(args, " "), r.stderr)
	}
	cleanFailure(t, n.name+": "+strings.Join(args, " "), r)
	return r
}

// snapshots lists the snapshots through the proxy with its faults
// disarmed.
func (n *netTarget) snapshots(t *testing.T) []snapJSON {
	t.Helper()
	n.proxy.SetFaults(testserver.NetFaults{})
	r := n.runDeadline(t, "snapshots", "--json")
	if r.code != 0 {
		t.Fatalf("snapshots: exit %d\n%s", r.code, r.stderr)
	}
	var list []snapJSON
	parseJSON(t, "snapshots", r.stdout, &list)
	sort.Slice(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	return list
}

// netTargets starts the three servers, each behind its own proxy, with a
// repository initialised directly.
func netTargets(t *testing.T) []*netTarget {
	var out []*netTarget

	// SFTP: ssh reaches the proxy's port; the host key is the server's.
	s := newSFTPEnv(t)
	s.must("init")
	sp := testserver.StartDelayProxy(t, fmt.Sprintf("127.0.0.1:%d", s.sshd.Port), 0)
	_, port, _ := strings.Cut(sp.Addr, ":")
	out = append(out, &netTarget{name: "sftp", e: s.env, proxy: sp,
		pre: []string{"-o", s.opt + " -p " + port + " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"}})

	// S3 (versitygw).
	e3, srv, loc := s3Env(t)
	p3 := testserver.StartDelayProxy(t, srv.Addr, 0)
	out = append(out, &netTarget{name: "s3", e: e3, proxy: p3,
		extra: []string{"DJ_REPOSITORY=" + strings.Replace(loc, srv.Addr, p3.Addr, 1)}})

	// REST (dj serve).
	er := newEnv(t)
	u := netServe(t, er)
	er.extraEnv = append(er.extraEnv, "DJ_REPOSITORY=rest:"+u)
	er.must("init")
	pu, _ := url.Parse(u)
	pr := testserver.StartDelayProxy(t, pu.Host, 0)
	out = append(out, &netTarget{name: "rest", e: er, proxy: pr,
		extra: []string{"DJ_REPOSITORY=rest:http://" + pr.Addr + "/"}})
	return out
}

// TestBatteryNetwork runs backup, restore, mount reads and prune through
// dropping and stalling connections, batteryRuns(2, 50) times per server.
func TestBatteryNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sshd, an S3 server and dj serve")
	}
	runs := batteryRuns(2, 50)
	mountOK := os.Geteuid() == 0
	if _, err := os.Stat("/dev/fuse"); err != nil {
		mountOK = false
	}
	for _, n := range netTargets(t) {
		t.Run(n.name, func(t *testing.T) {
			t.Parallel()
			netBattery(t, n, runs, mountOK)
		})
	}
}

func netBattery(t *testing.T, n *netTarget, runs int, mountOK bool) {
	src := filepath.Join(n.e.dir, "netsrc")
	g := newTreeGen(t, 21)
	g.addFiles(src, 1<<20)
	want := map[string]manifest{}
	var ok, failed [4]int // backup, restore, mount, prune
	var stats testserver.NetFaultStats
	for run := 1; run <= runs; run++ {
		faults := testserver.NetFaults{DropRate: 0.3, StallRate: 0.2, MaxBytes: 256 << 10, Seed: uint64(run)}
		arm := func() { n.proxy.SetFaults(faults); faults.Seed += 1000 }
		if run > 1 {
			g.mutate(src, 256<<10)
		}
		m := scanTree(t, src)
		arm()
		r := n.runDeadline(t, "backup", src)
		count := func(i int, r result) {
			if r.code == 0 {
				ok[i]++
			} else {
				failed[i]++
			}
		}
		count(0, r)
		var id string // the newest snapshot
		for _, s := range n.snapshots(t) {
			if _, ok := want[s.ID]; !ok {
				want[s.ID] = m // a snapshot written must be whole, even from a failed run
			}
			id = s.ID
		}
		if r.code == 0 && len(want) != run-failed[0] {
			t.Fatalf("backup succeeded, but the repository holds %d snapshots, want %d", len(want), run-failed[0])
		}
		if id != "" {
			target := filepath.Join(n.e.dir, "netrestore")
			arm()
			r = n.runDeadline(t, "restore", id, "--target", target)
			count(1, r)
			if r.code == 0 {
				if d := manifestDiff(want[id], scanTree(t, filepath.Join(target, src))); len(d) > 0 {
					t.Fatalf("restore through network faults succeeded with wrong data:\n  %s", strings.Join(d, "\n  "))
				}
			}
			os.RemoveAll(target)
			if mountOK {
				arm()
				if netMountRead(t, n, id, src, want[id]) {
					ok[2]++
				} else {
					failed[2]++
				}
			}
		}
		arm()
		r = n.runDeadline(t, "prune", "--instant-delete", "--max-unused", "0")
		count(3, r)
	}
	stats = n.proxy.FaultStats()
	// Without faults, through the proxy: everything checks and restores.
	n.proxy.SetFaults(testserver.NetFaults{})
	if r := n.runDeadline(t, "check", "--read-data"); r.code != 0 {
		t.Fatalf("check --read-data after the network faults: exit %d\n%s", r.code, tail(r.stderr, 20))
	}
	for id, m := range want {
		target := filepath.Join(n.e.dir, "netverify")
		if r := n.runDeadline(t, "restore", id, "--target", target); r.code != 0 {
			t.Fatalf("restore %.8s after the network faults: exit %d", id, r.code)
		}
		if d := manifestDiff(m, scanTree(t, filepath.Join(target, src))); len(d) > 0 {
			t.Fatalf("snapshot %.8s does not restore byte-identical:\n  %s", id, strings.Join(d, "\n  "))
		}
		os.RemoveAll(target)
	}
	t.Logf("%s: %d runs, %d drops, %d stalls; ok/failed cleanly: backup %d/%d, restore %d/%d, mount %d/%d, prune %d/%d; %d snapshots verified",
		n.name, runs, stats.Drops, stats.Stalls, ok[0], failed[0], ok[1], failed[1], ok[2], failed[2], ok[3], failed[3], len(want))
	recordReliability(t, "network", []string{"server", "runs", "drops", "stalls", "backup ok/failed cleanly", "restore ok/failed cleanly", "mount reads ok/failed cleanly", "prune ok/failed cleanly", "hangs", "snapshots verified"},
		n.name, fmt.Sprint(runs), fmt.Sprint(stats.Drops), fmt.Sprint(stats.Stalls),
		fmt.Sprintf("%d/%d", ok[0], failed[0]), fmt.Sprintf("%d/%d", ok[1], failed[1]), fmt.Sprintf("%d/%d", ok[2], failed[2]),
		fmt.Sprintf("%d/%d", ok[3], failed[3]), "0", fmt.Sprint(len(want)))
}

// netMountRead mounts through the proxy and reads every file of snapshot
// id: each reads right or fails; a read that hangs fails the test. It
// reports whether all files read.
func netMountRead(t *testing.T, n *netTarget, id, src string, want manifest) bool {
	t.Helper()
	e := *n.e
	e.extraEnv = append(append(append([]string{}, n.e.extraEnv...), netEnvVars...), n.extra...)
	e.t = t
	spec := "DJ_TEST_TIMEOUT=2s"
	m := faultMountArgs(t, &e, spec, n.pre...)
	if m == nil {
		return false
	}
	defer m.stop()
	root := filepath.Join(m.dir, "ids", id[:8]) + src
	done := make(chan bool, 1)
	var reading atomic.Value // the file being read, for the hang's report
	reading.Store("")
	go func() {
		all := true
		for rel, w := range want {
			if !strings.HasPrefix(w, "file ") {
				continue
			}
			reading.Store(rel)
			f, err := os.Open(filepath.Join(root, rel))
			if err != nil {
				all = false
				continue
			}
			h := sha256.New()
			k, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				all = false
				continue
			}
			fields := strings.Fields(w)
			if got := fmt.Sprintf("%d %x", k, h.Sum(nil)); got != fields[2]+" "+fields[3] {
				t.Errorf("mount read %s wrong through network faults", rel)
			}
		}
		done <- all
	}()
	select {
	case all := <-done:
		return all
	case <-time.After(netHang):
		// The mount's goroutines go to its log before it is stopped;
		// its exit (put back for stop) ends the copying into the log.
		m.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case err := <-m.exited:
			m.exited <- err
		case <-time.After(10 * time.Second):
			m.cmd.Process.Kill()
			m.exited <- <-m.exited
		}
		t.Fatalf("reads through the mount on %s hung (reading %s); the mount's log:\n%s", n.name, reading.Load(), m.log.String())
		return false
	}
}

// netServe starts `dj serve` in the test mode with the network battery's
// short stall time-out (a silent upload frees its slot after it), and
// returns its URL.
func netServe(t *testing.T, e *env) string {
	addr := freePort(t)
	var log strings.Builder
	cmd := exec.Command(e.bin, "serve", "--path", filepath.Join(e.dir, "served"), "--listen", addr)
	cmd.Env = append(append(cleanEnv(), "DJ_INSECURE_TEST_KDF=1"), netEnvVars...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/config")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dj serve did not start:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr + "/"
}
