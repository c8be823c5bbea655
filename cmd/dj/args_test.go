package main

import (
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestInterspersed(t *testing.T) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	cases := []struct{ in, want string }{
		{"dj restore latest --target /x", "dj restore --target /x latest"},
		{"dj -r /repo restore latest -t /x --verify", "dj -r /repo restore -t /x --verify latest"},
		{"dj backup /a --tag x /b -n", "dj backup --tag x -n /a /b"},
		{"dj backup --stdin-from-command -- sh -c exit", "dj backup --stdin-from-command -- sh -c exit"},
		{"dj key add --new-password-file f", "dj key add --new-password-file f"},
		{"dj snapshots", "dj snapshots"},
		{"dj snapshots --json --latest 1", "dj --json snapshots --latest 1"},
		{"dj key list --json", "dj --json key list"},
		{"dj key add --json --user ann", "dj --json key add --user ann"},
		{"dj backup -r /r /src --json -q", "dj -r /r --json -q backup /src"},
		{"dj unknown a --b", "dj unknown a --b"},
		// Two spellings of one flag become one (urfave/cli refuses mixed ones).
		{"dj backup -e a /src --exclude b", "dj backup --exclude a --exclude b /src"},
		{"dj backup -e a -e b /src", "dj backup -e a -e b /src"},
		{"dj restore latest -t /x --exclude=a -e b", "dj restore -t /x --exclude=a --exclude b latest"},
	}
	for _, c := range cases {
		got := interspersed(app, strings.Fields(c.in))
		if !reflect.DeepEqual(got, strings.Fields(c.want)) {
			t.Errorf("%s: got %v", c.in, got)
		}
	}
}

func TestVerboseCount(t *testing.T) {
	cases := []struct {
		in   string
		want string // the reordered args
		n    int    // the verbosity a command sees
	}{
		{"dj backup /a", "dj backup /a", 0},
		{"dj -v backup /a", "dj -v backup /a", 1},
		{"dj -vv backup /a", "dj -v -v backup /a", 2},
		{"dj backup -vv /a", "dj -v -v backup /a", 2},
		{"dj backup /a -v --verbose", "dj -v -v backup /a", 2},
		{"dj --verbose=2 backup /a", "dj -v -v backup /a", 2},
		{"dj backup --verbose=3 /a", "dj -v -v -v backup /a", 3},
		{"dj backup --verbose=0 /a", "dj backup /a", 0},
		{"dj backup --verbose=true /a", "dj -v backup /a", 1},
		{"dj backup /a -- -vv", "dj backup /a -- -vv", 0},
		{"dj backup --tag -vv /a", "dj backup --tag -vv /a", 0},
	}
	for _, c := range cases {
		got := interspersed(newApp(strings.NewReader(""), io.Discard, io.Discard), strings.Fields(c.in))
		if !reflect.DeepEqual(got, strings.Fields(c.want)) {
			t.Errorf("%s: got %v, want %s", c.in, got, c.want)
			continue
		}
		// The count urfave/cli makes of it.
		app := newApp(strings.NewReader(""), io.Discard, io.Discard)
		app.HideVersion = true // main gives --version no -v alias; the test keeps the default flag out
		n := -1
		for _, cmd := range app.Commands {
			if cmd.Name == "backup" {
				cmd.Action = func(ctx *cli.Context) error { n = newEnv(ctx).verbosity; return nil }
			}
		}
		if err := app.Run(got); err != nil || n != c.n {
			t.Errorf("%s: verbosity %d (%v), want %d", c.in, n, err, c.n)
		}
	}
}
