//go:build bench

package main

// The "remote" section: dj and restic against real servers (OpenSSH's
// sshd for SFTP, versitygw for S3, restic's rest-server) reached through
// a proxy that delays every chunk 10 ms each way, as a 20 ms network
// would (issue 10), and through the same proxy without delay.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"dj/internal/testserver"
)

// remoteCorpus is the tree the remote section backs up: the Go net
// package's source and a file of random bytes.
type remoteCorpus struct {
	Root     string `json:"root"`
	Net      string `json:"net"`
	Big      string `json:"big"`
	Source   string `json:"source"`
	BigBytes int64  `json:"big_bytes"`
	Bytes    int64  `json:"bytes"`
	Files    int    `json:"files"`
	NetEnts  int    `json:"net_entries"` // what `find net | wc -l` prints
}

// prepareRemoteCorpus builds the corpus of the remote section (256 MiB of
// random bytes, 32 MiB with BENCH_QUICK, and a copy of GOROOT/src/net),
// or reuses the one an earlier run built.
func (h *harness) prepareRemoteCorpus(ctx context.Context) (*remoteCorpus, error) {
	size := int64(256 << 20)
	name := "remote-corpus"
	if h.cfg.quick {
		size, name = 32<<20, "remote-corpus-quick"
	}
	root := filepath.Join(h.cfg.dir, name)
	meta := root + ".json"
	if b, err := os.ReadFile(meta); err == nil {
		var c remoteCorpus
		if json.Unmarshal(b, &c) == nil && c.Root == root && fileExists(c.Big) {
			return &c, nil
		}
	}
	goroot := runtime.GOROOT()
	if out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		goroot = strings.TrimSpace(string(out))
	}
	c := &remoteCorpus{Root: root, Net: filepath.Join(root, "net"), Big: filepath.Join(root, "random"),
		Source: filepath.Join(goroot, "src", "net")}
	h.logf("remote: building the corpus %s: cp -a %s, %d MiB random", root, c.Source, size>>20)
	os.Remove(meta)
	if err := os.RemoveAll(root); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", c.Source, c.Net).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cp -a %s: %w: %s", c.Source, err, out)
	}
	if err := newGenRand(10).writeRandomFile(c.Big, size); err != nil {
		return nil, err
	}
	c.BigBytes = size
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == c.Net || strings.HasPrefix(p, c.Net+"/") {
			c.NetEnts++
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			c.Files++
			c.Bytes += fi.Size()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(c, "", " ")
	return c, os.WriteFile(meta, b, 0o644)
}

// benchTB is the testserver.TB of the harness: failures panic with a
// benchFatal that startServer turns into an error, and cleanups run when
// the section ends.
type benchTB struct {
	h        *harness
	dir      string
	cleanups []func()
}

type benchFatal struct{ msg string }

func (t *benchTB) Helper()                        {}
func (t *benchTB) Fatal(args ...any)              { panic(benchFatal{fmt.Sprint(args...)}) }
func (t *benchTB) Fatalf(format string, a ...any) { panic(benchFatal{fmt.Sprintf(format, a...)}) }
func (t *benchTB) Skip(args ...any)               { panic(benchFatal{"skipped: " + fmt.Sprint(args...)}) }
func (t *benchTB) Logf(format string, a ...any)   { t.h.logf("remote: "+format, a...) }
func (t *benchTB) Cleanup(f func())               { t.cleanups = append(t.cleanups, f) }

func (t *benchTB) TempDir() string {
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := os.MkdirTemp(t.dir, "srv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// close runs the cleanups, the last registered first.
func (t *benchTB) close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// try runs f, turning a failure of the TB into an error.
func (t *benchTB) try(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			bf, ok := r.(benchFatal)
			if !ok {
				panic(r)
			}
			err = errors.New(bf.msg)
		}
	}()
	f()
	return nil
}

// remoteServer is one running server: where its repositories go and how
// each tool reaches them through a proxy.
type remoteServer struct {
	name string
	addr string // host:port the proxies forward to
	// tool returns the tool named n bound to a new repository called repo
	// on the server, reached at proxyAddr; the repository's files are
	// under the returned local directory (to remove it).
	tool func(n, repo, proxyAddr string) (*tool, string, error)
	// perRepo, when set, starts a server for the repository repo only
	// (dj serve serves one repository) and returns its address, which
	// then replaces addr, and how to stop it.
	perRepo func(repo string) (addr string, stop func(), err error)
}

