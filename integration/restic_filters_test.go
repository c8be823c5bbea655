package integration

// Snapshot filters (--host, --tag, --path), grouping and forget's policy
// select the same snapshots in dj as in restic 0.14: the same snapshots are
// made in a dj and a restic repository, then both tools answer the same
// questions.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// rfSnapshot is the part of a snapshot (in either tool's JSON) that names
// it across the two repositories.
type rfSnapshot struct {
	Time     time.Time `json:"time"`
	Hostname string    `json:"hostname"`
	Tags     []string  `json:"tags"`
	Paths    []string  `json:"paths"`
}

func (s rfSnapshot) key() string {
	tags := append([]string(nil), s.Tags...)
	sort.Strings(tags)
	return fmt.Sprintf("%s %s [%s]", s.Time.UTC().Format("01-02T15"), s.Hostname, strings.Join(tags, ","))
}

func rfKeys(list []rfSnapshot) string {
	var keys []string
	for _, s := range list {
		keys = append(keys, s.key())
	}
	sort.Strings(keys)
	return strings.Join(keys, "; ")
}

// rfRestic runs restic on one repository.
type rfRestic struct {
	t    *testing.T
	env  []string
	path string
}

func (r *rfRestic) run(args ...string) string {
	r.t.Helper()
	cmd := exec.Command(r.path, args...)
	cmd.Env = append(os.Environ(), r.env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		r.t.Fatalf("restic %s: %v\n%s%s", strings.Join(args, " "), err, so.String(), se.String())
	}
	return so.String()
}

