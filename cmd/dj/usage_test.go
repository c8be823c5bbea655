package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runDJ runs the CLI in-process with stdin as standard input.
func runDJ(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var so, se bytes.Buffer
	code = run(append([]string{"dj"}, args...), strings.NewReader(stdin), &so, &se)
	return so.String(), se.String(), code
}

// withoutPasswordEnv clears the password and repository variables for
// the test.
func withoutPasswordEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"DJ_PASSWORD", "DJ_PASSWORD_FILE", "DJ_PASSWORD_COMMAND", "DJ_REPOSITORY", "DJ_REPOSITORY_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("DJ_INSECURE_TEST_KDF", "1")
}

// Every mistake in calling dj is one line on stderr, nothing on stdout,
// exit 1.
func TestUsageErrors(t *testing.T) {
	withoutPasswordEnv(t)
	cases := []struct {
		args string
		want string
	}{
		{"bogus", `dj: unknown command "bogus" (see dj --help)`},
		{"snapshot", `dj: unknown command "snapshot": did you mean "snapshots"? (see dj --help)`},
		{"key bogus", `dj: unknown command "key bogus" (see dj key --help)`},
		{"help bogus", `dj: no help for "bogus": unknown command (see dj --help)`},
		{"snapshots --jsn", `dj: unknown flag --jsn: did you mean --json? (see dj snapshots --help)`},
		{"snapshots -jsn", `dj: unknown flag -jsn: did you mean --json? (see dj snapshots --help)`},
		{"restore latest --targt /x", `dj: unknown flag --targt: did you mean --target? (see dj restore --help)`},
		{"forget --keep-dayly 3", `dj: unknown flag --keep-dayly: did you mean --keep-daily? (see dj forget --help)`},
		{"key add --hots x", `dj: unknown flag --hots: did you mean --host? (see dj key add --help)`},
		{"--rpo /r snapshots", `dj: unknown flag --rpo: did you mean --repo? (see dj --help)`},
		{"snapshots --bogus", `dj: unknown flag --bogus (see dj snapshots --help)`},
		{"restore latest --target", `dj: flag --target needs a value (see dj restore --help)`},
		{"forget --keep-last", `dj: flag --keep-last needs a value (see dj forget --help)`},
		{"snapshots --latest=x", `dj: invalid value "x" for flag --latest: parse error (see dj snapshots --help)`},
	}
	for _, c := range cases {
		stdout, stderr, code := runDJ(t, "", strings.Fields(c.args)...)
		if code != exitError || stdout != "" || stderr != c.want+"\n" {
			t.Errorf("dj %s: exit %d\nstdout %q\nstderr %q\nwant   %q", c.args, code, stdout, stderr, c.want+"\n")
		}
	}
}

func TestHelpStillWorks(t *testing.T) {
	withoutPasswordEnv(t)
	for _, args := range []string{"", "--help", "help", "help snapshots", "snapshots --help", "key", "help key add"} {
		stdout, stderr, code := runDJ(t, "", strings.Fields(args)...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "USAGE:") {
			t.Errorf("dj %s: exit %d, stderr %q, stdout:\n%s", args, code, stderr, stdout)
		}
	}
}

func TestNearest(t *testing.T) {
	names := []string{"json", "repo", "target", "tag", "keep-daily", "keep-last", "host"}
	cases := []struct{ in, want string }{
		{"jsn", "json"},
		{"josn", "json"}, // transposition
		{"tar", "target"},
		{"ta", "tag"},
		{"keep-dayly", "keep-daily"},
		{"keep-lats", "keep-last"},
		{"bogus", ""},
		{"x", ""},
	}
	for _, c := range cases {
		if got := nearest(c.in, names); got != c.want {
			t.Errorf("nearest(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if d := editDistance("kitten", "sitting"); d != 3 {
		t.Errorf("editDistance(kitten, sitting) = %d", d)
	}
}

// fusefs's messages carry "dj mount: " already; the mount's log must not
// double it (a busy unmount printed "dj mount: dj mount: unmount ...").
func TestMountLogfOnePrefix(t *testing.T) {
	var b bytes.Buffer
	logf := mountLogf(&b)
	logf("dj mount: %v", "unmount /mnt: device or resource busy")
	logf("fuse: reader loop ended\n")
	want := "dj mount: unmount /mnt: device or resource busy\ndj mount: fuse: reader loop ended\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestPasswordFromStdin(t *testing.T) {
	withoutPasswordEnv(t)
	repoDir := filepath.Join(t.TempDir(), "repo")
	if _, stderr, code := runDJ(t, "pw\n", "-r", repoDir, "init"); code != 0 {
		t.Fatalf("init with the password on stdin: exit %d: %s", code, stderr)
	}
	if stdout, stderr, code := runDJ(t, "pw\n", "-r", repoDir, "snapshots", "--json"); code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Fatalf("snapshots with the password on stdin: exit %d, stdout %q: %s", code, stdout, stderr)
	}
	if _, _, code := runDJ(t, "wrong\n", "-r", repoDir, "snapshots"); code != exitWrongPass {
		t.Fatalf("wrong password on stdin: exit %d, want %d", code, exitWrongPass)
	}
	// Old and new password on two lines, as for restic.
	if _, stderr, code := runDJ(t, "pw\r\nsecond\n", "-r", repoDir, "key", "add", "--user", "ann"); code != 0 {
		t.Fatalf("key add with both passwords on stdin: exit %d: %s", code, stderr)
	}
	if _, stderr, code := runDJ(t, "second", "-r", repoDir, "snapshots"); code != 0 {
		t.Fatalf("second password on stdin without a newline: exit %d: %s", code, stderr)
	}
	_, stderr, code := runDJ(t, "", "-r", repoDir, "snapshots")
	if code != exitError || !strings.Contains(stderr, "no password given") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("empty stdin: exit %d, %q", code, stderr)
	}
	// Standard input that carries data never gives the password.
	_, stderr, code = runDJ(t, "pw\n", "-r", repoDir, "backup", "--stdin", "--stdin-filename", "x")
	if code != exitError || !strings.Contains(stderr, "no password given") || !strings.Contains(stderr, "standard input carries the data") {
		t.Fatalf("backup --stdin without a password: exit %d, %q", code, stderr)
	}
}

func TestReadLine(t *testing.T) {
	r := strings.NewReader("first\r\nsecond\nthird")
	for _, want := range []string{"first", "second", "third", ""} {
		got, err := readLine(r, 100)
		if err != nil || got != want {
			t.Fatalf("readLine = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := readLine(strings.NewReader(strings.Repeat("x", 101)), 100); err == nil {
		t.Fatal("an over-long line was accepted")
	}
}
