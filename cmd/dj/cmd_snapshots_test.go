package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo/crypto"
	"dj/repo/snapshot"
)

func TestGroupHeader(t *testing.T) {
	cases := []struct {
		k    maint.GroupKey
		want string
	}{
		{maint.GroupKey{}, ""},
		{maint.GroupKey{Hostname: "x"}, "(host [x])"},
		{maint.GroupKey{Tags: []string{"a", "b"}}, "(tags [a, b])"},
		{maint.GroupKey{Hostname: "y", Paths: []string{"/a", "/b"}, Tags: []string{"c"}}, "(host [y], tags [c], paths [/a, /b])"},
	}
	for _, c := range cases {
		if got := groupHeader(c.k); got != c.want {
			t.Errorf("groupHeader(%+v) = %q, want %q", c.k, got, c.want)
		}
	}
}

func TestSnapshotTable(t *testing.T) {
	s := &snapshot.Snapshot{ID: crypto.ID{0xab, 0xcd, 0xef, 0x01}, Time: time.Date(2022, 1, 2, 3, 4, 5, 0, time.Local),
		Hostname: "x", Tags: []string{"a", "b"}, Paths: []string{"/p", "/q"}, Summary: &snapshot.Summary{Counts: snapshot.Counts{TotalBytesProcessed: 3}}}
	cases := []struct {
		compact bool
		reasons [][]string
		want    string
	}{
		{false, nil, `
ID        Time                 Host  Tags  Paths  Size
------------------------------------------------------
abcdef01  2022-01-02 03:04:05  x     a,b   /p     3 B
                                           /q
------------------------------------------------------
`},
		{true, nil, `
ID        Time                 Host  Tags
-----------------------------------------
abcdef01  2022-01-02 03:04:05  x     a
                                     b
-----------------------------------------
`},
		{false, [][]string{{"last snapshot", "daily snapshot"}}, `
ID        Time                 Host  Tags  Reasons         Paths  Size
----------------------------------------------------------------------
abcdef01  2022-01-02 03:04:05  x     a,b   last snapshot   /p     3 B
                                           daily snapshot  /q
----------------------------------------------------------------------
`},
		// restic's compact tables have no reasons either.
		{true, [][]string{{"last snapshot"}}, `
ID        Time                 Host  Tags
-----------------------------------------
abcdef01  2022-01-02 03:04:05  x     a
                                     b
-----------------------------------------
`},
	}
	for _, c := range cases {
		var b bytes.Buffer
		snapshotTable([]*snapshot.Snapshot{s}, c.compact, c.reasons).write(&b)
		if got, want := b.String(), strings.TrimPrefix(c.want, "\n"); got != want {
			t.Errorf("compact %v, reasons %q:\n%s\nwant:\n%s", c.compact, c.reasons, got, want)
		}
	}
}

// TestFilterFlagNames checks restic's short options: -H is --host wherever
// snapshots are filtered, except in forget, where it is --keep-hourly (with
// -l -d -w -m -y for the other counts).
func TestFilterFlagNames(t *testing.T) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	names := func(cmd *cli.Command) map[string]string {
		m := map[string]string{}
		for _, f := range cmd.Flags {
			for _, n := range f.Names() {
				m[n] = f.Names()[0]
			}
		}
		return m
	}
	for _, name := range []string{"snapshots", "restore", "ls", "mount", "stats", "dump"} {
		cmd := findCommand(app.Commands, name)
		if cmd == nil {
			t.Errorf("no command %s", name)
			continue
		}
		if n := names(cmd); n["H"] != "host" || n["tag"] != "tag" || n["path"] != "path" {
			t.Errorf("%s: -H is %q, --tag %q, --path %q; want host, tag, path", name, n["H"], n["tag"], n["path"])
		}
	}
	forget := names(findCommand(app.Commands, "forget"))
	for short, long := range map[string]string{"l": "keep-last", "H": "keep-hourly", "d": "keep-daily", "w": "keep-weekly",
		"m": "keep-monthly", "y": "keep-yearly", "g": "group-by", "c": "compact", "n": "dry-run", "host": "host"} {
		if forget[short] != long {
			t.Errorf("forget -%s is %q, want %q", short, forget[short], long)
		}
	}
	snaps := names(findCommand(app.Commands, "snapshots"))
	if snaps["g"] != "group-by" || snaps["c"] != "compact" {
		t.Errorf("snapshots: -g is %q, -c is %q", snaps["g"], snaps["c"])
	}
}
