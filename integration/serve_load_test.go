package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startServeProc starts `dj serve` on a free loopback port with the
// extra flags and returns its URL and process, stopped at the test's end.
func startServeProc(e *env, extra ...string) (string, *os.Process) {
	e.t.Helper()
	addr := freePort(e.t)
	var log bytes.Buffer
	cmd := exec.Command(e.bin, append([]string{"serve", "--path", filepath.Join(e.dir, "served"), "--listen", addr}, extra...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("dj serve did not start:\n%s", log.String())
		}
	}
	return "http://" + addr + "/", cmd.Process
}

// peakRSS is a process's peak resident set (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestServeLoad: 8 dj clients back up at once into 4 repositories through
// one `dj serve`, two clients per repository sharing half their data.
// Every snapshot is complete (a second round stores only new data), check --read-data passes on each
// repository, and the server's peak RSS stays under 200 MiB.
func TestServeLoad(t *testing.T) {
	const (
		repos      = 4
		perRepo    = 2
		sharedSize = 1 << 20 // per repository, in every client's backup
		ownSize    = 1 << 20 // per client
		maxRSS     = 200 << 20
	)
	e := newEnv(t)
	base, proc := startServeProc(e)
	repoURL := func(r int) string { return fmt.Sprintf("rest:%sr%d", base, r) }
	for r := range repos {
		if res := e.runEnv([]string{"DJ_REPOSITORY=" + repoURL(r)}, "init"); res.code != 0 {
			t.Fatalf("init r%d: exit %d\n%s", r, res.code, res.stderr)
		}
	}
	type client struct {
		repo, n int
		src     string
		shared  []byte
		own     []byte
	}
	var clients []*client
	for r := range repos {
		for i := range perRepo {
			c := &client{repo: r, n: i, src: filepath.Join(e.dir, fmt.Sprintf("src-r%d-c%d", r, i))}
			c.shared = randomFile(t, filepath.Join(c.src, "shared"), sharedSize, int64(1000+r))
			c.own = randomFile(t, filepath.Join(c.src, "own"), ownSize, int64(2000+r*perRepo+i))
			writeFile(t, filepath.Join(c.src, "d", "small"), []byte(fmt.Sprintf("client %d of r%d", i, r)))
			clients = append(clients, c)
		}
	}

	// backupAll runs every client's backup at once.
	backupAll := func(round int) {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]string, len(clients))
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, e.bin, "backup", "--host", fmt.Sprintf("c%d", c.n), c.src)
				cmd.Env = append(append(cleanEnv(), e.extraEnv...), "DJ_REPOSITORY="+repoURL(c.repo))
				if out, err := cmd.CombinedOutput(); err != nil {
					errs[i] = fmt.Sprintf("backup %d of client %d into r%d: %v\n%s", round, c.n, c.repo, err, out)
				}
			}()
		}
		wg.Wait()
		for _, msg := range errs {
			if msg != "" {
				t.Error(msg)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("round %d: %d concurrent backups into %d repositories: %v", round, len(clients), repos, time.Since(start).Round(time.Millisecond))
	}
	backupAll(1)
	// Backups running at once cannot deduplicate against each other's
	// blobs in flight (nor can restic's), so the first round may store the
	// shared half once per client. A second round, each client adding a
	// small new file, must store only what is new.
	sizes := make([]int64, repos)
	for r := range repos {
		sizes[r] = dirSize(t, filepath.Join(e.dir, "served", fmt.Sprintf("r%d", r), "data"))
	}
	const newSize = 64 << 10
	for i, c := range clients {
		randomFile(t, filepath.Join(c.src, "d", "new"), newSize, int64(3000+i))
	}
	backupAll(2)
	for r := range repos {
		grown := dirSize(t, filepath.Join(e.dir, "served", fmt.Sprintf("r%d", r), "data")) - sizes[r]
		if limit := int64(perRepo*newSize) + 64<<10; grown > limit {
			t.Errorf("r%d grew by %d bytes of packs in the second round, want at most %d (only the new files)", r, grown, limit)
		}
	}

	rss := peakRSS(t, proc.Pid)
	t.Logf("dj serve peak RSS: %.1f MiB", float64(rss)/(1<<20))
	if rss > maxRSS {
		t.Errorf("dj serve peak RSS %d MiB, want under %d MiB", rss>>20, maxRSS>>20)
	}

	for r := range repos {
		env := []string{"DJ_REPOSITORY=" + repoURL(r)}
		if res := e.runEnv(env, "snapshots", "--json"); res.code != 0 || strings.Count(res.stdout, `"tree"`) != 2*perRepo {
			t.Errorf("r%d snapshots: exit %d, want %d snapshots\n%s%s", r, res.code, 2*perRepo, res.stdout, res.stderr)
		}
		if res := e.runEnv(env, "check", "--read-data"); res.code != 0 || !strings.Contains(res.stdout, "no errors were found") {
			t.Errorf("r%d check --read-data: exit %d\n%s%s", r, res.code, res.stdout, res.stderr)
		}
	}
	for _, c := range clients {
		target := filepath.Join(e.dir, fmt.Sprintf("restored-r%d-c%d", c.repo, c.n))
		if res := e.runEnv([]string{"DJ_REPOSITORY=" + repoURL(c.repo)}, "restore", "latest", "--host", fmt.Sprintf("c%d", c.n), "--target", target); res.code != 0 {
			t.Errorf("restore of client %d from r%d: exit %d\n%s", c.n, c.repo, res.code, res.stderr)
			continue
		}
		for name, want := range map[string][]byte{"shared": c.shared, "own": c.own} {
			if got, err := os.ReadFile(filepath.Join(target, c.src, name)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("client %d of r%d: %s restored with %d bytes (%v), want %d", c.n, c.repo, name, len(got), err, len(want))
			}
		}
	}
}
