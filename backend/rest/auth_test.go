package rest_test

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"dj/backend"
	"dj/backend/mem"
	"dj/backend/rest"
)

func TestAuth(t *testing.T) {
	ctx := t.Context()
	bc, err := bcrypt.GenerateFromPassword([]byte("bpass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	sha := sha1.Sum([]byte("spass"))
	htpasswd := fmt.Sprintf("# users\n\nplain:ppass\nbc:%s\nsha:{SHA}%s\n", bc, base64.StdEncoding.EncodeToString(sha[:]))
	users, err := rest.ReadHtpasswd(strings.NewReader(htpasswd))
	if err != nil {
		t.Fatal(err)
	}
	be := mem.New()
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("c")); err != nil {
		t.Fatal(err)
	}
	url := serve(t, be, rest.ServerOptions{Users: users})
	host := strings.TrimPrefix(url, "http://")
	tests := []struct {
		userinfo string
		ok       bool
	}{
		{"", false},
		{"plain:ppass@", true},
		{"plain:wrong@", false},
		{"plain:@", false},
		{"bc:bpass@", true},
		{"bc:bpas@", false},
		{"sha:spass@", true},
		{"sha:spas@", false},
		{"nobody:ppass@", false},
	}
	for _, tc := range tests {
		for i := 0; i < 2; i++ { // the second time from the cache
			c, err := rest.Open(ctx, "http://"+tc.userinfo+host, nil)
			if tc.ok && err != nil {
				t.Errorf("Open as %q: %v", tc.userinfo, err)
			}
			if !tc.ok && (!errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "user and password")) {
				t.Errorf("Open as %q: %v, want an authentication error", tc.userinfo, err)
			}
			if c != nil {
				if strings.Contains(c.Location(), "pass") {
					t.Errorf("Location %q shows the password", c.Location())
				}
				c.Close()
			}
		}
	}
}

func TestReadHtpasswd(t *testing.T) {
	bad := []string{
		"nocolon\n",
		":pass\n",
		"a/b:pass\n",
		"u:$apr1$salt$hash\n",
		"u:$6$salt$hash\n",
		"u:$2y$10$short\n",
		"u:a\nu:b\n",
		"u:\n",
	}
	for _, in := range bad {
		if _, err := rest.ReadHtpasswd(strings.NewReader(in)); err == nil {
			t.Errorf("ReadHtpasswd(%q): no error", in)
		}
	}
	users, err := rest.ReadHtpasswd(strings.NewReader("a:x:y\r\n  # comment\nb:z\n"))
	if err != nil || users["a"] != "x:y" || users["b"] != "z" || len(users) != 2 {
		t.Errorf("ReadHtpasswd: %v, %v", users, err)
	}
	empty := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(empty, []byte("# nobody\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := rest.LoadHtpasswd(empty); err == nil {
		t.Errorf("LoadHtpasswd of a file without users: no error")
	}
	if _, err := rest.LoadHtpasswd(empty + ".missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadHtpasswd of a missing file: %v", err)
	}
}
