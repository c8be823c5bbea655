package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// outputMessage is one line of `backup --json`: restic's message types.
type outputMessage map[string]any

func (m outputMessage) typ() string { return m["message_type"].(string) }

func (m outputMessage) num(key string) uint64 {
	f, _ := m[key].(float64)
	return uint64(f)
}

// outputMessages parses NDJSON: every line one JSON object with a
// message_type (so no pretty-printed object spread over lines).
func outputMessages(t *testing.T, what, out string) []outputMessage {
	t.Helper()
	var msgs []outputMessage
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m outputMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: line %q is no JSON object: %v\n%s", what, line, err, out)
		}
		if _, ok := m["message_type"].(string); !ok {
			t.Fatalf("%s: line without message_type: %s", what, line)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		t.Fatalf("%s printed nothing", what)
	}
	return msgs
}

// outputSummary checks that the last message, and only it, is the summary.
func outputSummary(t *testing.T, what string, msgs []outputMessage) outputMessage {
	t.Helper()
	for i, m := range msgs {
		if (m.typ() == "summary") != (i == len(msgs)-1) {
			t.Fatalf("%s: message %d of %d is %q; the summary must be the one last line", what, i+1, len(msgs), m.typ())
		}
	}
	return msgs[len(msgs)-1]
}

// outputTree writes a tree with files of several sizes, an empty file, a
// hard link, symlinks (one dangling), a fifo and an empty directory.
func outputTree(t *testing.T, src string) {
	t.Helper()
	big := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(big)
	writeFile(t, filepath.Join(src, "a.txt"), []byte("alpha\n"))
	writeFile(t, filepath.Join(src, "empty"), nil)
	writeFile(t, filepath.Join(src, "big.bin"), big)
	writeFile(t, filepath.Join(src, "sub", "b.txt"), []byte("beta\n"))
	writeFile(t, filepath.Join(src, "sub", "deeper", "c.txt"), []byte("gamma\n"))
	for _, err := range []error{
		os.Link(filepath.Join(src, "a.txt"), filepath.Join(src, "hard")),
		os.Symlink("a.txt", filepath.Join(src, "link")),
		os.Symlink("nowhere", filepath.Join(src, "sub", "dangling")),
		syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644),
		os.Mkdir(filepath.Join(src, "emptydir"), 0o755),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Read everything once, so that reading it in a backup changes no
	// access time (relatime) and a second backup sees the same metadata.
	shell(t, "ls -laR "+src+" >/dev/null && find "+src+" -type f -exec cat {} + >/dev/null")
}

// outputChange modifies a file (and so its hard link), adds one and
// removes one.
func outputChange(t *testing.T, src string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(src, "a.txt"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("more\n")
	f.Close()
	writeFile(t, filepath.Join(src, "sub", "new.txt"), []byte("new\n"))
	if err := os.Remove(filepath.Join(src, "sub", "deeper", "c.txt")); err != nil {
		t.Fatal(err)
	}
	shell(t, "ls -laR "+src+" >/dev/null && cat "+filepath.Join(src, "sub", "new.txt")+" >/dev/null")
}

// lsCounts counts the files and directories of the latest snapshot and the
// bytes of its files, from `dj ls --json`.
func lsCounts(t *testing.T, e *env) (files, dirs, bytes uint64) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(e.must("ls", "--json", "latest")), "\n") {
		var n struct {
			Type       string `json:"type"`
			Size       uint64 `json:"size"`
			StructType string `json:"struct_type"`
		}
		if err := json.Unmarshal([]byte(line), &n); err != nil {
			t.Fatalf("ls --json: %v: %s", err, line)
		}
		switch {
		case n.StructType != "node":
		case n.Type == "file":
			files++
			bytes += n.Size
		case n.Type == "dir":
			dirs++
		}
	}
	return files, dirs, bytes
}

