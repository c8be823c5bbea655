package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dj/repo/archiver"
	"dj/repo/crypto"
	"dj/repo/snapshot"
)

func TestFormatSeconds(t *testing.T) {
	for _, c := range []struct {
		sec  uint64
		want string
	}{
		{0, "0:00"}, {5, "0:05"}, {59, "0:59"}, {60, "1:00"}, {754, "12:34"},
		{3599, "59:59"}, {3600, "1:00:00"}, {45296, "12:34:56"}, {360000, "100:00:00"},
	} {
		if got := formatSeconds(c.sec); got != c.want {
			t.Errorf("formatSeconds(%d) = %q, want %q", c.sec, got, c.want)
		}
	}
	if got := formatElapsed(1500 * time.Millisecond); got != "0:01" {
		t.Errorf("formatElapsed(1.5s) = %q", got)
	}
}

func TestFormatPercentAndRate(t *testing.T) {
	for _, c := range []struct {
		done, total uint64
		want        string
	}{
		{0, 0, "0.00%"}, {0, 100, "0.00%"}, {452, 1000, "45.20%"}, {1, 3, "33.33%"},
		{100, 100, "100.00%"}, {150, 100, "100.00%"}, // a file that grew: never over 100
	} {
		if got := formatPercent(c.done, c.total); got != c.want {
			t.Errorf("formatPercent(%d, %d) = %q, want %q", c.done, c.total, got, c.want)
		}
	}
	for _, c := range []struct {
		bytes uint64
		d     time.Duration
		want  string
	}{
		{0, 0, "0 B/s"},
		{1000, 0, "0 B/s"},
		{512, time.Second, "512 B/s"},
		{10 << 20, 2 * time.Second, "5.000 MiB/s"}, // the units of formatBytes: MiB with MiB
		{3 << 30, time.Second, "3.000 GiB/s"},
	} {
		if got := formatRate(c.bytes, c.d); got != c.want {
			t.Errorf("formatRate(%d, %v) = %q, want %q", c.bytes, c.d, got, c.want)
		}
	}
}

func TestSecondsRemaining(t *testing.T) {
	for _, c := range []struct {
		name string
		p    archiver.Progress
		want uint64
	}{
		{"scan running", archiver.Progress{Elapsed: 10 * time.Second, BytesDone: 100, TotalBytes: 1000}, 0},
		{"nothing done yet", archiver.Progress{Elapsed: 10 * time.Second, TotalBytes: 1000, ScanDone: true}, 0},
		{"a quarter in 10s", archiver.Progress{Elapsed: 10 * time.Second, BytesDone: 250, TotalBytes: 1000, ScanDone: true}, 30},
		{"done", archiver.Progress{Elapsed: 10 * time.Second, BytesDone: 1000, TotalBytes: 1000, ScanDone: true}, 0},
		{"more than counted", archiver.Progress{Elapsed: 10 * time.Second, BytesDone: 2000, TotalBytes: 1000, ScanDone: true}, 0},
	} {
		if got := secondsRemaining(c.p); got != c.want {
			t.Errorf("%s: %d s remaining, want %d", c.name, got, c.want)
		}
	}
}

func TestBackupStatus(t *testing.T) {
	scanning := archiver.Progress{Elapsed: 5 * time.Second, FilesDone: 12, BytesDone: 10 << 20, Errors: 1,
		CurrentFiles: []string{"/a/x", "/a/y"}}
	want := []string{"[0:05] 12 files, 10.000 MiB, 1 errors, 2.000 MiB/s", "/a/x", "/a/y"}
	if got := backupStatus(scanning); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("while scanning:\n got %q\nwant %q", got, want)
	}
	counted := archiver.Progress{Elapsed: 5 * time.Second, FilesDone: 1234, BytesDone: 1 << 30,
		TotalFiles: 5678, TotalBytes: 4 << 30, ScanDone: true}
	want = []string{"[0:05] 25.00%  1234 files 1.000 GiB, total 5678 files 4.000 GiB, 0 errors ETA 0:15, 204.800 MiB/s"}
	if got := backupStatus(counted); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("with totals:\n got %q\nwant %q", got, want)
	}
}

