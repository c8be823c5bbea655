package rest_test

import (
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"dj/backend/rest"
)

// TestMultiProxyAuth: with ProxyAuthHeader the user comes from the header
// an authenticating proxy sets (private repositories follow it); without
// the header a request is refused, or needs a password when there are
// users.
func TestMultiProxyAuth(t *testing.T) {
	root := t.TempDir()
	h := newMulti(t, rest.MultiOptions{Root: root, PrivateRepos: true, ProxyAuthHeader: "X-Forwarded-User"})
	ann := map[string]string{"X-Forwarded-User": "ann"}
	bob := map[string]string{"X-Forwarded-User": "bob"}
	if w := request(h, "POST", "/ann/laptop/?create=true", nil, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("no header: %d, want 401", w.Code)
	}
	if w := request(h, "POST", "/ann/laptop/?create=true", nil, ann); w.Code != http.StatusOK {
		t.Fatalf("ann creates her repository: %d", w.Code)
	}
	if w := request(h, "POST", "/ann/laptop/config", []byte("cfg"), ann); w.Code != http.StatusOK {
		t.Fatalf("ann saves her config: %d", w.Code)
	}
	if w := request(h, "GET", "/ann/laptop/config", nil, bob); w.Code != http.StatusForbidden {
		t.Errorf("bob reads ann's config: %d, want 403", w.Code)
	}

	// With users too, a request without the header needs a password.
	pw := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, pw, "carl", "c")
	h = newMulti(t, rest.MultiOptions{Root: root, HtpasswdFile: pw, PrivateRepos: true, ProxyAuthHeader: "X-Forwarded-User"})
	if w := request(h, "POST", "/carl/?create=true", nil, withAuth("carl", "c")); w.Code != http.StatusOK {
		t.Errorf("carl with his password: %d", w.Code)
	}
	if w := request(h, "POST", "/carl/?create=true", nil, withAuth("carl", "x")); w.Code != http.StatusUnauthorized {
		t.Errorf("carl with a wrong password: %d, want 401", w.Code)
	}
}

// TestMultiGroupAccessible: with GroupAccessible the repository's
// directories and files can be reached by their group.
func TestMultiGroupAccessible(t *testing.T) {
	old := syscall.Umask(0o002)
	defer syscall.Umask(old)
	for _, group := range []bool{false, true} {
		root := t.TempDir()
		h := newMulti(t, rest.MultiOptions{Root: root, GroupAccessible: group})
		data := []byte("a pack")
		id := hashName(data)
		if w := request(h, "POST", "/r/?create=true", nil, nil); w.Code != http.StatusOK {
			t.Fatalf("create: %d", w.Code)
		}
		if w := request(h, "POST", "/r/data/"+id, data, nil); w.Code != http.StatusOK {
			t.Fatalf("save: %d", w.Code)
		}
		dir, err := os.Stat(filepath.Join(root, "r", "data", id[:2]))
		if err != nil {
			t.Fatal(err)
		}
		file, err := os.Stat(filepath.Join(root, "r", "data", id[:2], id))
		if err != nil {
			t.Fatal(err)
		}
		wantDir, wantFile := os.FileMode(0o700), os.FileMode(0o400)
		if group {
			wantDir, wantFile = 0o770, 0o440
		}
		if dir.Mode().Perm() != wantDir || file.Mode().Perm() != wantFile {
			t.Errorf("group accessible %v: directory %v, file %v; want %v, %v", group, dir.Mode().Perm(), file.Mode().Perm(), wantDir, wantFile)
		}
	}
}