// resticSummaryKeys are the fields of restic 0.14's backup summary.
var resticSummaryKeys = []string{"message_type", "files_new", "files_changed", "files_unmodified", "dirs_new",
	"dirs_changed", "dirs_unmodified", "data_blobs", "tree_blobs", "data_added", "total_files_processed",
	"total_bytes_processed", "total_duration", "snapshot_id"}

// TestBackupJSONOutput checks `backup --json`: NDJSON whose last line is
// restic's summary, with counts that agree with each other and with the
// snapshot `dj ls` shows, symlinks, fifos and the root left out as restic
// leaves them out.
func TestBackupJSONOutput(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	outputTree(t, src)
	e.must("init")

	check := func(args []string, files, dirs [3]uint64) outputMessage {
		t.Helper()
		what := strings.Join(args, " ")
		r := e.run(args...)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", what, r.code, r.stderr)
		}
		if r.stderr != "" {
			t.Errorf("%s: stderr not empty (no progress without a terminal):\n%s", what, r.stderr)
		}
		msgs := outputMessages(t, what, r.stdout)
		sum := outputSummary(t, what, msgs)
		types := map[string]bool{}
		for _, m := range msgs {
			types[m.typ()] = true
		}
		if !types["status"] {
			t.Errorf("%s: no status line", what)
		}
		for _, k := range append(resticSummaryKeys, "data_added_packed") {
			if _, ok := sum[k]; !ok {
				t.Errorf("%s: summary without %q: %v", what, k, sum)
			}
		}
		got := func(a, b, c string) [3]uint64 { return [3]uint64{sum.num(a), sum.num(b), sum.num(c)} }
		if g := got("files_new", "files_changed", "files_unmodified"); g != files {
			t.Errorf("%s: files new/changed/unmodified %v, want %v", what, g, files)
		}
		if g := got("dirs_new", "dirs_changed", "dirs_unmodified"); g != dirs {
			t.Errorf("%s: dirs new/changed/unmodified %v, want %v", what, g, dirs)
		}
		lsFiles, lsDirs, lsBytes := lsCounts(t, e)
		if n := sum.num("total_files_processed"); n != files[0]+files[1]+files[2] || n != lsFiles {
			t.Errorf("%s: total_files_processed %d, files counted %v, ls shows %d files", what, n, files, lsFiles)
		}
		if n := dirs[0] + dirs[1] + dirs[2]; n != lsDirs {
			t.Errorf("%s: %d dirs counted, ls shows %d", what, n, lsDirs)
		}
		if n := sum.num("total_bytes_processed"); n != lsBytes {
			t.Errorf("%s: total_bytes_processed %d, ls shows %d bytes of files", what, n, lsBytes)
		}
		if id, _ := sum["snapshot_id"].(string); len(id) != 8 || !strings.Contains(e.must("snapshots"), id) {
			t.Errorf("%s: snapshot_id %q is no snapshot", what, id)
		}
		return sum
	}
	// Every directory from / down to src, without /, is counted.
	ancestors := uint64(strings.Count(src, "/"))
	dirs := ancestors + 3 // sub, sub/deeper, emptydir
	check([]string{"--json", "backup", src}, [3]uint64{6, 0, 0}, [3]uint64{dirs, 0, 0})
	check([]string{"backup", src, "--json"}, [3]uint64{0, 0, 6}, [3]uint64{0, 0, dirs})
	outputChange(t, src)
	// a.txt and its hard link changed; sub/new.txt is new; sub/deeper
	// lost its file, so src, sub, deeper and the ancestors changed.
	check([]string{"backup", "--json", src}, [3]uint64{1, 2, 3}, [3]uint64{0, ancestors + 2, 1})

	// --quiet --json: the summary alone, as restic prints it.
	r := e.run("--json", "-q", "backup", src)
	if msgs := outputMessages(t, "--json -q backup", r.stdout); r.code != 0 || len(msgs) != 1 || msgs[0].typ() != "summary" {
		t.Errorf("--json -q backup: exit %d, want the summary alone:\n%s", r.code, r.stdout)
	}
	// --quiet: nothing at all.
	if r := e.run("-q", "backup", src); r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("-q backup: exit %d, printed\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestBackupTextOutput checks the text summary: restic's lines, with the
// counts of the JSON summary.
func TestBackupTextOutput(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	outputTree(t, src)
	e.must("init")
	out := e.must("backup", src)
	for _, want := range []string{
		"\nFiles:           6 new,     0 changed,     0 unmodified\n",
		"\nprocessed 6 files, 3.000 MiB in 0:",
		"Added to the repository: ",
		" stored)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("backup output has no %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "using parent") || !strings.HasSuffix(out, " saved\n") {
		t.Errorf("first backup:\n%s", out)
	}
	r := e.run("backup", src)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "using parent snapshot ") || !strings.Contains(r.stdout, "0 new,     0 changed,     6 unmodified") {
		t.Errorf("second backup: exit %d\n%s", r.code, r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("progress drawn although stderr is no terminal:\n%s", r.stderr)
	}
}

// TestBackupProgressOnTerminal runs a backup on a pseudo-terminal (with
// script(1)) and checks that the status is drawn, restic's way, and erased
// before the summary.
func TestBackupProgressOnTerminal(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) is not installed")
	}
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	outputTree(t, src)
	e.must("init")
	cmd := exec.Command(script, "-qec", "stty cols 200 rows 50; "+e.bin+" backup -v "+src, "/dev/null")
	cmd.Env = append(cleanEnv(), e.extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("backup on a terminal: %v\n%q", err, out)
	}
	text := strings.ReplaceAll(string(out), "\r\n", "\n")
	// The last status drawn: all done, with the totals of the scan.
	status := "[0:0"
	i := strings.LastIndex(text, status)
	if i < 0 {
		t.Fatalf("no status line:\n%q", text)
	}
	line := text[i:]
	line = line[:strings.IndexByte(line, '\n')]
	if !strings.Contains(line, "100.00%  6 files 3.000 MiB, total 6 files 3.000 MiB, 0 errors") || !strings.Contains(line, "/s") {
		t.Errorf("final status line %q", line)
	}
	// Erased (cursor up, clear to the end) before the summary.
	rest := text[i:]
	if j := strings.Index(rest, "\x1b[1A\r\x1b[J"); j < 0 || j > strings.Index(rest, "Files:") {
		t.Errorf("status not erased before the summary:\n%q", rest)
	}
	if !strings.Contains(text, "new       "+filepath.Join(src, "big.bin")+", saved in ") {
		t.Errorf("-v lines missing on the terminal:\n%q", text)
	}
}

