//go:build bench

package main

// The "serve" section: many dj clients backing up at once into several
// repositories through one server, `dj serve` against restic's
// rest-server (issue 11): throughput, p99 request latency (dj serve's
// /metrics) and the server's peak memory.

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"dj/internal/testserver"
)

// serveLoad is the shape of the load: clients spread over repositories,
// each backing up a shared part (the same in every client of a
// repository) and an own part.
type serveLoad struct {
	clients, repos    int
	sharedMiB, ownMiB int
}

func (h *harness) serveLoad() serveLoad {
	if h.cfg.quick {
		return serveLoad{clients: 32, repos: 8, sharedMiB: 2, ownMiB: 2}
	}
	return serveLoad{clients: 32, repos: 8, sharedMiB: 8, ownMiB: 8}
}

// serveServers are the servers measured, as report columns: "dj" is
// `dj serve`, "restic" restic's rest-server; dj is the client of both.
var serveServers = []string{"dj", "restic"}

// serveSection runs the load against each server.
func (h *harness) serveSection(ctx context.Context) *report {
	r := h.newReport("serve", serveServers...)
	load := h.serveLoad()
	r.Corpus = map[string]any{
		"clients":      load.clients,
		"repositories": load.repos,
		"per client":   fmt.Sprintf("%d MiB shared with the other clients of its repository + %d MiB of its own (random bytes)", load.sharedMiB, load.ownMiB),
		"total input":  fmt.Sprintf("%d MiB", load.clients*(load.sharedMiB+load.ownMiB)),
	}
	r.fig("serve_wall", fmt.Sprintf("%d concurrent backups into %d repositories: wall until the last ends", load.clients, load.repos), "s", false).withRatio()
	r.fig("serve_throughput", "throughput: input bytes of all backups / wall", "MB/s", true).withRatio()
	r.fig("serve_client_median", "one client's backup: median", "s", false).withRatio()
	r.fig("serve_client_max", "one client's backup: slowest", "s", false).withRatio()
	r.fig("serve_p99", "p99 request latency (server's /metrics)", "ms", false)
	r.fig("serve_rss", "server peak RSS (VmHWM)", "MiB", false, atMost(200, "dj", "dj serve ≤ 200 MiB")).withRatio()
	r.fig("serve_stored", "stored on the server", "MB", false).withRatio()
	r.fig("serve_ok", "every snapshot present, check passes on every repository", "", true)

	work := filepath.Join(h.cfg.dir, "serve")
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		h.problem("serve: %v", err)
		return r
	}
	defer os.RemoveAll(work)
	srcs, err := h.serveCorpus(load, filepath.Join(work, "src"))
	if err != nil {
		h.problem("serve: corpus: %v", err)
		return r
	}
	tb := &benchTB{h: h, dir: filepath.Join(work, "tmp")}
	defer tb.close()
	for run := 1; run <= h.cfg.runs && ctx.Err() == nil; run++ {
		for _, srv := range serveServers {
			if ctx.Err() != nil {
				break
			}
			h.logf("serve: %s, run %d/%d", serveServerName(srv), run, h.cfg.runs)
			if err := h.serveRun(ctx, r, tb, load, srcs, srv, filepath.Join(work, fmt.Sprintf("%s-%d", srv, run))); err != nil {
				h.problem("serve: %s: %v", serveServerName(srv), err)
			}
		}
	}
	r.Notes = append(r.Notes,
		"Columns: dj = `dj serve --path DIR --prometheus --prometheus-no-auth` (the dj under test), restic = restic's rest-server "+testserver.RestServerVersion+" (`--path DIR --no-auth`); both on 127.0.0.1 without a proxy. The clients are the dj under test in both columns, so the ratio is dj serve's advantage over rest-server.",
		fmt.Sprintf("Each run: a new server, `dj init` of %d repositories one after the other, then %d `dj backup` processes started at once, client i into repository i mod %d, each with its own cache directory (as separate machines). The first backups of a repository run at once, so they cannot deduplicate the shared part against each other: up to every client stores it.", load.repos, load.clients, load.repos),
		"Throughput is the sum of the clients' input bytes divided by the wall time from the start of the first backup to the end of the last. Server RSS is VmHWM from /proc/PID/status after the backups. p99 is computed from dj serve's dj_serve_request_duration_seconds histograms (all repositories and methods, linear within a bucket); rest-server has no latency histogram.",
		"After the backups: `dj snapshots --json` counts the snapshots of each repository and `dj check` checks it (not --read-data).",
	)
	return r
}

