//go:build bench

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestFmtNum(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {0.0243, "0.024"}, {0.00696, "0.00696"}, {1, "1.00"}, {7.884, "7.88"},
		{10, "10"}, {12.34, "12.3"}, {150.4, "150"}, {1306.2, "1,306"}, {663744, "663,744"}, {-2500, "-2,500"},
	} {
		if got := fmtNum(tc.v); got != tc.want {
			t.Errorf("fmtNum(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestCellSummary(t *testing.T) {
	for _, tc := range []struct {
		samples []float64
		want    string
	}{
		{nil, "–"},
		{[]float64{3}, "3.00"},
		{[]float64{3, 1, 2}, "2.00 (1.00–3.00)"},
		{[]float64{4, 1, 2, 3}, "2.50 (1.00–4.00)"},
		{[]float64{10, 10, 10}, "10"},
	} {
		c := &cell{Samples: tc.samples}
		c.summarize()
		if got := c.String(); got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.samples, got, tc.want)
		}
	}
}

func TestTargets(t *testing.T) {
	r := &report{byKey: map[string]*figure{}}
	r.fig("wall", "wall", "s", false, atLeastTimes(2, "dj", "restic", "≥2×"), below(1, "dj", "< 1 s"))
	r.fig("mbs", "speed", "MB/s", true, atLeastTimes(2, "dj", "restic", "≥2×"), fractionOf(0.85, "dj", "ceiling", "≥85%"))
	r.add("wall", "dj", 1.5)
	r.add("wall", "restic", 3)
	r.add("mbs", "dj", 300)
	r.add("mbs", "restic", 200)
	r.add("mbs", "ceiling", 400)
	r.finish(nil)
	want := map[string][]bool{"wall": {true, false}, "mbs": {false, false}}
	for _, f := range r.Figures {
		for i, tr := range f.Targets {
			if tr.Pass == nil || *tr.Pass != want[f.Key][i] {
				t.Errorf("%s target %q: pass %v, want %v (value %s)", f.Key, tr.Target, tr.Pass, want[f.Key][i], tr.Value)
			}
		}
	}
	if v, _ := advantage(r, "wall", "dj", "restic"); v != 2 {
		t.Errorf("advantage on a time = %v, want 2", v)
	}
}

func TestParsers(t *testing.T) {
	out := "M    /a/b\n+    /a/c\nM    /a/d\n-    /x\nFiles: 1 new\n"
	if n := countModified(out); n != 2 {
		t.Errorf("countModified = %d, want 2", n)
	}
	iops, err := fioIOPS("fio: warning\n{\"jobs\": [{\"error\": 0, \"read\": {\"iops\": 1234.5}}]}")
	if err != nil || iops != 1234.5 {
		t.Errorf("fioIOPS = %v, %v", iops, err)
	}
	if _, err := fioIOPS("nothing"); err == nil {
		t.Error("fioIOPS accepted output without JSON")
	}
	f := filepath.Join(t.TempDir(), "time")
	os.WriteFile(f, []byte("\tCommand being timed: \"x\"\n\tUser time (seconds): 1.25\n\tSystem time (seconds): 0.50\n\tMaximum resident set size (kbytes): 2048\n"), 0o644)
	var res cmdResult
	if err := parseGNUTime(f, &res); err != nil || res.CPU() != 1.75 || res.MaxRSS != 2 {
		t.Errorf("parseGNUTime: %+v, %v", res, err)
	}
	if got := unescapeMount(`/a\040b`); got != "/a b" {
		t.Errorf("unescapeMount = %q", got)
	}
}

func TestBackupCeiling(t *testing.T) {
	dir := t.TempDir()
	g := newGenRand(1)
	var want int64
	for i, size := range []int64{3 << 20, 100 << 10, 0, 5000} {
		p := filepath.Join(dir, fmt.Sprintf("f%d", i))
		if err := g.writeRandomFile(p, size); err != nil {
			t.Fatal(err)
		}
		want += size
	}
	if err := os.Symlink("f0", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, verify := range []bool{false, true} {
		sec, n, err := backupCeiling(context.Background(), dir, 2, verify)
		if err != nil {
			t.Fatal(err)
		}
		if n != want || sec <= 0 {
			t.Fatalf("backupCeiling(verify %v) = %v s, %d bytes; want > 0 s, %d bytes", verify, sec, n, want)
		}
	}
}
