package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
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
	if out := e.must("snapshots", "--json"); strings.Count(out, `"tree"`) != 1 {
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