// TestBackupVerbose checks that -v lists the new and changed files, -vv
// the unchanged ones and the directories too, and --json -v every item as
// restic's verbose_status.
func TestBackupVerbose(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	outputTree(t, src)
	e.must("init")
	out := e.must("backup", "-v", src)
	for _, name := range []string{"a.txt", "empty", "big.bin", "hard", "sub/b.txt", "sub/deeper/c.txt"} {
		if !strings.Contains(out, "new       "+filepath.Join(src, name)+", saved in ") {
			t.Errorf("-v: %s not listed as new:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "new       "+filepath.Join(src, "big.bin")+", saved in ") || !strings.Contains(out, "3.000 MiB added)") {
		t.Errorf("-v: big.bin should say what it added:\n%s", out)
	}
	if strings.Contains(out, "link") || strings.Contains(out, "fifo") || strings.Contains(out, "new       "+src+"/,") {
		t.Errorf("-v lists symlinks, fifos or directories:\n%s", out)
	}
	for _, want := range []string{"Data Blobs:", "Tree Blobs:", "scan finished in "} {
		if !strings.Contains(out, want) {
			t.Errorf("-v: no %q:\n%s", want, out)
		}
	}

	outputChange(t, src)
	out = e.must("backup", src, "-v")
	if !strings.Contains(out, "new       "+filepath.Join(src, "sub/new.txt")+", saved in ") ||
		!strings.Contains(out, "modified  "+filepath.Join(src, "a.txt")+", saved in ") {
		t.Errorf("-v: new and modified files not listed:\n%s", out)
	}
	if strings.Contains(out, "unchanged ") {
		t.Errorf("-v lists unchanged files:\n%s", out)
	}

	for _, args := range [][]string{{"-vv", "backup", src}, {"backup", "--verbose=2", src}, {"backup", "-v", src, "-v"}} {
		out = e.must(args...)
		for _, want := range []string{"unchanged " + filepath.Join(src, "big.bin") + "\n", "unchanged " + src + "/sub/\n", "unchanged " + src + "/\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: no %q:\n%s", args, want, out)
			}
		}
	}

	writeFile(t, filepath.Join(src, "later.txt"), []byte("later\n"))
	r := e.run("backup", "--json", "-v", src)
	msgs := outputMessages(t, "backup --json -v", r.stdout)
	sum := outputSummary(t, "backup --json -v", msgs)
	actions := map[string]string{}
	for _, m := range msgs {
		if m.typ() == "verbose_status" {
			actions[m["item"].(string)] = m["action"].(string)
			for _, k := range []string{"duration", "data_size", "data_size_in_repo", "metadata_size", "metadata_size_in_repo", "total_files"} {
				if _, ok := m[k]; !ok {
					t.Errorf("verbose_status without %q: %v", k, m)
				}
			}
		}
	}
	want := map[string]string{
		filepath.Join(src, "later.txt"): "new", filepath.Join(src, "a.txt"): "unchanged",
		src + "/": "modified", src + "/sub/": "unchanged", "": "scan_finished",
	}
	for item, action := range want {
		if actions[item] != action {
			t.Errorf("--json -v: %q is %q, want %q", item, actions[item], action)
		}
	}
	var files uint64
	for item, action := range actions {
		if action != "scan_finished" && !strings.HasSuffix(item, "/") {
			files++
		}
	}
	if files != sum.num("total_files_processed") {
		t.Errorf("--json -v lists %d files, the summary says %d", files, sum.num("total_files_processed"))
	}
}

