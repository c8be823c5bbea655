package rest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"dj/backend/rest"
)

// treeState records every file under dir (path -> size, mode, mtime and
// content hash), to show that a refused request changed nothing.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := p + " " + fi.Mode().String()
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + fi.ModTime().String() + " " + hex.EncodeToString(sum[:])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func newMulti(t *testing.T, opts rest.MultiOptions) http.Handler {
	t.Helper()
	opts.Logf = t.Logf
	h, err := rest.NewMultiServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func withAuth(user, pass string) map[string]string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	return map[string]string{"Authorization": r.Header.Get("Authorization")}
}

func TestMultiRepositories(t *testing.T) {
	root := t.TempDir()
	h := newMulti(t, rest.MultiOptions{Root: root})
	data := []byte("a pack")
	id := hashName(data)
	for _, repo := range []string{"/r1/", "/ann/laptop/", "/a/b/c/"} {
		if w := request(h, "GET", repo+"config", nil, nil); w.Code != http.StatusNotFound {
			t.Errorf("GET %sconfig before init: %d, want 404", repo, w.Code)
		}
		if w := request(h, "GET", repo+"keys/", nil, nil); w.Code != http.StatusNotFound {
			t.Errorf("GET %skeys/ before init: %d, want 404", repo, w.Code)
		}
		if w := request(h, "POST", repo+"data/"+id, data, nil); w.Code != http.StatusNotFound {
			t.Errorf("POST %sdata/ before init: %d, want 404", repo, w.Code)
		}
		if w := request(h, "POST", repo+"?create=true", nil, nil); w.Code != http.StatusOK {
			t.Fatalf("create %s: %d %s", repo, w.Code, w.Body)
		}
		if fi, err := os.Stat(filepath.Join(root, repo, "data", id[:2])); err != nil || !fi.IsDir() {
			t.Errorf("create %s: no layout: %v", repo, err)
		}
		if w := request(h, "POST", repo+"config", []byte("cfg "+repo), nil); w.Code != http.StatusOK {
			t.Errorf("POST %sconfig: %d", repo, w.Code)
		}
		if w := request(h, "POST", repo+"data/"+id, data, nil); w.Code != http.StatusOK {
			t.Errorf("POST %sdata/: %d", repo, w.Code)
		}
		if w := request(h, "POST", repo+"data/"+strings.Repeat("0", 64), data, nil); w.Code != http.StatusBadRequest {
			t.Errorf("POST %sdata/ with the wrong hash: %d, want 400", repo, w.Code)
		}
		w := request(h, "GET", repo+"data/", nil, map[string]string{"Accept": "application/vnd.x.restic.rest.v2"})
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"name":"`+id+`","size":6`) {
			t.Errorf("v2 listing of %sdata/: %d %s", repo, w.Code, w.Body)
		}
		w = request(h, "GET", repo+"data/", nil, nil)
		if w.Code != http.StatusOK || w.Body.String() != `["`+id+`"]` {
			t.Errorf("v1 listing of %sdata/: %d %s", repo, w.Code, w.Body)
		}
		w = request(h, "GET", repo+"config", nil, nil)
		if w.Code != http.StatusOK || w.Body.String() != "cfg "+repo {
			t.Errorf("GET %sconfig: %d %q", repo, w.Code, w.Body)
		}
		if w := request(h, "DELETE", repo+"data/"+id, nil, nil); w.Code != http.StatusOK {
			t.Errorf("DELETE %sdata/: %d", repo, w.Code)
		}
	}
	// The repository at the root of the tree, as before.
	if w := request(h, "POST", "/?create=true", nil, nil); w.Code != http.StatusOK {
		t.Errorf("create /: %d", w.Code)
	}
	if w := request(h, "POST", "/config", []byte("root"), nil); w.Code != http.StatusOK {
		t.Errorf("POST /config: %d", w.Code)
	}
	if b, err := os.ReadFile(filepath.Join(root, "config")); err != nil || string(b) != "root" {
		t.Errorf("root config: %q %v", b, err)
	}
	// No repository inside another.
	if w := request(h, "POST", "/r1/sub/?create=true", nil, nil); w.Code != http.StatusBadRequest {
		t.Errorf("create inside /r1/: %d, want 400", w.Code)
	}
}

func TestMultiPathTricks(t *testing.T) {
	root := t.TempDir()
	h := newMulti(t, rest.MultiOptions{Root: root})
	if w := request(h, "POST", "/r1/?create=true", nil, nil); w.Code != http.StatusOK {
		t.Fatal(w.Code)
	}
	request(h, "POST", "/r1/config", []byte("cfg"), nil)
	before := treeState(t, root)
	id := strings.Repeat("0", 64)
	for _, target := range []string{
		"/r1/../r1/config", "/../config", "/r1/data/..%2f..%2fconfig", "/r1%2fconfig",
		"/r1//config", "//r1/config", "/r1/./config", "/r1/%00/config", "/r1/.hidden/?create=true",
		"/r1/data/../../x/?create=true", "/r1%2f..%2fx/?create=true", "/x%00/?create=true",
		"/r1/data/00/" + id, "/r1/keys/" + id + "/", "/r1/config/?create=true", "/r1/data/" + id + "%2f",
	} {
		for _, method := range []string{"GET", "POST", "DELETE"} {
			if w := request(h, method, target, []byte("x"), nil); w.Code != http.StatusBadRequest && w.Code != http.StatusNotFound {
				t.Errorf("%s %s: %d, want 400 or 404", method, target, w.Code)
			}
		}
	}
	if after := treeState(t, root); after != before {
		t.Errorf("path tricks changed the tree:\n%s\n---\n%s", before, after)
	}
}

func writeHtpasswd(t *testing.T, path string, users ...string) {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(users); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(users[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(users[i] + ":" + string(h) + "\n")
	}
	if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func TestMultiPrivateRepos(t *testing.T) {
	root := t.TempDir()
	pw := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, pw, "ann", "a", "bob", "b")
	h := newMulti(t, rest.MultiOptions{Root: root, HtpasswdFile: pw, PrivateRepos: true})
	ann, bob := withAuth("ann", "a"), withAuth("bob", "b")
	if w := request(h, "GET", "/healthz", nil, nil); w.Code != http.StatusOK || w.Body.String() != "ok\n" {
		t.Errorf("GET /healthz without credentials: %d %q", w.Code, w.Body)
	}
	if w := request(h, "POST", "/ann/laptop/?create=true", nil, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", w.Code)
	}
	if w := request(h, "POST", "/ann/laptop/?create=true", nil, withAuth("ann", "b")); w.Code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", w.Code)
	}
	for _, repo := range []string{"/ann/laptop/", "/ann/"} {
		if w := request(h, "POST", repo+"?create=true", nil, ann); w.Code != http.StatusOK {
			t.Fatalf("ann creates %s: %d", repo, w.Code)
		}
	}
	data := []byte("ann's pack")
	id := hashName(data)
	request(h, "POST", "/ann/laptop/config", []byte("cfg"), ann)
	request(h, "POST", "/ann/laptop/data/"+id, data, ann)
	before := treeState(t, root)
	for _, tc := range []struct{ method, target string }{
		{"GET", "/ann/laptop/config"}, {"HEAD", "/ann/laptop/config"}, {"GET", "/ann/laptop/data/"},
		{"GET", "/ann/laptop/data/" + id}, {"DELETE", "/ann/laptop/data/" + id}, {"POST", "/ann/laptop/config"},
		{"DELETE", "/ann/laptop/config"}, {"POST", "/ann/laptop/?create=true"}, {"POST", "/ann/x/?create=true"},
		{"GET", "/config"}, {"POST", "/?create=true"}, {"POST", "/annex/?create=true"},
	} {
		if w := request(h, tc.method, tc.target, []byte("evil"), bob); w.Code != http.StatusForbidden {
			t.Errorf("bob %s %s: %d, want 403", tc.method, tc.target, w.Code)
		}
	}
	if after := treeState(t, root); after != before {
		t.Errorf("bob changed ann's tree:\n%s\n---\n%s", before, after)
	}
	if w := request(h, "GET", "/ann/laptop/data/"+id, nil, ann); w.Code != http.StatusOK {
		t.Errorf("ann reads her pack: %d", w.Code)
	}

	// The htpasswd file is read again when it changes: bob goes, cat comes.
	time.Sleep(10 * time.Millisecond)
	writeHtpasswd(t, pw, "ann", "a2", "cat", "c")
	time.Sleep(600 * time.Millisecond)
	if w := request(h, "POST", "/cat/?create=true", nil, withAuth("cat", "c")); w.Code != http.StatusOK {
		t.Errorf("cat after the reload: %d", w.Code)
	}
	if w := request(h, "GET", "/bob/config", nil, bob); w.Code != http.StatusUnauthorized {
		t.Errorf("bob after the reload: %d, want 401", w.Code)
	}
	if w := request(h, "GET", "/ann/laptop/config", nil, ann); w.Code != http.StatusUnauthorized {
		t.Errorf("ann's old password after the reload: %d, want 401", w.Code)
	}
	// A broken file keeps the previous users.
	if err := os.WriteFile(pw, []byte("no colon here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if w := request(h, "GET", "/ann/laptop/config", nil, withAuth("ann", "a2")); w.Code != http.StatusOK {
		t.Errorf("ann after a broken htpasswd: %d, want 200", w.Code)
	}
}

func TestMultiNeedsUsersForPrivateRepos(t *testing.T) {
	if _, err := rest.NewMultiServer(rest.MultiOptions{Root: t.TempDir(), PrivateRepos: true}); err == nil {
		t.Error("private repositories without users were accepted")
	}
}

func TestMultiMetrics(t *testing.T) {
	root := t.TempDir()
	pw := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, pw, "ann", "a", "metrics", "m")
	h := newMulti(t, rest.MultiOptions{Root: root, HtpasswdFile: pw, PrivateRepos: true, Metrics: true})
	ann := withAuth("ann", "a")
	request(h, "POST", "/ann/pc/?create=true", nil, ann)
	data := []byte("twelve bytes")
	request(h, "POST", "/ann/pc/data/"+hashName(data), data, ann)
	request(h, "GET", "/ann/pc/data/"+hashName(data), nil, ann)
	request(h, "GET", "/ann/pc/config", nil, ann)
	request(h, "GET", "/ann/nothing/config", nil, ann)
	request(h, "GET", "/ann/pc/config", nil, nil)
	if w := request(h, "GET", "/metrics", nil, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("metrics without credentials: %d", w.Code)
	}
	if w := request(h, "GET", "/metrics", nil, ann); w.Code != http.StatusForbidden {
		t.Errorf("metrics for ann with private repositories: %d", w.Code)
	}
	w := request(h, "GET", "/metrics", nil, withAuth("metrics", "m"))
	body := w.Body.String()
	for _, want := range []string{
		`dj_serve_requests_total{repo="/ann/pc/",user="ann",method="POST",code="200"} 2`,
		`dj_serve_requests_total{repo="/ann/pc/",user="ann",method="GET",code="404"} 1`,
		`dj_serve_received_bytes_total{repo="/ann/pc/",user="ann"} 12`,
		`dj_serve_sent_bytes_total{repo="/ann/pc/",user="ann"} 22`, // 12 + "Not Found\n"
		`dj_serve_request_duration_seconds_bucket{repo="/ann/pc/",user="ann",le="+Inf"} 4`,
		`dj_serve_request_duration_seconds_count{repo="/ann/pc/",user="ann"} 4`,
		`dj_serve_requests_total{repo="",user="",method="GET",code="401"} 1`,
		"# TYPE dj_serve_request_duration_seconds histogram",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "nothing") {
		t.Errorf("a path without a repository got its own series:\n%s", body)
	}
}
