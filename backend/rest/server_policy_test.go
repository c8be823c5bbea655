package rest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/rest"
)

func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func TestMultiAppendOnlyPerUser(t *testing.T) {
	root := t.TempDir()
	etc := t.TempDir()
	pw := filepath.Join(etc, "htpasswd")
	writeHtpasswd(t, pw, "ann", "a", "bob", "b")
	cfg := filepath.Join(etc, "users.json")
	writeFileAtomic(t, cfg, `{"users": {"ann": {"append_only": true}}}`)
	h := newMulti(t, rest.MultiOptions{Root: root, HtpasswdFile: pw, PrivateRepos: true, UsersConfig: cfg})
	ann, bob := withAuth("ann", "a"), withAuth("bob", "b")

	files := map[string][]byte{}
	for _, user := range []struct {
		name string
		auth map[string]string
	}{{"ann", ann}, {"bob", bob}} {
		repo := "/" + user.name + "/pc/"
		if w := request(h, "POST", repo+"?create=true", nil, user.auth); w.Code != http.StatusOK {
			t.Fatalf("create %s: %d", repo, w.Code)
		}
		if w := request(h, "POST", repo+"config", []byte("config"), user.auth); w.Code != http.StatusOK {
			t.Fatalf("config %s: %d", repo, w.Code)
		}
		for _, typ := range []string{"data", "index", "snapshots", "keys", "locks"} {
			data := []byte(typ + " of " + user.name)
			files[repo+typ+"/"+hashName(data)] = data
			if w := request(h, "POST", repo+typ+"/"+hashName(data), data, user.auth); w.Code != http.StatusOK {
				t.Fatalf("POST %s%s: %d", repo, typ, w.Code)
			}
		}
	}
	// Locks may go, even for ann.
	lock := []byte("locks of ann")
	if w := request(h, "DELETE", "/ann/pc/locks/"+hashName(lock), nil, ann); w.Code != http.StatusOK {
		t.Errorf("ann deletes her lock: %d", w.Code)
	}
	before := treeState(t, root)
	type req struct {
		method, target string
		body           []byte
	}
	var reqs []req
	for target, data := range files {
		if !strings.HasPrefix(target, "/ann/") || strings.Contains(target, "/locks/") {
			continue
		}
		name := target[strings.LastIndex(target, "/")+1:]
		dir := target[:strings.LastIndex(target, "/")+1]
		reqs = append(reqs,
			req{"DELETE", target, nil},
			req{"POST", target, []byte("other content")},
			req{"POST", target, data[:len(data)-1]},
			req{"DELETE", dir + "..%2f" + name, nil},
			req{"DELETE", "/ann/pc//" + target[len("/ann/pc/"):], nil},
			req{"DELETE", "/ann/x/../pc/" + target[len("/ann/pc/"):], nil},
			req{"DELETE", "/ann/pc/%2e%2e/pc/" + target[len("/ann/pc/"):], nil},
			req{"DELETE", target + "%00", nil},
		)
	}
	reqs = append(reqs,
		req{"DELETE", "/ann/pc/config", nil},
		req{"POST", "/ann/pc/config", []byte("evil")},
		req{"POST", "/ann/pc/config", []byte("config")},
		req{"POST", "/ann/pc/?create=true", nil},
		req{"DELETE", "/ann/pc/", nil},
		req{"DELETE", "/ann/pc/data/", nil},
	)
	for _, rq := range reqs {
		w := request(h, rq.method, rq.target, rq.body, ann)
		ok := w.Code == http.StatusForbidden || w.Code == http.StatusBadRequest || w.Code == http.StatusNotFound || w.Code == http.StatusMethodNotAllowed
		if rq.target == "/ann/pc/?create=true" {
			ok = w.Code == http.StatusOK // creating is idempotent and changes nothing
		}
		if !ok {
			t.Errorf("ann %s %s: %d", rq.method, rq.target, w.Code)
		}
	}
	if after := treeState(t, root); after != before {
		t.Errorf("append-only user changed the tree:\n%s\n---\n%s", before, after)
	}
	// A retried upload (same content) succeeds and changes nothing.
	for target, data := range files {
		if strings.HasPrefix(target, "/ann/") && !strings.Contains(target, "/locks/") {
			if w := request(h, "POST", target, data, ann); w.Code != http.StatusOK {
				t.Errorf("ann retries %s: %d", target, w.Code)
			}
		}
	}
	if after := treeState(t, root); after != before {
		t.Errorf("a retried upload changed the tree")
	}
	// Backups still work: new files are stored.
	data := []byte("a new pack of ann")
	if w := request(h, "POST", "/ann/pc/data/"+hashName(data), data, ann); w.Code != http.StatusOK {
		t.Errorf("ann's new pack: %d", w.Code)
	}
	// bob is not append-only.
	for target := range files {
		if strings.HasPrefix(target, "/bob/") {
			if w := request(h, "DELETE", target, nil, bob); w.Code != http.StatusOK {
				t.Errorf("bob DELETE %s: %d", target, w.Code)
			}
		}
	}
	// The config file is read again: now bob is append-only too.
	time.Sleep(10 * time.Millisecond)
	writeFileAtomic(t, cfg, `{"users": {"ann": {"append_only": true}, "bob": {"append_only": true}}}`)
	time.Sleep(600 * time.Millisecond)
	if w := request(h, "DELETE", "/bob/pc/config", nil, bob); w.Code != http.StatusForbidden {
		t.Errorf("bob after the reload: %d, want 403", w.Code)
	}
}

