package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// requireRestic skips a test that compares with restic when restic is
// not installed or the run is short.
func requireRestic(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("compares with restic: skipped with -short")
	}
	if _, err := exec.LookPath("restic"); err != nil {
		t.Skip("restic is not installed")
	}
}

// restic runs restic on repo with password pw and returns its stdout.
func restic(t *testing.T, repo, pw string, args ...string) string {
	t.Helper()
	cmd := exec.Command("restic", append([]string{"-r", repo}, args...)...)
	cmd.Env = append(cleanEnv(), "RESTIC_PASSWORD="+pw, "RESTIC_CACHE_DIR="+filepath.Join(filepath.Dir(repo), "restic-cache"))
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		t.Fatalf("restic %v: %v\n%s", args, err, se.String())
	}
	return so.String()
}

// noPassword makes a run find no password but what it is given.
var noPassword = []string{"DJ_PASSWORD_FILE="}

// A restic repository opened by dj gets one line that says what it is,
// and exit 10 (there is no dj repository there), whatever the password.
func TestCLIResticRepository(t *testing.T) {
	requireRestic(t)
	e := newEnv(t)
	restic(t, e.repo, "pw", "init")
	for _, pw := range []string{"pw", "wrong"} {
		r := e.runEnv(append(noPassword, "DJ_PASSWORD="+pw), "snapshots")
		if r.code != 10 {
			t.Fatalf("password %s: exit %d, want 10\n%s", pw, r.code, r.stderr)
		}
		oneLine(t, r)
		if !strings.Contains(r.stderr, "is a restic repository, not a dj repository") || strings.Contains(r.stderr, "wrong password") {
			t.Errorf("message: %s", r.stderr)
		}
	}
}

