package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"math/rand"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// teamServer is `dj serve --private-repos --htpasswd-file --users-config`
// for a team; users holds each user's password.
type teamServer struct {
	e      *env
	url    string // http://127.0.0.1:PORT/
	root   string // the served tree
	config string // the --users-config file
	users  map[string]string
}

func startTeamServer(e *env, config string, extra ...string) *teamServer {
	e.t.Helper()
	ts := &teamServer{e: e, root: filepath.Join(e.dir, "served"), config: filepath.Join(e.dir, "users.json"),
		users: map[string]string{"ann": "ann-pw", "bob": "bob-pw", "carl": "carl-pw", "dana": "dana-pw"}}
	var b strings.Builder
	for u, pw := range ts.users {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			e.t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	htpasswd := filepath.Join(e.dir, "htpasswd")
	writeFile(e.t, htpasswd, []byte(b.String()))
	ts.setConfig(config)
	ts.url = e.serve(append([]string{"--private-repos", "--htpasswd-file", htpasswd, "--users-config", ts.config}, extra...)...)
	return ts
}

// setConfig replaces the --users-config file, as an admin would.
func (ts *teamServer) setConfig(config string) {
	tmp := ts.config + ".tmp"
	writeFile(ts.e.t, tmp, []byte(config))
	if err := os.Rename(tmp, ts.config); err != nil {
		ts.e.t.Fatal(err)
	}
}

// repoURL is the rest: location of user's repository at path.
func (ts *teamServer) repoURL(user, path string) string {
	return "rest:" + strings.Replace(ts.url, "http://", "http://"+user+":"+ts.users[user]+"@", 1) + path
}

// tree describes every file and directory under the served tree, with
// the content hash and modification time of files, so that two calls
// differ when anything was written, replaced or removed.
func (ts *teamServer) tree() string {
	ts.e.t.Helper()
	var lines []string
	err := filepath.WalkDir(ts.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := p + " " + fi.Mode().String()
		if d.Type().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			line += fmt.Sprintf(" %d %s %s", fi.Size(), fi.ModTime().Format(time.RFC3339Nano), hex.EncodeToString(sum[:8]))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		ts.e.t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// treeDiff lists the lines of one tree() missing from the other.
func treeDiff(before, after string) string {
	count := map[string]int{}
	for _, l := range strings.Split(before, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(after, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		switch {
		case n > 0:
			out = append(out, "- "+l)
		case n < 0:
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// raw sends one request as user with the path exactly as given (no
// cleaning by the client) and returns the status.
func (ts *teamServer) raw(user, method, path string, body []byte) int {
	ts.e.t.Helper()
	req, err := http.NewRequest(method, ts.url, bytes.NewReader(body))
	if err != nil {
		ts.e.t.Fatal(err)
	}
	req.URL.Opaque = "/" + strings.TrimPrefix(path, "/")
	req.SetBasicAuth(user, ts.users[user])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// serveRestic runs restic 0.14 against a repository of the team server.
func serveRestic(e *env, repo string, args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "restic", append([]string{"-r", repo, "--no-cache"}, args...)...)
	cmd.Env = append(cleanEnv(), "RESTIC_PASSWORD=restic-pw")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func resticMust(e *env, repo string, args ...string) string {
	e.t.Helper()
	out, err := serveRestic(e, repo, args...)
	if err != nil {
		e.t.Fatalf("restic %v: %v\n%s", args, err, out)
	}
	return out
}

// randomFile writes n incompressible bytes (seeded) to path.
func randomFile(t *testing.T, path string, n int, seed int64) []byte {
	t.Helper()
	data := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(data)
	writeFile(t, path, data)
	return data
}

// TestServeTeam: dj and restic 0.14 as clients of one `dj serve
// --private-repos --htpasswd-file`, each user under its own path; a user
// reaching for another's repository gets 403 and nothing changes.
func TestServeTeam(t *testing.T) {
	requireRestic(t)
	e := newEnv(t)
	ts := startTeamServer(e, `{}`)

	// ann with dj: the whole life of a repository.
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY="+ts.repoURL("ann", "ann/laptop"))
	e.must("init")
	repositoryLife(t, e, 3_000_000)

	// bob with restic: init, backup, check --read-data, restore, forget --prune.
	bobRepo := ts.repoURL("bob", "bob/desktop")
	src := filepath.Join(e.dir, "bobsrc")
	big := randomFile(t, filepath.Join(src, "big"), 3<<20, 1)
	writeFile(t, filepath.Join(src, "d", "small"), []byte("bob's"))
	resticMust(e, bobRepo, "init")
	resticMust(e, bobRepo, "backup", src)
	writeFile(t, filepath.Join(src, "d", "new"), []byte("second"))
	resticMust(e, bobRepo, "backup", src)
	if out := resticMust(e, bobRepo, "check", "--read-data"); !strings.Contains(out, "no errors were found") {
		t.Fatalf("restic check: %s", out)
	}
	target := filepath.Join(e.dir, "bob-restored")
	resticMust(e, bobRepo, "restore", "latest", "--target", target)
	if got, err := os.ReadFile(filepath.Join(target, src, "big")); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("restic restore: %d bytes, %v", len(got), err)
	}
	resticMust(e, bobRepo, "forget", "--keep-last", "1", "--prune")
	if out := resticMust(e, bobRepo, "check", "--read-data"); !strings.Contains(out, "no errors were found") {
		t.Fatalf("restic check after prune: %s", out)
	}
	if out := resticMust(e, bobRepo, "snapshots", "--json"); strings.Count(out, `"tree"`) != 1 {
		t.Fatalf("restic snapshots after forget: %s", out)
	}
	if _, err := os.Stat(filepath.Join(ts.root, "bob", "desktop", "config")); err != nil {
		t.Fatalf("bob's repository is not under /bob/desktop/: %v", err)
	}

	// Cross-user access: 403, and nothing read or changed.
	before := ts.tree()
	r := e.runEnv([]string{"DJ_REPOSITORY=" + ts.repoURL("ann", "bob/desktop")}, "snapshots")
	if r.code == 0 || !strings.Contains(r.stderr, "403") {
		t.Errorf("dj as ann on bob's repository: exit %d\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
	r = e.runEnv([]string{"DJ_REPOSITORY=" + ts.repoURL("ann", "bob/new")}, "init")
	if r.code == 0 {
		t.Errorf("dj as ann created a repository under /bob/")
	}
	if out, err := serveRestic(e, ts.repoURL("bob", "ann/laptop"), "snapshots"); err == nil {
		t.Errorf("restic as bob listed ann's snapshots:\n%s", out)
	}
	if out, err := serveRestic(e, ts.repoURL("bob", "ann/laptop"), "forget", "--keep-last", "0", "--prune"); err == nil {
		t.Errorf("restic as bob ran forget on ann's repository:\n%s", out)
	}
	if out, err := serveRestic(e, ts.repoURL("bob", "ann/other"), "init"); err == nil {
		t.Errorf("restic as bob created a repository under /ann/:\n%s", out)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "ann/laptop/config"}, {"GET", "ann/laptop/keys/"}, {"DELETE", "ann/laptop/config"},
		{"POST", "ann/laptop/?create=true"}, {"GET", "bob/../ann/laptop/config"},
	} {
		code := ts.raw("bob", tc.method, tc.path, nil)
		if code != http.StatusForbidden && code != http.StatusBadRequest {
			t.Errorf("bob %s /%s: %d, want 403 (or 400 for a path trick)", tc.method, tc.path, code)
		}
	}
	if after := ts.tree(); after != before {
		t.Errorf("cross-user requests changed the served tree:\n%s", treeDiff(before, after))
	}
	// repositoryLife leaves two: its last backup and the copy it brings back.
	if out := e.must("snapshots", "--json"); strings.Count(out, `"tree"`) != 2 {
		t.Errorf("ann's snapshots afterwards: %s", out)
	}
}

// TestServeAppendOnlyUser: carl is append-only in the users config; every
// delete and overwrite he sends is refused and leaves the served tree
// byte-identical; his backups still work. dana, not append-only, may forget.
func TestServeAppendOnlyUser(t *testing.T) {
	e := newEnv(t)
	ts := startTeamServer(e, `{"users": {"carl": {"append_only": true}}}`)
	src := filepath.Join(e.dir, "src")
	randomFile(t, filepath.Join(src, "f"), 100_000, 2)
	carl := []string{"DJ_REPOSITORY=" + ts.repoURL("carl", "carl/pc")}
	for _, args := range [][]string{{"init"}, {"backup", src}, {"backup", src}} {
		if r := e.runEnv(carl, args...); r.code != 0 {
			t.Fatalf("carl: dj %v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	before := ts.tree()
	r := e.runEnv(carl, "forget", "--keep-last", "1", "--prune")
	if r.code == 0 {
		t.Error("forget --prune succeeded for an append-only user")
	}
	oneLine(t, r)
	if !strings.Contains(r.stderr, "append-only") {
		t.Errorf("forget's error does not say append-only: %s", r.stderr)
	}
	r = e.runEnv(carl, "prune")
	if r.code == 0 {
		t.Error("prune succeeded for an append-only user")
	}
	// They may have added files (prune writes before it deletes), but
	// nothing was removed or changed.
	if d := treeDiff(before, ts.tree()); strings.HasPrefix(d, "- ") || strings.Contains(d, "\n- ") {
		t.Errorf("forget and prune of an append-only user removed or changed files:\n%s", d)
	}
	before = ts.tree()
	// Every delete and overwrite a client can send, with path tricks.
	var files []string
	if err := filepath.WalkDir(filepath.Join(ts.root, "carl", "pc"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(ts.root, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		dir, name := filepath.Dir(f), filepath.Base(f)
		if strings.HasPrefix(dir, "carl/pc/data/") {
			dir = "carl/pc/data"
		}
		direct := dir + "/" + name
		if name == "config" {
			direct = "carl/pc/config"
		}
		base := filepath.Base(filepath.Dir(direct))
		for _, p := range []string{
			direct, strings.Replace(direct, "/", "//", 1), strings.Replace(direct, "/"+base+"/", "/"+base+"/../"+base+"/", 1),
			strings.Replace(direct, "/"+base+"/", "/..%2f"+base+"%2f", 1), strings.Replace(direct, "/", "%2F", -1),
			direct + "%00", strings.Replace(direct, "carl/pc", "carl/./pc", 1), strings.Replace(direct, "carl/pc", "carl/x/../pc", 1),
			strings.Replace(direct, "carl/pc", "carl%2fpc", 1), "carl/config", "carl/pc/data/" + name,
		} {
			for _, body := range [][]byte{nil, []byte("overwrite")} {
				method := "DELETE"
				if body != nil {
					method = "POST"
				}
				if code := ts.raw("carl", method, p, body); code < 400 {
					t.Errorf("carl %s /%s: %d, want refused", method, p, code)
				}
			}
		}
	}
	if after := ts.tree(); after != before {
		t.Errorf("an append-only user changed the served tree:\n%s", treeDiff(before, after))
	}
	// Backups still work, and the snapshots are all there.
	writeFile(t, filepath.Join(src, "g"), []byte("more"))
	if r := e.runEnv(carl, "backup", src); r.code != 0 {
		t.Fatalf("carl's backup after the refusals: exit %d\n%s", r.code, r.stderr)
	}
	if r := e.runEnv(carl, "check", "--read-data"); r.code != 0 {
		t.Fatalf("carl's check: exit %d\n%s", r.code, r.stderr)
	}
	if out := e.runEnv(carl, "snapshots", "--json").stdout; strings.Count(out, `"tree"`) != 3 {
		t.Errorf("carl's snapshots: %s", out)
	}
	// dana is not append-only.
	dana := []string{"DJ_REPOSITORY=" + ts.repoURL("dana", "dana/pc")}
	for _, args := range [][]string{{"init"}, {"backup", src}, {"backup", src}, {"forget", "--keep-last", "1", "--prune"}} {
		if r := e.runEnv(dana, args...); r.code != 0 {
			t.Fatalf("dana: dj %v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
}

// TestServeAppendOnlyRestic: restic 0.14 against a globally append-only
// dj serve: backups work, forget is refused, the tree stays as it was.
func TestServeAppendOnlyRestic(t *testing.T) {
	requireRestic(t)
	e := newEnv(t)
	ts := startTeamServer(e, `{}`, "--append-only")
	src := filepath.Join(e.dir, "src")
	randomFile(t, filepath.Join(src, "f"), 100_000, 3)
	repo := ts.repoURL("bob", "bob/pc")
	resticMust(e, repo, "init")
	resticMust(e, repo, "backup", src)
	resticMust(e, repo, "backup", src)
	before := ts.tree()
	if out, err := serveRestic(e, repo, "forget", "--keep-last", "1", "--prune"); err == nil {
		t.Errorf("restic forget on an append-only server succeeded:\n%s", out)
	}
	// restic removes its own lock whatever happens; locks may go.
	if after := ts.tree(); after != before {
		t.Errorf("restic changed an append-only tree:\n%s", treeDiff(before, after))
	}
	if out := resticMust(e, repo, "check", "--read-data"); !strings.Contains(out, "no errors were found") {
		t.Fatalf("restic check: %s", out)
	}
}

// TestServeQuota: dana's quota is crossed by a backup, which fails in one
// line saying so and leaves no partial file; after the admin raises the
// quota (no restart) the same backup completes and check passes.
func TestServeQuota(t *testing.T) {
	e := newEnv(t)
	ts := startTeamServer(e, `{"users": {"dana": {"max_size": "1M"}}}`)
	src := filepath.Join(e.dir, "src")
	randomFile(t, filepath.Join(src, "big"), 3<<20, 4)
	dana := []string{"DJ_REPOSITORY=" + ts.repoURL("dana", "dana/laptop")}
	if r := e.runEnv(dana, "init"); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	r := e.runEnv(dana, "backup", src)
	if r.code == 0 {
		t.Fatal("a backup over the quota succeeded")
	}
	oneLine(t, r)
	if !strings.Contains(r.stderr, "repository quota exceeded") {
		t.Errorf("backup over the quota: %s", r.stderr)
	}
	var size int64
	_ = filepath.WalkDir(filepath.Join(ts.root, "dana"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), ".tmp") || strings.HasPrefix(d.Name(), ".") {
			t.Errorf("partial file left: %s", p)
		}
		if fi, err := d.Info(); err == nil && d.Type().IsRegular() {
			size += fi.Size()
		}
		return nil
	})
	if size > 1<<20 {
		t.Errorf("dana stores %d bytes, over her 1 MiB quota", size)
	}
	ts.setConfig(`{"users": {"dana": {"max_size": "100M"}}}`)
	time.Sleep(time.Second) // the server looks at the file twice a second
	if r := e.runEnv(dana, "backup", src); r.code != 0 {
		t.Fatalf("backup after raising the quota: exit %d\n%s", r.code, r.stderr)
	}
	if r := e.runEnv(dana, "check", "--read-data"); r.code != 0 || !strings.Contains(r.stdout, "no errors") {
		t.Fatalf("check after raising the quota: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestServeRefusesOpenNoAuth: without users, dj serve only listens on
// loopback unless told --insecure-no-auth.
func TestServeRefusesOpenNoAuth(t *testing.T) {
	e := newEnv(t)
	r := e.run("serve", "--path", filepath.Join(e.dir, "served"), "--listen", "0.0.0.0:0")
	if r.code == 0 || !strings.Contains(r.stderr, "--htpasswd-file") {
		t.Fatalf("serve without auth on 0.0.0.0: exit %d\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
	r = e.run("serve", "--path", filepath.Join(e.dir, "served"), "--private-repos")
	if r.code == 0 {
		t.Fatal("--private-repos without users was accepted")
	}
	oneLine(t, r)
}

// startServeWith starts `dj serve` with args and waits until ready()
// says it answers.
func startServeWith(e *env, ready func() bool, args ...string) {
	e.t.Helper()
	var log bytes.Buffer
	cmd := exec.Command(e.bin, append([]string{"serve"}, args...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); !ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("dj serve did not start:\n%s", log.String())
		}
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key (PEM).
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dj serve test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeTLS: restic 0.14 with --cacert against dj serve --tls; plain
// HTTP and TLS 1.2 are refused when the server wants 1.3.
func TestServeTLS(t *testing.T) {
	requireRestic(t)
	e := newEnv(t)
	certFile, keyFile, pool := selfSigned(t, e.dir)
	addr := freePort(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	startServeWith(e, func() bool {
		resp, err := hc.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}, "--path", filepath.Join(e.dir, "served"), "--listen", addr, "--tls", "--tls-cert", certFile, "--tls-key", keyFile, "--tls-min-version", "1.3")
	src := filepath.Join(e.dir, "src")
	randomFile(t, filepath.Join(src, "f"), 200_000, 5)
	repo := "rest:https://" + addr + "/r1"
	resticMust(e, repo, "--cacert", certFile, "init")
	resticMust(e, repo, "--cacert", certFile, "backup", src)
	if out := resticMust(e, repo, "--cacert", certFile, "check", "--read-data"); !strings.Contains(out, "no errors were found") {
		t.Fatalf("restic check over TLS: %s", out)
	}
	if out, err := serveRestic(e, repo, "snapshots"); err == nil {
		t.Errorf("restic without --cacert trusted a self-signed certificate:\n%s", out)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered on a TLS server")
		}
		resp.Body.Close()
	}
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12}}}
	if resp, err := old.Get("https://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("TLS 1.2 accepted with --tls-min-version 1.3")
	}
	if r := e.run("serve", "--path", e.dir, "--tls", "--tls-cert", filepath.Join(e.dir, "nope.pem"), "--tls-key", keyFile); r.code == 0 {
		t.Error("a missing certificate was accepted")
	} else {
		oneLine(t, r)
	}
}

// TestServeUnixSocket: dj serve on a Unix socket (behind a reverse proxy),
// with dj's client reaching it through a tiny proxy of the test's own.
func TestServeUnixSocket(t *testing.T) {
	e := newEnv(t)
	sock := filepath.Join(e.dir, "dj.sock")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	startServeWith(e, func() bool {
		resp, err := hc.Get("http://unix/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}, "--path", filepath.Join(e.dir, "served"), "--listen", "unix:"+sock)
	// The reverse proxy: TCP on loopback to the socket.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := &http.Server{Handler: &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.Out.URL.Scheme, r.Out.URL.Host = "http", "unix" },
		Transport: hc.Transport,
	}}
	go proxy.Serve(ln)
	t.Cleanup(func() { proxy.Close() })
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:http://"+ln.Addr().String()+"/r1/")
	src := filepath.Join(e.dir, "src")
	randomFile(t, filepath.Join(src, "f"), 200_000, 6)
	e.must("init")
	e.must("backup", src)
	if out := e.must("check", "--read-data"); !strings.Contains(out, "no errors") {
		t.Fatalf("check through the socket: %s", out)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "served", "r1", "config")); err != nil {
		t.Fatal(err)
	}
}

// TestServeMetrics: --prometheus counts dj's requests per repository;
// --access-log writes one JSON line per request.
func TestServeMetrics(t *testing.T) {
	e := newEnv(t)
	accessLog := filepath.Join(e.dir, "access.log")
	url := e.serve("--prometheus", "--prometheus-no-auth", "--access-log", accessLog)
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url+"team/r1/")
	src := filepath.Join(e.dir, "src")
	randomFile(t, filepath.Join(src, "f"), 100_000, 7)
	e.must("init")
	e.must("backup", src)
	resp, err := http.Get(url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	for _, want := range []string{
		`dj_serve_requests_total{repo="/team/r1/",user="",method="POST",code="200"}`,
		`dj_serve_received_bytes_total{repo="/team/r1/",user=""}`,
		`dj_serve_request_duration_seconds_count{repo="/team/r1/",user=""}`,
	} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, body.String())
		}
	}
	logData, err := os.ReadFile(accessLog)
	if err != nil {
		t.Fatal(err)
	}
	posts := 0
	for _, line := range strings.Split(strings.TrimSpace(string(logData)), "\n") {
		var entry struct {
			Repo, Method, Path string
			Status             int
			BytesIn            int64 `json:"bytes_in"`
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		if entry.Method == "POST" && entry.Repo == "/team/r1/" && entry.Status == 200 && strings.HasPrefix(entry.Path, "/team/r1/") {
			posts++
		}
	}
	if posts < 3 {
		t.Errorf("access log has %d successful POSTs to /team/r1/:\n%s", posts, logData)
	}
}

// TestServeGracefulShutdown: an upload in flight when SIGTERM comes is
// finished and stored; the server then exits 0.
func TestServeGracefulShutdown(t *testing.T) {
	e := newEnv(t)
	addr := freePort(t)
	root := filepath.Join(e.dir, "served")
	var log bytes.Buffer
	cmd := exec.Command(e.bin, "serve", "--path", root, "--listen", addr)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	base := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dj serve did not start:\n%s", log.String())
		}
	}
	resp, err := http.Post(base+"/r1/?create=true", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("create: %v %v", resp, err)
	}
	resp.Body.Close()
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(8)).Read(data)
	sum := sha256.Sum256(data)
	name := hex.EncodeToString(sum[:])
	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", base+"/r1/data/"+name, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(data))
	done := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	if _, err := pw.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	// The upload is in flight once the server stores it in a temporary
	// file; before that the connection may still wait in the listener's
	// backlog, and a server that stops refuses it (CI's 2-core machine
	// under load sent the signal that early).
	dataDir := filepath.Join(root, "r1", "data")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if m, _ := filepath.Glob(filepath.Join(dataDir, ".new*")); len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upload did not reach the server:\n%s", log.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := pw.Write(data[len(data)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-done; code != http.StatusOK {
		t.Fatalf("upload in flight at SIGTERM: %d\n%s", code, log.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dj serve after SIGTERM: %v\n%s", err, log.String())
	}
	got, err := os.ReadFile(filepath.Join(root, "r1", "data", name[:2], name))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the upload in flight was not stored whole: %d bytes, %v", len(got), err)
	}
}