func TestMultiQuota(t *testing.T) {
	root := t.TempDir()
	etc := t.TempDir()
	pw := filepath.Join(etc, "htpasswd")
	writeHtpasswd(t, pw, "ann", "a", "bob", "b")
	cfg := filepath.Join(etc, "users.json")
	writeFileAtomic(t, cfg, `{"users": {"ann": {"max_size": 100}}, "repos": {"bob/small": {"max_size": "1K"}}}`)
	h := newMulti(t, rest.MultiOptions{Root: root, HtpasswdFile: pw, PrivateRepos: true, UsersConfig: cfg, MaxSize: 10 << 10})
	ann, bob := withAuth("ann", "a"), withAuth("bob", "b")
	for _, r := range []struct {
		repo string
		auth map[string]string
	}{{"/ann/a/", ann}, {"/ann/b/", ann}, {"/bob/small/", bob}, {"/bob/big/", bob}} {
		if w := request(h, "POST", r.repo+"?create=true", nil, r.auth); w.Code != http.StatusOK {
			t.Fatalf("create %s: %d", r.repo, w.Code)
		}
	}
	blob := func(i, n int) []byte {
		return []byte(fmt.Sprintf("%d%s", i, strings.Repeat("x", n-len(fmt.Sprint(i)))))
	}
	put := func(auth map[string]string, repo string, data []byte) int {
		return request(h, "POST", repo+"data/"+hashName(data), data, auth).Code
	}
	// ann: 100 bytes across her repositories.
	if c := put(ann, "/ann/a/", blob(1, 60)); c != http.StatusOK {
		t.Fatalf("ann's first 60 bytes: %d", c)
	}
	before := treeState(t, root)
	w := request(h, "POST", "/ann/b/data/"+hashName(blob(2, 60)), blob(2, 60), ann)
	if w.Code != http.StatusInsufficientStorage || !strings.HasPrefix(w.Body.String(), "repository quota exceeded") {
		t.Fatalf("ann crossing her quota: %d %q, want 507 repository quota exceeded", w.Code, w.Body)
	}
	if after := treeState(t, root); after != before {
		t.Errorf("a refused upload left something:\n%s\n---\n%s", before, after)
	}
	if c := put(ann, "/ann/b/", blob(3, 40)); c != http.StatusOK {
		t.Errorf("ann's last 40 bytes: %d", c)
	}
	// Deleting frees space.
	if w := request(h, "DELETE", "/ann/a/data/"+hashName(blob(1, 60)), nil, ann); w.Code != http.StatusOK {
		t.Fatal(w.Code)
	}
	if c := put(ann, "/ann/b/", blob(2, 60)); c != http.StatusOK {
		t.Errorf("ann after deleting: %d", c)
	}
	// bob/small: 1 KiB; bob/big is bounded by the global 10 KiB only.
	if c := put(bob, "/bob/small/", blob(4, 1000)); c != http.StatusOK {
		t.Errorf("bob's 1000 bytes: %d", c)
	}
	if c := put(bob, "/bob/small/", blob(5, 100)); c != http.StatusInsufficientStorage {
		t.Errorf("bob crossing the repository's quota: %d, want 507", c)
	}
	if c := put(bob, "/bob/big/", blob(6, 8000)); c != http.StatusOK {
		t.Errorf("bob's 8000 bytes elsewhere: %d", c)
	}
	if c := put(bob, "/bob/big/", blob(7, 2000)); c != http.StatusInsufficientStorage {
		t.Errorf("bob crossing the global quota: %d, want 507", c)
	}
	// The admin raises ann's quota: the refused upload now succeeds.
	if c := put(ann, "/ann/a/", blob(8, 60)); c != http.StatusInsufficientStorage {
		t.Fatalf("ann before the raise: %d, want 507", c)
	}
	time.Sleep(10 * time.Millisecond)
	writeFileAtomic(t, cfg, `{"users": {"ann": {"max_size": "1K"}}, "repos": {"bob/small": {"max_size": "1K"}}}`)
	time.Sleep(600 * time.Millisecond)
	if c := put(ann, "/ann/a/", blob(8, 60)); c != http.StatusOK {
		t.Errorf("ann after the raise: %d", c)
	}
	// Figures measured from the disk when a quota first applies.
	h2 := newMulti(t, rest.MultiOptions{Root: root, HtpasswdFile: pw, PrivateRepos: true, UsersConfig: cfg})
	writeFileAtomic(t, cfg, `{"users": {"ann": {"max_size": 200}}}`)
	time.Sleep(600 * time.Millisecond)
	data := blob(9, 50)
	if w := request(h2, "POST", "/ann/a/data/"+hashName(data), data, ann); w.Code != http.StatusInsufficientStorage {
		t.Errorf("a new server measuring ann's 160 bytes: %d, want 507", w.Code)
	}
}

