//go:build bench

// Command bench runs dj's end-to-end benchmarks against restic: backup and
// restore (section "backup"), the FUSE mount ("mount") and the maintenance
// commands ("maint"). It only calls the tools' binaries, the way a user
// would, following the method of /work/shared/research/perf-baseline.md.
//
// run.sh builds and starts it (`make bench`); README.md beside this file
// lists the settings and explains every figure. The build tag keeps it out
// of `go build ./...` and `go test ./...`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// config is what the environment asks for.
type config struct {
	dir        string          // work directory (BENCH_DIR)
	runs       int             // repetitions per figure (BENCH_RUNS)
	quick      bool            // smaller corpus, one run (BENCH_QUICK)
	sections   []string        // sections to run, in order (BENCH)
	tools      map[string]bool // tools to measure (BENCH_TOOLS)
	dj         string          // dj binary (DJ_BIN)
	restic     string          // restic binary (RESTIC_BIN)
	results    string          // where result files go (BENCH_RESULTS)
	fioSeconds int             // fio runtime
	many       int             // snapshots in the many-snapshots repository
	maintSteps int             // snapshots in the maintenance repository
	keepLast   int             // forget --keep-last
	smallFiles int             // files in the small-file tree for diff
}

var allSections = []string{"backup", "mount", "maint", "find", "bigdir", "remote", "serve", "vm"}