func serveServerName(col string) string {
	if col == "dj" {
		return "dj serve"
	}
	return "rest-server"
}

// serveCorpus writes the sources of the clients: dir/cN/shared (a hard
// link to its repository's shared file) and dir/cN/own.
func (h *harness) serveCorpus(load serveLoad, dir string) ([]string, error) {
	var srcs []string
	for r := range load.repos {
		shared := filepath.Join(dir, fmt.Sprintf("shared-r%d", r))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := newGenRand(uint64(100+r)).writeRandomFile(shared, int64(load.sharedMiB)<<20); err != nil {
			return nil, err
		}
	}
	for c := range load.clients {
		src := filepath.Join(dir, fmt.Sprintf("c%02d", c))
		if err := os.MkdirAll(src, 0o755); err != nil {
			return nil, err
		}
		if err := os.Link(filepath.Join(dir, fmt.Sprintf("shared-r%d", c%load.repos)), filepath.Join(src, "shared")); err != nil {
			return nil, err
		}
		if err := newGenRand(uint64(1000+c)).writeRandomFile(filepath.Join(src, "own"), int64(load.ownMiB)<<20); err != nil {
			return nil, err
		}
		srcs = append(srcs, src)
	}
	return srcs, nil
}

// serveRun is one run of the load against one server.
func (h *harness) serveRun(ctx context.Context, r *report, tb *benchTB, load serveLoad, srcs []string, srv, work string) error {
	served := filepath.Join(work, "served")
	if err := os.MkdirAll(served, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(work)
	pid, base, stop, err := h.startLoadServer(tb, srv, served)
	if err != nil {
		r.text("serve_wall", srv, "failed")
		return err
	}
	defer stop()
	client := func(c int) *tool {
		return h.remoteTool("dj", fmt.Sprintf("rest:%sr%d/", base, c%load.repos), filepath.Join(work, "cache", fmt.Sprintf("c%02d", c)), nil)
	}
	for rep := range load.repos {
		if _, err := h.plain(ctx, client(rep), "init"); err != nil {
			r.text("serve_wall", srv, errText(err))
			return err
		}
	}
	dropCaches()
	times := make([]float64, load.clients)
	errs := make([]error, load.clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range load.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := h.plain(ctx, client(c), "backup", "--host", fmt.Sprintf("c%02d", c), srcs[c])
			errs[c] = err
			if res != nil {
				times[c] = res.Wall
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start).Seconds()
	failed := 0
	for c, err := range errs {
		if err != nil {
			failed++
			h.problem("serve: %s: client %d: %v", serveServerName(srv), c, err)
		}
	}
	if failed > 0 {
		r.text("serve_wall", srv, fmt.Sprintf("%d of %d failed", failed, load.clients))
	} else {
		r.add("serve_wall", srv, wall)
		r.add("serve_throughput", srv, float64(load.clients*(load.sharedMiB+load.ownMiB)<<20)/wall/1e6)
		sort.Float64s(times)
		r.add("serve_client_median", srv, times[len(times)/2])
		r.add("serve_client_max", srv, times[len(times)-1])
	}
	h.logf("serve: %s: %d backups in %.1fs", serveServerName(srv), load.clients, wall)
	if rss, err := peakRSSMiB(pid); err != nil {
		h.problem("serve: %s: %v", serveServerName(srv), err)
	} else {
		r.add("serve_rss", srv, rss)
	}
	if srv == "dj" {
		if p99, err := serveP99(base + "metrics"); err != nil {
			h.problem("serve: dj serve: p99 from /metrics: %v", err)
		} else {
			r.add("serve_p99", srv, p99*1000)
		}
	} else {
		r.text("serve_p99", srv, "n/a")
	}
	if n, err := dirBytes(served); err == nil {
		r.add("serve_stored", srv, float64(n)/1e6)
	}

	ok := failed == 0
	perRepo := load.clients / load.repos
	for rep := range load.repos {
		t := client(rep)
		res, err := h.plain(ctx, t, "snapshots", "--json")
		if err != nil {
			ok = false
			h.problem("serve: %s: r%d: %v", serveServerName(srv), rep, err)
			continue
		}
		b, _ := os.ReadFile(res.Stdout)
		if got := strings.Count(string(b), `"tree"`); got != perRepo {
			ok = false
			h.problem("serve: %s: r%d holds %d snapshots, want %d", serveServerName(srv), rep, got, perRepo)
		}
		if _, err := h.plain(ctx, t, "check"); err != nil {
			ok = false
			h.problem("serve: %s: r%d: %v", serveServerName(srv), rep, err)
		}
	}
	r.text("serve_ok", srv, map[bool]string{true: "yes", false: "NO"}[ok])
	return nil
}

// startLoadServer starts the server of column srv on a free port of
// 127.0.0.1 serving dir, and returns its process id, its URL (ending in
// "/") and how to stop it.
func (h *harness) startLoadServer(tb *benchTB, srv, dir string) (int, string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, "", nil, err
	}
	addr := l.Addr().String()
	l.Close()
	var argv []string
	switch srv {
	case "dj":
		argv = []string{h.cfg.dj, "serve", "--path", dir, "--listen", addr, "--prometheus", "--prometheus-no-auth"}
	case "restic":
		var bin string
		if err := tb.try(func() { bin = testserver.RestServerBinary(tb) }); err != nil {
			return 0, "", nil, err
		}
		argv = []string{bin, "--path", dir, "--listen", addr, "--no-auth"}
	}
	h.mu.Lock()
	h.seq++
	logPath := filepath.Join(h.logDir, fmt.Sprintf("%04d-%s-server.out", h.seq, srv))
	h.mu.Unlock()
	out, err := os.Create(logPath)
	if err != nil {
		return 0, "", nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = h.env
	cmd.Stdout, cmd.Stderr = out, out
	stop, exited, err := startServer(cmd, out)
	if err != nil {
		return 0, "", nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return cmd.Process.Pid, "http://" + addr + "/", stop, nil
		}
		select {
		case <-exited:
			return 0, "", nil, fmt.Errorf("`%s` exited%s", shellJoin(argv), tailOf(logPath))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return 0, "", nil, fmt.Errorf("`%s` did not listen within 20s%s", shellJoin(argv), tailOf(logPath))
		}
	}
}

// peakRSSMiB is VmHWM of the process, in MiB.
func peakRSSMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// serveP99 reads dj serve's Prometheus text at url and returns the 99th
// percentile of dj_serve_request_duration_seconds over all its series, in
// seconds, interpolated linearly within the bucket that holds it.
func serveP99(url string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	const prefix = "dj_serve_request_duration_seconds_bucket{"
	buckets := map[float64]float64{} // upper bound: cumulative count over all series
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.LastIndex(line, `"}`)
		if i < 0 || j < i {
			continue
		}
		le := math.Inf(1)
		if v := line[i+4 : j]; v != "+Inf" {
			if le, err = strconv.ParseFloat(v, 64); err != nil {
				return 0, fmt.Errorf("bucket bound %q: %w", v, err)
			}
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(line[j+2:]), 64)
		if err != nil {
			return 0, fmt.Errorf("bucket count in %q: %w", line, err)
		}
		buckets[le] += n
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return histogramQuantile(0.99, buckets)
}

// histogramQuantile returns the q-quantile of cumulative buckets (upper
// bound to count), as Prometheus's histogram_quantile does.
func histogramQuantile(q float64, buckets map[float64]float64) (float64, error) {
	bounds := make([]float64, 0, len(buckets))
	for le := range buckets {
		bounds = append(bounds, le)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 || buckets[bounds[len(bounds)-1]] == 0 {
		return 0, fmt.Errorf("no requests in the latency histogram")
	}
	total := buckets[bounds[len(bounds)-1]]
	rank := q * total
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		n := buckets[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				return lower, nil // beyond the last finite bound: its value
			}
			if n == below {
				return le, nil
			}
			return lower + (le-lower)*(rank-below)/(n-below), nil
		}
		lower, below = le, n
	}
	return lower, nil
}

// dirBytes sums the sizes of the regular files under dir.
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}
