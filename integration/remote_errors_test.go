package integration

// Bad input on a REST repository (dj serve): each failure is one line that
// names the location and what to do, with an exit code of its own.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRESTErrors: a wrong password (401), a denied request (403 of an
// append-only server), an unreachable server and a missing repository.
func TestRESTErrors(t *testing.T) {
	e := newEnv(t)
	htpasswd := filepath.Join(e.dir, "htpasswd")
	writeFile(t, htpasswd, []byte("user:secret\n"))
	url := e.serve("--htpasswd", htpasswd, "--append-only")
	host := strings.TrimPrefix(url, "http://")
	good := "rest:http://user:secret@" + host
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY="+good)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "f"), []byte("data"))
	e.must("backup", src)
	out := e.must("snapshots", "--json")
	id := out[strings.Index(out, `"short_id": "`)+13:][:8]

	tests := []struct {
		name string
		repo string
		args []string
		code int
		want string
	}{
		{"wrong password", "rest:http://user:wrong@" + host, []string{"snapshots"}, 21, "check the user and password"},
		{"denied", good, []string{"forget", id}, 23, "403"},
		{"unreachable", "rest:http://" + freePort(t) + "/", []string{"snapshots"}, 20, "check "},
		{"missing repository", "rest:http://user:secret@" + host + "other/", []string{"snapshots"}, 10, "dj init"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := e.runEnv([]string{"DJ_REPOSITORY=" + tc.repo, shortRetry}, tc.args...)
			msg := strings.TrimSpace(r.stderr)
			named := strings.Contains(msg, "rest:http://") && !strings.Contains(msg, "secret")
			if r.code != tc.code || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") || !named {
				t.Errorf("exit %d, stderr %q; want exit %d and one line naming the location (without its password) with %q", r.code, msg, tc.code, tc.want)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