func loadConfig() (*config, error) {
	c := &config{
		dir:        envOr("BENCH_DIR", "/var/tmp/dj-bench"),
		runs:       3,
		dj:         envOr("DJ_BIN", "bin/dj"),
		restic:     envOr("RESTIC_BIN", "restic"),
		results:    envOr("BENCH_RESULTS", "integration/bench/results"),
		fioSeconds: 20,
		many:       500,
		maintSteps: 50,
		keepLast:   10,
		smallFiles: 100000,
		tools:      map[string]bool{},
	}
	c.quick = truthy(os.Getenv("BENCH_QUICK"))
	if c.quick {
		c.runs = 1
		c.fioSeconds = 5
		c.many = 100
		c.maintSteps = 15
		c.smallFiles = 10000
	}
	if s := os.Getenv("BENCH_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 50 {
			return nil, fmt.Errorf("BENCH_RUNS=%q: want a number from 1 to 50", s)
		}
		c.runs = n
	}
	if s := os.Getenv("BENCH_FIO_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("BENCH_FIO_SECONDS=%q: want a positive number", s)
		}
		c.fioSeconds = n
	}
	sections := envOr("BENCH", "all")
	if sections == "all" {
		c.sections = allSections
	} else {
		want := map[string]bool{}
		for _, s := range strings.Split(sections, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !contains(allSections, s) {
				return nil, fmt.Errorf("BENCH=%q: unknown section %q (want backup, mount, maint, find, bigdir, remote, serve, vm or all)", sections, s)
			}
			want[s] = true
		}
		for _, s := range allSections {
			if want[s] {
				c.sections = append(c.sections, s)
			}
		}
	}
	for _, t := range strings.Split(envOr("BENCH_TOOLS", "dj,restic"), ",") {
		t = strings.TrimSpace(t)
		if t != "dj" && t != "restic" {
			return nil, fmt.Errorf("BENCH_TOOLS: unknown tool %q (want dj and/or restic)", t)
		}
		c.tools[t] = true
	}
	var err error
	if c.dir, err = filepath.Abs(c.dir); err != nil {
		return nil, err
	}
	if c.results, err = filepath.Abs(c.results); err != nil {
		return nil, err
	}
	if c.tools["dj"] {
		if c.dj, err = filepath.Abs(c.dj); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func truthy(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "0", "no", "false", "off":
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// harness holds the state of one benchmark run.
type harness struct {
	cfg    *config
	out    io.Writer // stdout and the run log
	logDir string
	pwFile string
	env    []string // the environment without any DJ_ or RESTIC_ variable

	mu       sync.Mutex
	seq      int
	mounts   map[*mountProc]struct{}
	problems []string

	corpus   *corpus
	versions map[string]string
	machine  map[string]string
	started  time.Time
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "vma-stream" {
		os.Exit(vmaStreamMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	h, err := newHarness(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	code := h.run(ctx)
	h.cleanup()
	os.Exit(code)
}

func newHarness(cfg *config) (*harness, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("run as root: the benchmarks drop the page cache and mount FUSE file systems")
	}
	h := &harness{cfg: cfg, mounts: map[*mountProc]struct{}{}, started: time.Now()}
	h.logDir = filepath.Join(cfg.dir, "logs", h.started.Format("20060102-150405"))
	if err := os.MkdirAll(h.logDir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(h.logDir, "run.log"))
	if err != nil {
		return nil, err
	}
	h.out = io.MultiWriter(os.Stdout, logf)
	h.pwFile = filepath.Join(cfg.dir, "password")
	if _, err := os.Stat(h.pwFile); err != nil {
		if err := os.WriteFile(h.pwFile, []byte("dj-bench-password-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DJ_") || strings.HasPrefix(kv, "RESTIC_") {
			continue
		}
		h.env = append(h.env, kv)
	}
	return h, nil
}

// logf prints a progress line with the time since the start.
func (h *harness) logf(format string, args ...any) {
	el := time.Since(h.started).Round(time.Second)
	fmt.Fprintf(h.out, "[%8s] %s\n", el, fmt.Sprintf(format, args...))
}

// problem records something that went wrong; the run goes on, and the
// problem is listed in the results.
func (h *harness) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.problems = append(h.problems, msg)
	h.mu.Unlock()
	h.logf("PROBLEM: %s", msg)
}

func (h *harness) run(ctx context.Context) int {
	h.logf("dj bench: sections %s, %d run(s) per figure%s, tools %s, work dir %s, logs %s",
		strings.Join(h.cfg.sections, ","), h.cfg.runs, map[bool]string{true: " (quick)"}[h.cfg.quick],
		strings.Join(sortedKeys(h.cfg.tools), ","), h.cfg.dir, h.logDir)
	if err := h.checkTools(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	h.machine = machineInfo()
	if needsCorpus(h.cfg.sections) {
		c, err := h.prepareCorpus(ctx)
		if err != nil {
			h.logf("preparing the corpus failed: %v", err)
			return 1
		}
		h.corpus = c
	}
	for _, s := range h.cfg.sections {
		if ctx.Err() != nil {
			break
		}
		var rep *report
		switch s {
		case "backup":
			rep = h.backupSection(ctx)
		case "mount":
			rep = h.mountSection(ctx)
		case "maint":
			rep = h.maintSection(ctx)
		case "find":
			rep = h.findSection(ctx)
		case "bigdir":
			rep = h.bigdirSection(ctx)
		case "remote":
			rep = h.remoteSection(ctx)
		case "serve":
			rep = h.serveSection(ctx)
		case "vm":
			rep = h.vmSection(ctx)
		}
		h.cleanupMounts()
		if ctx.Err() != nil {
			h.logf("interrupted during the %s section; its results are not written", s)
			break
		}
		if rep != nil {
			if err := h.writeReport(rep); err != nil {
				h.logf("writing the results of %s failed: %v", s, err)
			}
		}
	}
	if ctx.Err() != nil {
		h.logf("interrupted")
		return 130
	}
	h.logf("done in %s", time.Since(h.started).Round(time.Second))
	return 0
}

// cleanup unmounts everything this run mounted and stops its processes.
func (h *harness) cleanup() {
	h.cleanupMounts()
}

// needsCorpus reports whether a section uses the shared corpus (remote,
// serve and vm make their own data).
func needsCorpus(sections []string) bool {
	for _, s := range sections {
		if s != "remote" && s != "serve" && s != "vm" {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