// startRemoteServer starts the named server ("sftp", "s3", "rclone",
// "rest" or "djserve").
func (h *harness) startRemoteServer(tb *benchTB, name, work string) (*remoteServer, error) {
	s := &remoteServer{name: name}
	var err error
	switch name {
	case "sftp":
		var sshd *testserver.SSHD
		if err = tb.try(func() { sshd = testserver.StartSSHD(tb) }); err != nil {
			return nil, err
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sshd.Port))
		n := 0
		s.tool = func(tn, repo, proxyAddr string) (*tool, string, error) {
			n++
			_, port, _ := strings.Cut(proxyAddr, ":")
			cfg := filepath.Join(work, fmt.Sprintf("ssh_config-%d", n))
			conf := fmt.Sprintf("Host djbench\n  HostName 127.0.0.1\n  Port %s\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n",
				port, sshd.User, sshd.KeyFile)
			if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
				return nil, "", err
			}
			dir := filepath.Join(work, "sftp-repos", repo)
			t := h.remoteTool(tn, "sftp:djbench:"+dir, filepath.Join(work, "cache", repo), nil)
			if tn == "dj" {
				t.opts = []string{"-o", "sftp.args=-F " + cfg}
			} else {
				t.opts = []string{"-o", "sftp.command=ssh -F " + cfg + " djbench -s sftp"}
			}
			return t, dir, nil
		}
	case "s3":
		var srv *testserver.S3Server
		if err = tb.try(func() { srv = testserver.StartS3Server(tb) }); err != nil {
			return nil, err
		}
		s.addr = srv.Addr
		env := srv.Env(work)
		s.tool = func(tn, repo, proxyAddr string) (*tool, string, error) {
			bucket := strings.ToLower(safeName(repo))
			t := h.remoteTool(tn, "s3:http://"+proxyAddr+"/"+bucket+"/repo", filepath.Join(work, "cache", repo), env)
			return t, filepath.Join(srv.Dir, bucket), nil
		}
	case "rclone":
		// rclone's S3 remote to versitygw: both tools run `rclone serve
		// restic --stdio` (dj's rclone: backend, restic's own), and
		// rclone crosses the proxy.
		var srv *testserver.S3Server
		if err = tb.try(func() { srv = testserver.StartS3Server(tb) }); err != nil {
			return nil, err
		}
		s.addr = srv.Addr
		n := 0
		s.tool = func(tn, repo, proxyAddr string) (*tool, string, error) {
			n++
			cfg := filepath.Join(work, fmt.Sprintf("rclone-%d.conf", n))
			conf := fmt.Sprintf("[djbench]\ntype = s3\nprovider = Other\naccess_key_id = %s\nsecret_access_key = %s\nregion = %s\nendpoint = http://%s\nforce_path_style = true\n",
				srv.AccessKey, srv.SecretKey, srv.Region, proxyAddr)
			if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
				return nil, "", err
			}
			bucket := strings.ToLower(safeName(repo))
			// rclone 1.60's S3 client fails on any custom CA bundle
			// (the endpoint is plain HTTP anyway).
			env := append(srv.Env(work), "RCLONE_CONFIG="+cfg, "AWS_CA_BUNDLE=")
			t := h.remoteTool(tn, "rclone:djbench:"+bucket+"/repo", filepath.Join(work, "cache", repo), env)
			return t, filepath.Join(srv.Dir, bucket), nil
		}
	case "rest":
		dir := filepath.Join(work, "rest-repos")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		var u string
		if err = tb.try(func() { u = testserver.StartRestServer(tb, dir) }); err != nil {
			return nil, err
		}
		pu, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		s.addr = pu.Host
		s.tool = func(tn, repo, proxyAddr string) (*tool, string, error) {
			t := h.remoteTool(tn, "rest:http://"+proxyAddr+"/"+repo+"/", filepath.Join(work, "cache", repo), nil)
			return t, filepath.Join(dir, repo), nil
		}
	case "djserve":
		dir := filepath.Join(work, "djserve-repos")
		s.addr = "(one `dj serve` per repository)"
		s.perRepo = func(repo string) (string, func(), error) {
			return h.startDJServe(filepath.Join(dir, repo))
		}
		s.tool = func(tn, repo, proxyAddr string) (*tool, string, error) {
			t := h.remoteTool(tn, "rest:http://"+proxyAddr+"/", filepath.Join(work, "cache", repo), nil)
			return t, filepath.Join(dir, repo), nil
		}
	default:
		return nil, fmt.Errorf("unknown server %q (want sftp, s3, rclone, rest or djserve)", name)
	}
	return s, nil
}