// With no other source and a standard input that is not a terminal, the
// password is its first line (`echo pw | dj snapshots`), except when
// standard input carries the data.
func TestCLIPasswordFromStdin(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	r := e.runStdin(e.password+"\n", noPassword, "snapshots", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("password on stdin: exit %d, %q\n%s", r.code, r.stdout, r.stderr)
	}
	r = e.runStdin("wrong\n", noPassword, "snapshots")
	if r.code != 12 {
		t.Fatalf("wrong password on stdin: exit %d\n%s", r.code, r.stderr)
	}
	r = e.runStdin("", noPassword, "snapshots")
	if r.code != 1 || !strings.Contains(r.stderr, "no password given") {
		t.Fatalf("empty stdin: exit %d\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
	r = e.runStdin(e.password+"\n", noPassword, "backup", "--stdin", "--stdin-filename", "x")
	if r.code != 1 || !strings.Contains(r.stderr, "standard input carries the data") {
		t.Fatalf("backup --stdin with no password: exit %d\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
	if out := e.must("snapshots", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("backup --stdin took its password from the data: %s", out)
	}
	// Both passwords of `key add` on standard input, as with restic.
	r = e.runStdin(e.password+"\nsecond\n", noPassword, "key", "add")
	if r.code != 0 {
		t.Fatalf("key add from stdin: exit %d\n%s", r.code, r.stderr)
	}
	if r := e.runStdin("second\n", noPassword, "snapshots"); r.code != 0 {
		t.Fatalf("the added password does not open: exit %d\n%s", r.code, r.stderr)
	}
}

// Mistakes in calling dj: one line on stderr, nothing on stdout, exit 1.
func TestCLIUsageErrors(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `dj: unknown command "bogus" (see dj --help)`},
		{[]string{"snapshots", "--jsn"}, `dj: unknown flag --jsn: did you mean --json? (see dj snapshots --help)`},
		{[]string{"restore", "latest", "--taget", "/x"}, `dj: unknown flag --taget: did you mean --target? (see dj restore --help)`},
		{[]string{"restore", "latest", "--target"}, `dj: flag --target needs a value (see dj restore --help)`},
	}
	for _, c := range cases {
		r := e.run(c.args...)
		if r.code != 1 || r.stdout != "" || r.stderr != c.want+"\n" {
			t.Errorf("dj %v: exit %d\nstdout %q\nstderr %q\nwant   %q", c.args, r.code, r.stdout, r.stderr, c.want)
		}
	}
	// A repository path that is a file is no repository (exit 10).
	file := filepath.Join(e.dir, "file")
	writeFile(t, file, []byte("x"))
	r := e.run("-r", file, "snapshots")
	if r.code != 10 || strings.Contains(r.stderr, "not a directory") && strings.Contains(r.stderr, "stat ") {
		t.Fatalf("repository path is a file: exit %d\n%s", r.code, r.stderr)
	}
	oneLine(t, r)
}

// The bash completion script, run by bash as on <TAB>: flags complete
// after positional arguments, and no error text is ever offered.
func TestCLIBashCompletion(t *testing.T) {
	requireCmd(t, "bash")
	e := newEnv(t)
	work := t.TempDir()
	writeFile(t, filepath.Join(work, "somefile"), nil)
	complete := func(words ...string) []string {
		t.Helper()
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		script := `source <(dj completion bash)
COMP_WORDS=(` + strings.Join(quoted, " ") + `)
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_dj_complete
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = work
		cmd.Env = append(cleanEnv(), "PATH="+filepath.Dir(e.bin)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", words, err, out)
		}
		got := strings.Fields(string(out))
		sort.Strings(got)
		return got
	}
	cases := []struct {
		words []string
		want  []string
	}{
		{[]string{"dj", "forget", "ID", ""}, []string{"somefile"}},                                       // files, not "Incorrect Usage"
		{[]string{"dj", "restore", "latest", "--t"}, []string{"--tag", "--target", "--tls-client-cert"}}, // a global flag too
		{[]string{"dj", "restore", "--ta"}, []string{"--tag", "--target"}},
		{[]string{"dj", "snap"}, []string{"snapshots"}},
		{[]string{"dj", "key", "l"}, []string{"list"}},
		{[]string{"dj", "-r", "/x", "res"}, []string{"restore"}},
		{[]string{"dj", "list", ""}, []string{"blobs", "index", "keys", "locks", "packs", "snapshots"}},
		{[]string{"dj", "snapshots", "--json", "--js"}, []string{}},
	}
	for _, c := range cases {
		got := complete(c.words...)
		if len(got) == 0 && len(c.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %q, want %q", c.words, got, c.want)
		}
	}
}

// key list --json has restic's field names and shapes; key add --user and
// --host are recorded.
func TestCLIKeyListJSONLikeRestic(t *testing.T) {
	requireRestic(t)
	e := newEnv(t)
	e.must("init")
	pw2 := filepath.Join(e.dir, "pw2")
	writeFile(t, pw2, []byte("second\n"))
	e.must("key", "add", "--user", "alice", "--host", "box", "--new-password-file", pw2)
	var dj []map[string]any
	if err := json.Unmarshal([]byte(e.must("key", "list", "--json")), &dj); err != nil {
		t.Fatal(err)
	}

	rrepo := filepath.Join(e.dir, "restic-repo")
	restic(t, rrepo, "pw", "init")
	restic(t, rrepo, "pw", "key", "add", "--user", "alice", "--host", "box", "--new-password-file", pw2)
	var rs []map[string]any
	if err := json.Unmarshal([]byte(restic(t, rrepo, "pw", "key", "list", "--json")), &rs); err != nil {
		t.Fatal(err)
	}
	if len(dj) != 2 || len(rs) != 2 {
		t.Fatalf("dj %v\nrestic %v", dj, rs)
	}
	shape := func(m map[string]any) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = reflect.TypeOf(v).String()
		}
		return out
	}
	created := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`)
	for i := range dj {
		if !reflect.DeepEqual(shape(dj[i]), shape(rs[i])) {
			t.Errorf("key %d: dj %v, restic %v", i, dj[i], rs[i])
		}
		if !created.MatchString(dj[i]["created"].(string)) || len(dj[i]["id"].(string)) != 8 {
			t.Errorf("key %d: created or id not as restic's: %v (restic %v)", i, dj[i], rs[i])
		}
	}
	for _, list := range [][]map[string]any{dj, rs} {
		var added []map[string]any
		for _, k := range list {
			if k["current"] == false {
				added = append(added, k)
			}
		}
		if len(added) != 1 || added[0]["userName"] != "alice" || added[0]["hostName"] != "box" {
			t.Errorf("added key: %v", list)
		}
	}
}

// dj list prints what restic's list prints: one ID a line, and "data ID" /
// "tree ID" lines for blobs.
func TestCLIList(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "a"), []byte("some content"))
	writeFile(t, filepath.Join(src, "sub", "b"), []byte("more content"))
	e.must("init")
	e.must("backup", src)

	repoFiles := func(dir string) []string {
		var names []string
		filepath.WalkDir(filepath.Join(e.repo, dir), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				names = append(names, d.Name())
			}
			return nil
		})
		sort.Strings(names)
		return names
	}
	lines := func(s string) []string {
		l := strings.Fields(strings.TrimSpace(s))
		sort.Strings(l)
		return l
	}
	for kind, dir := range map[string]string{"packs": "data", "index": "index", "snapshots": "snapshots", "keys": "keys", "locks": "locks"} {
		got, want := lines(e.must("list", kind)), repoFiles(dir)
		if len(got) == 0 && len(want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("list %s: %v, want %v", kind, got, want)
		}
	}
	blobLine := regexp.MustCompile(`^(data|tree) [0-9a-f]{64}$`)
	out := strings.Split(strings.TrimSpace(e.must("list", "blobs")), "\n")
	var data, trees int
	for _, l := range out {
		if !blobLine.MatchString(l) {
			t.Errorf("list blobs line %q", l)
		}
		if strings.HasPrefix(l, "data ") {
			data++
		} else {
			trees++
		}
	}
	if data != 2 || trees < 2 {
		t.Errorf("list blobs: %d data, %d tree blobs\n%s", data, trees, strings.Join(out, "\n"))
	}
	if r := e.run("list", "bogus"); r.code != 1 {
		t.Errorf("list bogus: exit %d", r.code)
	} else {
		oneLine(t, r)
	}

	// restic's list prints the same shapes.
	if testing.Short() {
		return
	}
	if _, err := exec.LookPath("restic"); err != nil {
		return
	}
	rrepo := filepath.Join(e.dir, "restic-repo")
	restic(t, rrepo, "pw", "init")
	restic(t, rrepo, "pw", "backup", "-q", src)
	for _, l := range strings.Split(strings.TrimSpace(restic(t, rrepo, "pw", "list", "blobs")), "\n") {
		if !blobLine.MatchString(l) {
			t.Errorf("restic list blobs line %q does not match dj's shape", l)
		}
	}
}