func TestTruncateWidth(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"}, {"exactly", 7, "exactly"}, {"too long", 3, "too"},
		{"äöüäöü", 4, "äöüä"}, {"x", 0, ""},
	} {
		if got := truncateWidth(c.s, c.n); got != c.want {
			t.Errorf("truncateWidth(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}

// TestStatusTerm checks the escape sequences: a new status replaces the
// lines drawn before, and a message erases the status and is drawn above it.
func TestStatusTerm(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "tty"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out, other bytes.Buffer
	s := &statusTerm{out: &out, fd: int(f.Fd()), other: &other} // not a terminal: 80 columns
	s.set([]string{"status", strings.Repeat("x", 100)})
	s.set([]string{"status 2"})
	s.print(&other, "message\n")
	s.set([]string{"status 3"})
	s.print(f, "elsewhere\n") // another file: the status stays
	s.finish()
	want := "status\n" + strings.Repeat("x", 79) + "\n" +
		"\x1b[2A\r\x1b[J" + "status 2\n" +
		"\x1b[1A\r\x1b[J" + // erased for the message on the same terminal
		"status 3\n" +
		"\x1b[1A\r\x1b[J"
	if out.String() != want {
		t.Errorf("terminal got\n%q\nwant\n%q", out.String(), want)
	}
	if other.String() != "message\n" {
		t.Errorf("stdout got %q", other.String())
	}

	// Without a terminal only the first line is printed, as a line.
	out.Reset()
	plain := &statusTerm{out: &out, fd: -1}
	plain.set([]string{"one", "/file"})
	plain.set([]string{"two"})
	plain.finish()
	if out.String() != "one\ntwo\n" {
		t.Errorf("plain status got %q", out.String())
	}
}

func TestItemLine(t *testing.T) {
	for _, c := range []struct {
		it   archiver.Item
		want string
	}{
		{archiver.Item{Path: "/a/f", Action: archiver.ItemNew, Duration: 100 * time.Millisecond, DataAdded: 1234},
			"new       /a/f, saved in 0.100s (1.205 KiB added)"},
		{archiver.Item{Path: "/a/f", Action: archiver.ItemModified, Duration: time.Millisecond, DataAdded: 16},
			"modified  /a/f, saved in 0.001s (16 B added)"},
		{archiver.Item{Path: "/a/f", Action: archiver.ItemUnchanged}, "unchanged /a/f"},
		{archiver.Item{Path: "/a", Dir: true, Action: archiver.ItemNew, Duration: 46 * time.Millisecond, TreeSize: 552},
			"new       /a/, saved in 0.046s (0 B added, 0 B stored, 552 B metadata)"},
		{archiver.Item{Path: "/a", Dir: true, Action: archiver.ItemUnchanged}, "unchanged /a/"},
	} {
		r := &backupReport{e: &env{}}
		var buf bytes.Buffer
		r.e.stdout, r.verbosity = &buf, 2
		r.item(c.it)
		if got := strings.TrimSuffix(buf.String(), "\n"); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

// TestVerbosityLists checks which items -v and -vv list.
func TestVerbosityLists(t *testing.T) {
	items := []archiver.Item{
		{Path: "/n", Action: archiver.ItemNew}, {Path: "/m", Action: archiver.ItemModified},
		{Path: "/u", Action: archiver.ItemUnchanged}, {Path: "/d", Dir: true, Action: archiver.ItemNew},
	}
	for _, c := range []struct {
		verbosity int
		want      []string
	}{
		{1, []string{"/n", "/m"}},
		{2, []string{"/n", "/m", "/u", "/d/"}},
	} {
		var buf bytes.Buffer
		r := &backupReport{e: &env{stdout: &buf}, verbosity: c.verbosity}
		for _, it := range items {
			r.item(it)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			got = append(got, strings.TrimSuffix(strings.Fields(l)[1], ","))
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("-v x%d lists %v, want %v", c.verbosity, got, c.want)
		}
	}
}

func testSnapshot() *snapshot.Snapshot {
	start := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	return &snapshot.Snapshot{ID: crypto.ID{0xaf, 0x02, 0x20, 0x3f}, Summary: &snapshot.Summary{
		BackupStart: start, BackupEnd: start.Add(1500 * time.Millisecond),
		Counts: snapshot.Counts{FilesNew: 2, FilesChanged: 1, FilesUnmodified: 3, DirsNew: 4, DirsChanged: 5, DirsUnmodified: 6,
			DataBlobs: 7, TreeBlobs: 8, DataAdded: 2420, DataAddedPacked: 1210, TotalFilesProcessed: 6, TotalBytesProcessed: 3 << 20},
	}}
}

// TestSummaryJSON checks restic's summary: one line, restic's names in
// restic's order.
func TestSummaryJSON(t *testing.T) {
	var out bytes.Buffer
	r := newBackupReport(&env{stdout: &out, stderr: &out, json: true})
	r.summary(testSnapshot(), false)
	want := `{"message_type":"summary","files_new":2,"files_changed":1,"files_unmodified":3,"dirs_new":4,"dirs_changed":5,"dirs_unmodified":6,"data_blobs":7,"tree_blobs":8,"data_added":2420,"data_added_packed":1210,"total_files_processed":6,"total_bytes_processed":3145728,"total_duration":1.5,"snapshot_id":"af02203f"}` + "\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	r.summary(testSnapshot(), true)
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || m["dry_run"] != true || m["snapshot_id"] != nil {
		t.Errorf("dry run summary: %v %s", err, out.String())
	}
}

func TestSummaryText(t *testing.T) {
	var out bytes.Buffer
	r := newBackupReport(&env{stdout: &out, stderr: &out})
	r.summary(testSnapshot(), false)
	want := `
Files:           2 new,     1 changed,     3 unmodified
Dirs:            4 new,     5 changed,     6 unmodified
Added to the repository: 2.363 KiB (1.182 KiB stored)

processed 6 files, 3.000 MiB in 0:01
snapshot af02203f saved
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	sn := testSnapshot()
	sn.Summary.DataAdded, sn.Summary.DataAddedPacked = 0, 0
	r.verbosity = 1
	r.summary(sn, true)
	for _, line := range []string{"Data Blobs:      7 new\n", "Tree Blobs:      8 new\n", "Would add to the repository: 0 B   (0 B   stored)\n"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("-v dry run: no %q in\n%s", line, out.String())
		}
	}
	if strings.Contains(out.String(), "saved") {
		t.Errorf("dry run says a snapshot was saved:\n%s", out.String())
	}
	out.Reset()
	sn.ID = crypto.ID{} // not written (--skip-if-unchanged)
	r.summary(sn, false)
	if !strings.HasSuffix(out.String(), "\nskipped creating snapshot: nothing changed since the parent snapshot\n") {
		t.Errorf("unwritten snapshot:\n%s", out.String())
	}
}

func TestErrorLines(t *testing.T) {
	var out, errOut bytes.Buffer
	err := &os.PathError{Op: "open", Path: "/a/secret", Err: errors.New("permission denied")}
	newBackupReport(&env{stdout: &out, stderr: &errOut, json: true}).warn("/a/secret", err)
	want := `{"message_type":"error","error":{"message":"open /a/secret: permission denied"},"during":"archival","item":"/a/secret"}` + "\n"
	if errOut.String() != want || out.Len() != 0 {
		t.Errorf("json error: stderr %q, stdout %q", errOut.String(), out.String())
	}
	errOut.Reset()
	newBackupReport(&env{stdout: &out, stderr: &errOut, quiet: true}).warn("/a/secret", err)
	if errOut.String() != "error: /a/secret: permission denied\n" {
		t.Errorf("text error (even with --quiet): %q", errOut.String())
	}
}