// remoteTool binds the named program to a repository location, with its
// own cache directory and extra environment.
func (h *harness) remoteTool(name, location, cache string, extraEnv []string) *tool {
	t := &tool{name: name, repo: location, cache: cache}
	env := append(append([]string(nil), h.env...), extraEnv...)
	switch name {
	case "dj":
		t.bin = h.cfg.dj
		env = append(env, "DJ_REPOSITORY="+location, "DJ_PASSWORD_FILE="+h.pwFile, "DJ_CACHE_DIR="+cache)
	case "restic":
		t.bin = h.cfg.restic
		env = append(env, "RESTIC_REPOSITORY="+location, "RESTIC_PASSWORD_FILE="+h.pwFile, "RESTIC_CACHE_DIR="+cache)
	}
	t.env = env
	return t
}

// remoteDelays are the one-way delays of the proxy: 10 ms (20 ms round
// trips, the network) and none (for orientation).
var remoteDelays = []time.Duration{10 * time.Millisecond, 0}

func delayLabel(d time.Duration) string {
	if d == 0 {
		return "no delay"
	}
	return fmt.Sprintf("%d ms RTT", 2*d.Milliseconds())
}

func delayKey(d time.Duration) string { return fmt.Sprintf("rtt%d", 2*d.Milliseconds()) }

// remoteSection measures backup, restore, check --read-data and the mount
// of dj and restic on real servers behind the delaying proxy (issue 10).
func (h *harness) remoteSection(ctx context.Context) *report {
	names := h.toolNames()
	r := h.newReport("remote", names...)
	c, err := h.prepareRemoteCorpus(ctx)
	if err != nil {
		h.problem("remote: corpus: %v", err)
		return r
	}
	r.Corpus = map[string]any{
		"root":   c.Root,
		"net":    fmt.Sprintf("cp -a %s: %d entries", c.Source, c.NetEnts),
		"random": fmt.Sprintf("%s bytes of random data", commas(c.BigBytes)),
		"total":  fmt.Sprintf("%d files, %s bytes", c.Files, commas(c.Bytes)),
	}
	servers := strings.Split(envOr("BENCH_REMOTE_SERVERS", "sftp,s3,rclone,rest,djserve"), ",")
	for _, srv := range servers {
		for _, d := range remoteDelays {
			k := srv + "_" + delayKey(d)
			p := srv + ", " + delayLabel(d) + ": "
			var tBackup, tRestore, tCat, tFind []targetSpec
			if d > 0 {
				tBackup = []targetSpec{atLeastTimes(5, "dj", "restic", "≥5× faster")}
				tRestore = []targetSpec{atLeastTimes(2, "dj", "restic", "≥2× faster")}
				tCat = []targetSpec{atLeastTimes(10, "dj", "restic", "≥10× restic")}
				tFind = []targetSpec{atMost(0, "dj", "no request")}
			}
			r.fig(k+"_init", p+"init", "s", false).withRatio()
			r.fig(k+"_backup", p+"initial backup", "s", false, tBackup...).withRatio()
			r.fig(k+"_restore", p+"restore latest (empty target)", "s", false, tRestore...).withRatio()
			r.fig(k+"_restore_ok", p+"restored tree = source (run 1)", "", true)
			r.fig(k+"_check", p+"check --read-data", "s", false).withRatio()
			r.fig(k+"_cat", p+"mount: cat random file, cold", "MB/s", true, tCat...).withRatio()
			r.fig(k+"_find_cold", p+"mount: find net | wc -l, cold (fresh mount)", "s", false).withRatio()
			r.fig(k+"_find_warm", p+"mount: find net | wc -l, warm (same mount)", "s", false).withRatio()
			r.fig(k+"_find_warm_req", p+"mount: chunks the client sent to the server during the warm find", "chunks", false, tFind...)
			r.fig(k+"_backup_conns", p+"connections opened by the initial backup", "", false)
		}
	}

	work := filepath.Join(h.cfg.dir, "remote")
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		h.problem("remote: %v", err)
		return r
	}
	tb := &benchTB{h: h, dir: filepath.Join(work, "tmp")}
	defer tb.close()
	for _, sname := range servers {
		if ctx.Err() != nil {
			break
		}
		srv, err := h.startRemoteServer(tb, sname, work)
		if err != nil {
			h.problem("remote: starting the %s server: %v", sname, err)
			continue
		}
		h.logf("remote: %s server on %s", sname, srv.addr)
		for _, d := range remoteDelays {
			for run := 1; run <= h.cfg.runs && ctx.Err() == nil; run++ {
				for _, n := range names {
					if ctx.Err() != nil {
						break
					}
					k := sname + "_" + delayKey(d)
					repo := fmt.Sprintf("%s-%s-%s-r%d", n, sname, delayKey(d), run)
					h.logf("remote: %s, %s, %s, run %d/%d", sname, delayLabel(d), n, run, h.cfg.runs)
					if err := h.remoteRunProxied(ctx, r, c, srv, d, k, n, repo, run, work); err != nil {
						h.problem("remote: %s, %s, %s: %v", sname, delayLabel(d), n, err)
					}
				}
			}
		}
	}
	r.Notes = append(r.Notes,
		"Every server runs on 127.0.0.1 and both tools reach it through testserver.DelayProxy (internal/testserver/delayproxy.go), a TCP proxy that delivers every chunk it reads 10 ms after it arrived in each direction (20 ms round trips; bandwidth not limited; order kept); the \"no delay\" rows go through the same proxy with 0 ms.",
		"Servers: sftp = Debian's OpenSSH sshd (internal-sftp), reached with `ssh -F CONFIG` (dj: -o sftp.args, restic: -o sftp.command); s3 = versitygw "+testserver.S3ServerVersion+" (posix backend); rclone = Debian's rclone (`rclone serve restic --stdio`, started by each tool) with an S3 remote to that versitygw, rclone crossing the proxy; rest = restic's rest-server "+testserver.RestServerVersion+" (--no-auth); djserve = `dj serve --path REPO`, one per repository (it serves one), the dj under test serving both tools.",
		"Each run: a new repository (init), `backup CORPUS`, drop_caches, `restore latest --target EMPTY` (run 1 compared with the source), `check --read-data`, then one fresh mount: `find MNT/snapshots/latest/CORPUS/net | wc -l` cold and again warm, then drop_caches and `cat` of the random file. Each tool keeps its local cache from the backup, as a user's machine would (restic caches index, snapshot and tree packs too).",
		"\"chunks the client sent\" counts the reads of the proxy from the client side (about one per request, more for large uploads; SSH's encrypted packets count as they arrive) during the warm find: 0 means the warm find sent nothing to the server.",
	)
	return r
}