// rfNormForget describes forget's JSON as a comparable string: per group
// its key, the kept snapshots with the rules that kept them, and the
// removed ones.
func rfNormForget(t *testing.T, tool, out string) string {
	t.Helper()
	if strings.TrimSpace(out) == "" {
		out = "[]" // restic prints nothing when no snapshot is selected
	}
	var groups []struct {
		Tags    []string     `json:"tags"`
		Host    string       `json:"host"`
		Paths   []string     `json:"paths"`
		Keep    []rfSnapshot `json:"keep"`
		Remove  []rfSnapshot `json:"remove"`
		Reasons []struct {
			Snapshot rfSnapshot `json:"snapshot"`
			Matches  []string   `json:"matches"`
		} `json:"reasons"`
	}
	parseJSON(t, tool+" forget --json", out, &groups)
	var lines []string
	for _, g := range groups {
		var reasons []string
		for _, r := range g.Reasons {
			reasons = append(reasons, r.Snapshot.key()+": "+strings.Join(r.Matches, ", "))
		}
		sort.Strings(reasons)
		lines = append(lines, fmt.Sprintf("group host=%q paths=%q tags=%q\n  keep: %s\n  why: %s\n  remove: %s",
			g.Host, g.Paths, g.Tags, rfKeys(g.Keep), strings.Join(reasons, "; "), rfKeys(g.Remove)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// rfNormGroups describes `snapshots --json` (grouped or not) as a
// comparable string.
func rfNormGroups(t *testing.T, tool, out string, grouped bool) string {
	t.Helper()
	if !grouped {
		var list []rfSnapshot
		parseJSON(t, tool+" snapshots --json", out, &list)
		return rfKeys(list)
	}
	var groups []struct {
		Key struct {
			Hostname string   `json:"hostname"`
			Paths    []string `json:"paths"`
			Tags     []string `json:"tags"`
		} `json:"group_key"`
		Snapshots []rfSnapshot `json:"snapshots"`
	}
	parseJSON(t, tool+" snapshots --json --group-by", out, &groups)
	var lines []string
	for _, g := range groups {
		lines = append(lines, fmt.Sprintf("group host=%q paths=%q tags=%q: %s", g.Key.Hostname, g.Key.Paths, g.Key.Tags, rfKeys(g.Snapshots)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestResticFiltersAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("compares with restic; skipped in -short mode")
	}
	resticPath, err := exec.LookPath("restic")
	if err != nil {
		t.Skip("restic is not installed")
	}
	e := newEnv(t)
	e.must("init")
	rr := &rfRestic{t: t, path: resticPath, env: []string{
		"RESTIC_PASSWORD=pw", "RESTIC_REPOSITORY=" + filepath.Join(e.dir, "restic"),
		"RESTIC_CACHE_DIR=" + filepath.Join(e.dir, "restic-cache"),
	}}
	rr.run("init")

	src := filepath.Join(e.dir, "src")
	A, B := filepath.Join(src, "a"), filepath.Join(src, "b")
	writeFile(t, filepath.Join(A, "f"), []byte("a"))
	writeFile(t, filepath.Join(B, "f"), []byte("b"))

	// Each snapshot: hour of 2022-03-01 (hours far enough apart for
	// hourly rules, some on other days), host, tags, paths.
	snaps := []struct {
		time  string
		host  string
		tags  []string
		paths []string
	}{
		{"2022-03-01 01:00:00", "x", []string{"a", "b"}, []string{A}},
		{"2022-03-01 02:00:00", "x", []string{"a"}, []string{A}},
		{"2022-03-01 03:00:00", "y", nil, []string{A}},
		{"2022-03-01 04:00:00", "y", []string{"c"}, []string{A, B}},
		{"2022-03-02 05:00:00", "z", []string{"a", "b", "c"}, []string{B}},
		{"2022-03-02 06:00:00", "y", []string{"b"}, []string{B}},
		{"2022-03-03 07:00:00", "x", nil, []string{A, B}},
		{"2022-03-03 08:00:00", "z", []string{"a", "c"}, []string{A}},
		{"2022-03-09 09:00:00", "x", []string{"b"}, []string{A}},
		{"2022-03-10 10:00:00", "y", nil, []string{A}},
		{"2022-04-11 11:00:00", "x", []string{"a", "b"}, []string{A}},
		{"2022-04-11 12:00:00", "y", []string{"c", "d"}, []string{B}},
	}
	for _, s := range snaps {
		args := []string{"--host", s.host, "--time", s.time}
		for _, tag := range s.tags {
			args = append(args, "--tag", tag)
		}
		args = append(args, s.paths...)
		e.must(append([]string{"backup", "--quiet"}, args...)...)
		rr.run(append([]string{"backup", "--quiet"}, args...)...)
	}

	filters := [][]string{
		nil,
		{"--tag", "a,b"},
		{"--tag", "a, b"},
		{"--tag", "a", "--tag", "b"},
		{"--tag", ""},
		{"--tag", "", "--tag", "c"},
		{"--tag", "a,b", "--tag", "c"},
		{"--tag", "a,"},
		{"--tag", "nope"},
		{"--host", "x"},
		{"--host", "x", "--host", "y"},
		{"--path", A},
		{"--path", A, "--path", B},
		{"--path", B, "--tag", "c"},
		{"--host", "y", "--tag", ""},
		{"--host", "x", "--host", "z", "--tag", "a,b", "--path", A},
		{"--host", "y", "--tag", "c,d", "--tag", ""},
	}
	for _, f := range filters {
		name := fmt.Sprintf("%q", f)
		// snapshots --json
		args := append([]string{"snapshots", "--json"}, f...)
		if got, want := rfNormGroups(t, "dj", e.must(args...), false), rfNormGroups(t, "restic", rr.run(args...), false); got != want {
			t.Errorf("snapshots %s:\ndj:     %s\nrestic: %s", name, got, want)
		}
		// forget --dry-run --json with a policy, in restic's groups; with
		// --keep-tag too where the filter selects tagged snapshots.
		policies := [][]string{{"--keep-last", "1"}}
		if len(f) > 0 && f[0] == "--tag" {
			policies = append(policies, []string{"--keep-last", "1", "--keep-tag", "a,b", "--keep-tag", ""})
		}
		for _, policy := range policies {
			args := append(append([]string{"forget", "--dry-run", "--json"}, policy...), f...)
			if got, want := rfNormForget(t, "dj", e.must(args...)), rfNormForget(t, "restic", rr.run(args...)); got != want {
				t.Errorf("%s:\ndj:\n%s\nrestic:\n%s", strings.Join(args, " "), got, want)
			}
		}
	}

	// Grouping, short options and other policies, on a few filters.
	for _, f := range [][]string{nil, {"--tag", "a,b", "--tag", ""}, {"-H", "y"}} {
		for _, g := range []string{"host", "tags,paths"} {
			args := append([]string{"snapshots", "--json", "--group-by", g}, f...)
			if got, want := rfNormGroups(t, "dj", e.must(args...), true), rfNormGroups(t, "restic", rr.run(args...), true); got != want {
				t.Errorf("%s:\ndj:\n%s\nrestic:\n%s", strings.Join(args, " "), got, want)
			}
		}
	}
	for _, args := range [][]string{
		{"snapshots", "--json", "--latest", "1", "--group-by", "tags"},
		{"snapshots", "--json", "--latest", "2", "--tag", "a", "--tag", "b"},
	} {
		grouped := args[4] == "--group-by"
		if got, want := rfNormGroups(t, "dj", e.must(args...), grouped), rfNormGroups(t, "restic", rr.run(args...), grouped); got != want {
			t.Errorf("%s:\ndj:\n%s\nrestic:\n%s", strings.Join(args, " "), got, want)
		}
	}
	for _, f := range [][]string{nil, {"--tag", "a,b", "--tag", ""}} {
		for _, policy := range [][]string{
			{"--group-by", "", "-l", "2"},
			{"--group-by", "tags", "--keep-last", "1"},
			{"-g", "host", "-l", "1", "-H", "2", "-d", "2", "-w", "1", "-m", "1", "-y", "1"},
			{"--group-by", "host,paths,tags", "--keep-daily", "1", "--keep-tag", "c"},
		} {
			args := append(append([]string{"forget", "--dry-run", "--json"}, policy...), f...)
			if got, want := rfNormForget(t, "dj", e.must(args...)), rfNormForget(t, "restic", rr.run(args...)); got != want {
				t.Errorf("%s:\ndj:\n%s\nrestic:\n%s", strings.Join(args, " "), got, want)
			}
		}
	}

	// Explicit IDs: "latest" takes the filters, other IDs ignore them.
	var list []struct {
		rfSnapshot
		ID string `json:"id"`
	}
	parseJSON(t, "dj snapshots --json", e.must("snapshots", "--json"), &list)
	sort.Slice(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	var got []rfSnapshot
	parseJSON(t, "dj snapshots IDs", e.must("snapshots", "--json", "--host", "x", list[0].ID[:10], "latest", list[1].ID), &got)
	if g, w := rfKeys(got), rfKeys([]rfSnapshot{list[0].rfSnapshot, list[1].rfSnapshot, list[len(list)-2].rfSnapshot}); g != w {
		t.Errorf("snapshots --host x ID latest ID: %s, want %s", g, w)
	}
}

// TestSnapshotsGroupsAndCompactText checks the text of grouped and compact
// listings (restic's shapes): a header per group that has a key, none for
// the group of all snapshots, and no paths or size columns when compact.
func TestSnapshotsGroupsAndCompactText(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	src := filepath.Join(e.dir, "src")
	writeFile(t, filepath.Join(src, "f"), []byte("x"))
	e.must("backup", "--quiet", "--host", "x", "--tag", "a,b", "--time", "2022-01-01 10:00:00", src)
	e.must("backup", "--quiet", "--host", "y", "--time", "2022-01-02 10:00:00", src)
	e.must("backup", "--quiet", "--host", "y", "--tag", "c", "--time", "2022-01-03 10:00:00", src)

	out := e.must("snapshots", "--group-by", "host,tags", "--compact")
	for _, want := range []string{"snapshots for (host [x], tags [a, b]):\n", "snapshots for (host [y], tags [c]):\n", "snapshots for (host [y]):\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("snapshots --group-by host,tags: no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "Paths") || strings.Contains(out, src) || strings.Count(out, "\nID ") != 3 {
		t.Errorf("snapshots --compact --group-by: want 3 tables without paths:\n%s", out)
	}
	if !strings.Contains(out, "  a\n") || !strings.Contains(out, "  b\n") {
		t.Errorf("snapshots --compact: want one tag a line:\n%s", out)
	}

	out = e.must("snapshots", "--group-by", "tags")
	if strings.Contains(out, "snapshots for ()") || strings.Count(out, "snapshots for ") != 2 {
		t.Errorf("snapshots --group-by tags: want headers for the two tagged groups only:\n%s", out)
	}

	for _, args := range [][]string{
		{"forget", "--dry-run", "--group-by", "", "--keep-last", "1"},
		{"forget", "--dry-run", "-g", "", "-l", "1", "--compact"},
	} {
		out := e.must(args...)
		if strings.Contains(out, "snapshots for") {
			t.Errorf("%s: a group header for the group of all snapshots:\n%s", strings.Join(args, " "), out)
		}
		if !strings.Contains(out, "keep 1 snapshots:\n") || !strings.Contains(out, "remove 2 snapshots:\n") {
			t.Errorf("%s: want 1 kept and 2 removed:\n%s", strings.Join(args, " "), out)
		}
	}
	out = e.must("forget", "--dry-run", "-l", "1", "--host", "y")
	if !strings.Contains(out, "snapshots for (host [y], paths ["+src+"]):\n") || !strings.Contains(out, "last snapshot") {
		t.Errorf("forget --host y: want the group's header and reasons:\n%s", out)
	}
	if r := e.run("forget", "--dry-run", "-l", "1", "-H", "y"); r.code == 0 {
		t.Errorf("forget -H y: -H is --keep-hourly, so y is no count; exit 0:\n%s", r.stdout)
	}
}
