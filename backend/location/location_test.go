package location_test

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"dj/backend"
	"dj/backend/connlimit"
	"dj/backend/limit"
	"dj/backend/location"
	"dj/backend/mem"
	"dj/backend/retry"
)

func TestLookup(t *testing.T) {
	r := location.NewBuiltin()
	tests := []struct{ loc, scheme, err string }{
		{"/srv/repo", "local", ""},
		{"./repo", "local", ""},
		{"repo", "local", ""},
		{"local:/srv/repo", "local", ""},
		{"/srv/a:b", "local", ""},
		{"rest:http://host:8000/", "rest", ""},
		{"sftp:user@host:/srv", "sftp", ""},
		{"sftp://host//srv", "sftp", ""},
		{"b2:bucket", "", `repository type "b2" is not supported (use a local directory, rest:URL, sftp:[user@]host:/path, s3:https://host[:port]/bucket[/prefix] or rclone:remote:path)`},
	}
	for _, tc := range tests {
		s, err := r.Lookup(tc.loc)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: %v, want %q", tc.loc, err, tc.err)
			}
			continue
		}
		if err != nil || s.Name != tc.scheme {
			t.Errorf("%s: %q, %v; want %s", tc.loc, s.Name, err, tc.scheme)
		}
	}
}

func TestNewRefusesMistakes(t *testing.T) {
	if _, err := location.New("local", location.Local(), location.Local()); err == nil {
		t.Error("a scheme registered twice is accepted")
	}
	if _, err := location.New("local", location.SFTP()); err == nil {
		t.Error("a missing fallback is accepted")
	}
	if _, err := location.New("x", location.Scheme{Name: "x"}); err == nil {
		t.Error("a scheme without Define is accepted")
	}
}

// memScheme opens one shared mem backend under the name "mem".
func memScheme(be *mem.Backend, remote, paces bool) location.Scheme {
	open := func(ctx context.Context, _ string) (backend.Backend, error) { return be, nil }
	return location.Define(location.Scheme{Name: "mem", Usage: "mem:", Remote: remote, PacesItself: paces},
		func(loc string, _ location.Params) (string, error) { return loc, nil }, open, open)
}

func TestDecorations(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name          string
		remote, paces bool
		params        location.Params
		retry, limit  bool
		conns         bool
	}{
		{name: "plain"},
		{name: "remote", remote: true, retry: true},
		{name: "rates", params: location.Params{Rates: limit.Rates{Upload: 1 << 20}}, limit: true},
		{name: "paces itself", paces: true, params: location.Params{Rates: limit.Rates{Upload: 1 << 20}}},
		{name: "connections", params: location.Params{Options: map[string]string{"connections": "2"}}, conns: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mem.New()
			r, err := location.New("mem", location.Local(), memScheme(m, tc.remote, tc.paces))
			if err != nil {
				t.Fatal(err)
			}
			be, s, err := r.Open(ctx, "mem:x", tc.params, false)
			if err != nil || s.Name != "mem" {
				t.Fatalf("Open: %v, %q", err, s.Name)
			}
			_, isRetry := backend.As[*retry.Backend](be)
			_, isLimit := backend.As[*limit.Backend](be)
			_, isConns := backend.As[*connlimit.Backend](be)
			if isRetry != tc.retry || isLimit != tc.limit || isConns != tc.conns {
				t.Errorf("retry %v limit %v connections %v; want %v %v %v", isRetry, isLimit, isConns, tc.retry, tc.limit, tc.conns)
			}
		})
	}
	r, _ := location.New("mem", memScheme(mem.New(), false, false))
	if _, _, err := r.Open(ctx, "mem:x", location.Params{Options: map[string]string{"connections": "0"}}, false); err == nil ||
		!strings.Contains(err.Error(), "positive whole number") {
		t.Errorf("connections=0: %v", err)
	}
}

func TestLocalThroughRegistry(t *testing.T) {
	ctx := context.Background()
	r := location.NewBuiltin()
	dir := filepath.Join(t.TempDir(), "repo")
	if _, _, err := r.Open(ctx, dir, location.Params{}, false); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a missing repository: %v, want fs.ErrNotExist", err)
	}
	be, _, err := r.Open(ctx, "local:"+dir, location.Params{}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if _, ok := backend.As[backend.Stager](be); !ok {
		t.Error("local's Stager is lost")
	}
}