// remoteRunProxied puts a proxy with the one-way delay d in front of the
// server (started for this repository when it serves only one) for one
// run.
func (h *harness) remoteRunProxied(ctx context.Context, r *report, c *remoteCorpus, srv *remoteServer, d time.Duration, k, n, repo string, run int, work string) error {
	target := srv.addr
	if srv.perRepo != nil {
		addr, stop, err := srv.perRepo(repo)
		if err != nil {
			r.text(k+"_init", n, "failed")
			return err
		}
		defer stop()
		target = addr
	}
	proxy, err := testserver.NewDelayProxy(target, d)
	if err != nil {
		return err
	}
	defer proxy.Close()
	return h.remoteRun(ctx, r, c, srv, proxy, k, n, repo, run, work)
}

// startDJServe runs `dj serve` for the repository in dir on a free port
// until stop is called.
func (h *harness) startDJServe(dir string) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := l.Addr().String()
	l.Close()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", nil, err
	}
	h.mu.Lock()
	h.seq++
	logPath := filepath.Join(h.logDir, fmt.Sprintf("%04d-djserve.out", h.seq))
	h.mu.Unlock()
	out, err := os.Create(logPath)
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(h.cfg.dj, "serve", "--path", dir, "--listen", addr)
	cmd.Env = h.env
	cmd.Stdout, cmd.Stderr = out, out
	stop, exited, err := startServer(cmd, out)
	if err != nil {
		return "", nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return addr, stop, nil
		}
		select {
		case <-exited:
			return "", nil, fmt.Errorf("`dj serve --path %s` exited%s", dir, tailOf(logPath))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("`dj serve` did not listen on %s within 20s%s", addr, tailOf(logPath))
		}
	}
}

