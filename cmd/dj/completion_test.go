package main

import (
	"slices"
	"strings"
	"testing"
)

// complete is asked as the completion scripts ask: the words typed so far
// (a word being typed that starts with "-" last), then
// --generate-bash-completion.
func TestComplete(t *testing.T) {
	withoutPasswordEnv(t)
	cases := []struct {
		words string
		has   []string // among the candidates
		not   []string // never among them
		empty bool     // no candidates at all (the shell completes files)
	}{
		{words: "", has: []string{"backup", "snapshots", "list", "key"}, not: []string{"help", "h"}},
		{words: "-r /repo", has: []string{"backup", "restore"}},
		{words: "key", has: []string{"list", "add", "remove", "passwd"}, not: []string{"help", "h"}},
		{words: "forget ID", empty: true},
		{words: "forget ID --keep-l", has: []string{"--keep-last"}, not: []string{"--keep-daily"}},
		{words: "restore latest --t", has: []string{"--target", "--tag"}, not: []string{"--host"}},
		{words: "restore --t", has: []string{"--target"}},
		{words: "restore latest --target", has: []string{"--target"}},
		{words: "restore latest --target /x --t", has: []string{"--tag"}, not: []string{"--target"}},
		{words: "restore latest --target", empty: false},
		{words: "backup --tag a --t", has: []string{"--tag"}}, // repeatable
		{words: "snapshots --json --j", empty: true},
		{words: "snapshots --j", has: []string{"--json"}},
		{words: "snapshots --host", has: []string{"--host"}},
		{words: "snapshots -", has: []string{"--json", "--repo", "-r", "--help"}},
		{words: "snapshots --", has: []string{"--json"}, not: []string{"-r", "-q"}},
		{words: "--re", has: []string{"--repo", "--repository-file", "--retry-lock"}},
		{words: "completion", has: []string{"bash", "zsh", "fish"}},
		{words: "list", has: []string{"blobs", "packs", "index", "snapshots", "keys", "locks"}},
		{words: "list packs", empty: true},
		{words: "restore --target", empty: false},
		{words: "bogus", empty: true},
		{words: "bogus --x", empty: true},
		{words: "backup -- --t", empty: true},
		{words: "init", empty: true},
		{words: "help", has: []string{"snapshots", "key"}},
		{words: "help key", has: []string{"add", "list"}},
	}
	for _, c := range cases {
		args := append(strings.Fields(c.words), "--generate-bash-completion")
		stdout, stderr, code := runDJ(t, "", args...)
		if code != 0 || stderr != "" {
			t.Errorf("%q: exit %d, stderr %q", c.words, code, stderr)
		}
		got := strings.Fields(stdout)
		for _, g := range got {
			if !strings.HasPrefix(g, "-") && strings.ContainsAny(g, ":'\"") || strings.Contains(stdout, "Usage") {
				t.Errorf("%q: offers error text %q", c.words, stdout)
			}
		}
		if c.empty && len(got) != 0 {
			t.Errorf("%q: offers %v, want nothing", c.words, got)
		}
		for _, h := range c.has {
			if !slices.Contains(got, h) {
				t.Errorf("%q: %v lacks %s", c.words, got, h)
			}
		}
		for _, n := range c.not {
			if slices.Contains(got, n) {
				t.Errorf("%q: %v offers %s", c.words, got, n)
			}
		}
	}
}

// A completion request never runs the command.
func TestCompleteRunsNothing(t *testing.T) {
	withoutPasswordEnv(t)
	dir := t.TempDir()
	_, _, code := runDJ(t, "pw\n", "-r", dir+"/repo", "init", "--generate-bash-completion")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, _, code := runDJ(t, "pw\n", "-r", dir+"/repo", "snapshots"); code != exitNoRepository {
		t.Fatalf("a completion request created a repository (snapshots: exit %d)", code)
	}
}
