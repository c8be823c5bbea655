package main

import (
	"io"
	"reflect"
	"strings"
	"testing"
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
	}
	for _, c := range cases {
		got := interspersed(app, strings.Fields(c.in))
		if !reflect.DeepEqual(got, strings.Fields(c.want)) {
			t.Errorf("%s: got %v", c.in, got)
		}
	}
}