// remoteRun is one run of one tool on one server behind one proxy.
func (h *harness) remoteRun(ctx context.Context, r *report, c *remoteCorpus, srv *remoteServer, proxy *testserver.DelayProxy, k, n, repo string, run int, work string) error {
	t, local, err := srv.tool(n, repo, proxy.Addr)
	if err != nil {
		return err
	}
	defer os.RemoveAll(local)
	defer os.RemoveAll(t.cache)
	res, err := h.timed(ctx, t, "init")
	if err != nil {
		r.text(k+"_init", n, errText(err))
		return err
	}
	r.add(k+"_init", n, res.Wall)
	if err := dropCaches(); err != nil {
		return err
	}
	before := proxy.Stats()
	res, err = h.timed(ctx, t, "backup", c.Root)
	if err != nil {
		r.text(k+"_backup", n, errText(err))
		return err
	}
	r.add(k+"_backup", n, res.Wall)
	r.add(k+"_backup_conns", n, float64(proxy.Stats().Sub(before).Conns))
	h.logf("remote: %s: backup %.2fs", n, res.Wall)

	target := filepath.Join(work, "restore-"+repo)
	defer os.RemoveAll(target)
	dropCaches()
	res, err = h.timed(ctx, t, "restore", "latest", "--target", target)
	if err != nil {
		r.text(k+"_restore", n, errText(err))
		h.problem("remote: %s: restore: %v", n, err)
	} else {
		r.add(k+"_restore", n, res.Wall)
		h.logf("remote: %s: restore %.2fs", n, res.Wall)
		if run == 1 {
			_, diffs, ndiff, err := compareTrees(ctx, c.Root, filepath.Join(target, c.Root))
			switch {
			case err != nil:
				r.text(k+"_restore_ok", n, "error")
				h.problem("remote: %s: comparing the restored tree: %v", n, err)
			case ndiff == 0:
				r.text(k+"_restore_ok", n, "yes")
			default:
				r.text(k+"_restore_ok", n, fmt.Sprintf("NO: %d differences", ndiff))
				h.problem("remote: %s: the restored tree differs in %d places; first: %s", n, ndiff, strings.Join(diffs, "; "))
			}
		}
	}
	os.RemoveAll(target)

	dropCaches()
	res, err = h.timed(ctx, t, "check", "--read-data")
	if err != nil {
		r.text(k+"_check", n, errText(err))
		h.problem("remote: %s: check --read-data: %v", n, err)
	} else {
		r.add(k+"_check", n, res.Wall)
		h.logf("remote: %s: check --read-data %.2fs", n, res.Wall)
	}

	return h.remoteMount(ctx, r, c, t, proxy, k, n, work)
}

// remoteMount measures find (cold, warm) and a cold read through one fresh
// mount.
func (h *harness) remoteMount(ctx context.Context, r *report, c *remoteCorpus, t *tool, proxy *testserver.DelayProxy, k, n, work string) error {
	mnt := filepath.Join(h.cfg.dir, "mnt", "remote-"+n)
	if err := dropCaches(); err != nil {
		return err
	}
	m, err := h.startMount(n+"-remote", mnt, t.env, t.argv("mount", mnt))
	if err != nil {
		return err
	}
	defer m.stop()
	data := filepath.Join(mnt, "snapshots", "latest", c.Root)
	if _, err := m.waitReady(ctx, data, 2, 5*time.Minute); err != nil {
		r.text(k+"_find_cold", n, "failed")
		return err
	}
	dropCaches()
	q := shellQuote
	for _, key := range []string{"_find_cold", "_find_warm"} {
		before := proxy.Stats()
		wall, out, err := h.sh(ctx, n+"-remote-find", "find "+q(filepath.Join(data, "net"))+" | wc -l")
		if err != nil {
			r.text(k+key, n, "failed")
			return err
		}
		if got, _ := strconv.Atoi(out); got != c.NetEnts {
			h.problem("remote: %s: `find net | wc -l` through the mount printed %d, the source has %d", n, got, c.NetEnts)
		}
		r.add(k+key, n, wall)
		if key == "_find_warm" {
			r.add(k+"_find_warm_req", n, float64(proxy.Stats().Sub(before).ChunksUp))
		}
	}
	dropCaches()
	wall, _, err := h.sh(ctx, n+"-remote-cat", "cat "+q(filepath.Join(data, filepath.Base(c.Big)))+" > /dev/null")
	if err != nil {
		r.text(k+"_cat", n, "failed")
		return err
	}
	r.add(k+"_cat", n, float64(c.BigBytes)/wall/1e6)
	h.logf("remote: %s: mount: cat %.0f MB/s", n, float64(c.BigBytes)/wall/1e6)
	return m.stop()
}
