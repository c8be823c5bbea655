package sftp

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	tests := []struct {
		loc                    string
		opts                   map[string]string
		user, host, port, path string
		argv                   string
		err                    string
	}{
		{loc: "sftp:user@host:/srv/repo", user: "user", host: "host", path: "/srv/repo", argv: "ssh user@host -s sftp"},
		{loc: "sftp:host:repo", host: "host", path: "repo", argv: "ssh host -s sftp"},
		{loc: "sftp:host:/a:b", host: "host", path: "/a:b", argv: "ssh host -s sftp"},
		{loc: "sftp:u@[::1]:/r", user: "u", host: "::1", path: "/r", argv: "ssh u@::1 -s sftp"},
		{loc: "sftp://user@host:2222//abs/path", user: "user", host: "host", port: "2222", path: "/abs/path", argv: "ssh -p 2222 user@host -s sftp"},
		{loc: "sftp://user@host/rel/path", user: "user", host: "host", path: "rel/path", argv: "ssh user@host -s sftp"},
		{loc: "sftp://host//r", opts: map[string]string{OptionArgs: "-F '/my config' -i key"}, host: "host", path: "/r", argv: "ssh -F /my config -i key host -s sftp"},
		{loc: "sftp:host:/r", opts: map[string]string{OptionCommand: `ssh -p 22 "u@h" -s sftp`}, host: "host", path: "/r", argv: "ssh -p 22 u@h -s sftp"},
		{loc: "sftp:host", err: "no path after the host"},
		{loc: "sftp:host:", err: "no repository path"},
		{loc: "sftp://host/", err: "no repository path"},
		{loc: "sftp:-oProxyCommand=x:/r", err: "may not start with '-'"},
		{loc: "sftp://u:pw@host//r", err: "password in the location"},
		{loc: "sftp://host:99999//r", err: "invalid port"},
		{loc: "sftp:host:/r", opts: map[string]string{OptionConnections: "0"}, err: "positive whole number"},
	}
	for _, tc := range tests {
		cfg, err := ParseLocation(tc.loc, tc.opts)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.loc, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.loc, err)
			continue
		}
		if cfg.User != tc.user || cfg.Host != tc.host || cfg.Port != tc.port || cfg.Path != tc.path {
			t.Errorf("%s: got %q %q %q %q", tc.loc, cfg.User, cfg.Host, cfg.Port, cfg.Path)
		}
		argv, err := cfg.command()
		if err != nil || strings.Join(argv, " ") != tc.argv {
			t.Errorf("%s: command %q, %v; want %q", tc.loc, argv, err, tc.argv)
		}
	}
}

func TestSplitCommand(t *testing.T) {
	got, err := splitCommand(`a "b c" 'd "e"' f\ g`)
	if want := []string{"a", "b c", `d "e"`, "f g"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	if _, err := splitCommand(`a "b`); err == nil {
		t.Error("unbalanced quote accepted")
	}
}