func TestPolicyFile(t *testing.T) {
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`{}`, true},
		{`{"users": {"ann": {"append_only": true, "max_size": "10G"}}, "repos": {"/ann/x/": {"max_size": 5}}}`, true},
		{`{"users": {"ann": {"appendonly": true}}}`, false},
		{`{"users": {"ann": {"max_size": "ten"}}}`, false},
		{`{"users": {"ann": {"max_size": -1}}}`, false},
		{`{"repos": {"a/../b": {}}}`, false},
		{`{"repos": {"a/b": {}, "/a/b/": {}}}`, false},
		{`[1]`, false},
	} {
		_, err := rest.ReadPolicy([]byte(tc.json))
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.json, err)
		}
	}
}

func TestClientQuotaMessage(t *testing.T) {
	h := newMulti(t, rest.MultiOptions{Root: t.TempDir(), MaxSize: 1000})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx := t.Context()
	c, err := rest.Create(ctx, srv.URL+"/r1/", nil)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("y", 2000))
	err = c.Save(ctx, backend.Handle{Type: backend.PackFile, Name: hashName(data)}, data)
	if err == nil || !strings.Contains(err.Error(), "repository quota exceeded (global limit") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Save over the quota: %v, want one line saying repository quota exceeded", err)
	}
	if strings.Contains(err.Error(), "disk is full") {
		t.Errorf("quota reported as a full disk: %v", err)
	}
}

func TestMultiQuotaConcurrent(t *testing.T) {
	root := t.TempDir()
	h := newMulti(t, rest.MultiOptions{Root: root, MaxSize: 1000})
	if w := request(h, "POST", "/r/?create=true", nil, nil); w.Code != http.StatusOK {
		t.Fatal(w.Code)
	}
	codes := make(chan int, 32)
	for i := 0; i < 32; i++ {
		go func() {
			data := []byte(fmt.Sprintf("%03d%s", i, strings.Repeat("z", 97)))
			codes <- request(h, "POST", "/r/data/"+hashName(data), data, nil).Code
		}()
	}
	ok := 0
	for i := 0; i < 32; i++ {
		switch c := <-codes; c {
		case http.StatusOK:
			ok++
		case http.StatusInsufficientStorage:
		default:
			t.Errorf("upload: %d", c)
		}
	}
	if ok != 10 {
		t.Errorf("%d uploads of 100 bytes under a 1000-byte quota succeeded, want 10", ok)
	}
}