// TestBackupJSONErrors runs dj as nobody over a file only root may read:
// an "error" message on stderr names it, and the summary leaves it out.
func TestBackupJSONErrors(t *testing.T) {
	requireRoot(t)
	bin := djBinary(t)
	base, err := os.MkdirTemp("", "dj-output-nobody")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o777)
	src := filepath.Join(base, "src")
	writeFile(t, filepath.Join(src, "ok.txt"), []byte("readable"))
	writeFile(t, filepath.Join(src, "secret.txt"), []byte("root only"))
	os.Chmod(filepath.Join(src, "secret.txt"), 0o600)
	pw := filepath.Join(base, "pw")
	os.WriteFile(pw, []byte("pw\n"), 0o644)
	run := func(args ...string) (string, string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cleanEnv(), "DJ_REPOSITORY="+filepath.Join(base, "repo"), "DJ_PASSWORD_FILE="+pw, "DJ_INSECURE_TEST_KDF=1", "HOME="+base)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return so.String(), se.String(), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return so.String(), se.String(), 0
	}
	if _, se, code := run("init"); code != 0 {
		t.Fatalf("init as nobody: %d %s", code, se)
	}
	so, se, code := run("backup", "--json", src)
	if code != 3 {
		t.Fatalf("backup: exit %d, want 3\n%s", code, se)
	}
	sum := outputSummary(t, "backup --json", outputMessages(t, "backup --json", so))
	if sum.num("files_new") != 1 || sum.num("total_files_processed") != 1 {
		t.Errorf("summary counts the unreadable file: %v", sum)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(se), "\n") {
		var m struct {
			MessageType string `json:"message_type"`
			Error       struct {
				Message string `json:"message"`
			} `json:"error"`
			During string `json:"during"`
			Item   string `json:"item"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.MessageType != "error" {
			continue
		}
		found = true
		if m.Item != filepath.Join(src, "secret.txt") || m.During != "archival" || !strings.Contains(m.Error.Message, "permission denied") {
			t.Errorf("error message: %s", line)
		}
	}
	if !found {
		t.Errorf("no error message on stderr:\n%s", se)
	}
	// The status lines count the error.
	var errCount uint64
	for _, m := range outputMessages(t, "backup --json", so) {
		if m.typ() == "status" {
			errCount = max(errCount, m.num("error_count"))
		}
	}
	if errCount != 1 {
		t.Errorf("status lines count %d errors, want 1", errCount)
	}
}

// TestBackupOutputAgreesWithRestic backs up the same tree with restic 0.14
// and dj, twice with changes between, and compares the summaries' counts,
// the summary fields and the message types.
func TestBackupOutputAgreesWithRestic(t *testing.T) {
	if testing.Short() {
		t.Skip("compares with restic")
	}
	restic, err := exec.LookPath("restic")
	if err != nil {
		t.Skip("restic is not installed")
	}
	e := newEnv(t)
	src := filepath.Join(e.dir, "src")
	outputTree(t, src)
	e.must("init")
	resticRepo := filepath.Join(e.dir, "restic-repo")
	runRestic := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(restic, append([]string{"--no-cache", "-r", resticRepo}, args...)...)
		cmd.Env = append(cleanEnv(), "RESTIC_PASSWORD=pw")
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		if err := cmd.Run(); err != nil {
			t.Fatalf("restic %v: %v\n%s", args, err, se.String())
		}
		return so.String()
	}
	runRestic("init")

	counts := []string{"files_new", "files_changed", "files_unmodified", "dirs_new", "dirs_changed", "dirs_unmodified",
		"total_files_processed", "total_bytes_processed"}
	compare := func(round string) {
		t.Helper()
		rMsgs := outputMessages(t, "restic "+round, runRestic("backup", "--json", "-v", src))
		dMsgs := outputMessages(t, "dj "+round, e.must("backup", "--json", "-v", src))
		rSum, dSum := outputSummary(t, "restic "+round, rMsgs), outputSummary(t, "dj "+round, dMsgs)
		for _, k := range counts {
			if rSum.num(k) != dSum.num(k) {
				t.Errorf("%s: %s: restic %d, dj %d", round, k, rSum.num(k), dSum.num(k))
			}
		}
		var rKeys, dKeys []string
		for k := range rSum {
			rKeys = append(rKeys, k)
		}
		for k := range dSum {
			if k != "data_added_packed" { // restic prints it from 0.15 on
				dKeys = append(dKeys, k)
			}
		}
		sort.Strings(rKeys)
		sort.Strings(dKeys)
		if strings.Join(rKeys, " ") != strings.Join(dKeys, " ") {
			t.Errorf("%s: summary fields\nrestic %v\ndj     %v", round, rKeys, dKeys)
		}
		types := func(msgs []outputMessage) string {
			set := map[string]bool{}
			for _, m := range msgs {
				set[m.typ()] = true
			}
			var out []string
			for k := range set {
				out = append(out, k)
			}
			sort.Strings(out)
			return strings.Join(out, " ")
		}
		if r, d := types(rMsgs), types(dMsgs); r != d {
			t.Errorf("%s: message types: restic %s, dj %s", round, r, d)
		}
		// The files listed with -v, with their actions.
		items := func(msgs []outputMessage) string {
			var out []string
			for _, m := range msgs {
				if m.typ() == "verbose_status" && m["action"] != "scan_finished" {
					out = append(out, m["action"].(string)+" "+m["item"].(string))
				}
			}
			sort.Strings(out)
			return strings.Join(out, "\n")
		}
		if r, d := items(rMsgs), items(dMsgs); r != d {
			t.Errorf("%s: verbose items differ:\nrestic:\n%s\ndj:\n%s", round, r, d)
		}
	}
	compare("first backup")
	outputChange(t, src)
	compare("after changes")
}
