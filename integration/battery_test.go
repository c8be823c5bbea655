package integration

// The reliability battery's shared conventions (issue 12). Every battery
// test is named TestBattery* and runs in two lengths: a short one in
// `make test` and the full one in `make stress`, which sets DJ_STRESS=1.
// Each records what it tried in DJ_RELIABILITY_DIR (set by `make stress`),
// from which scripts/reliability-report.sh writes
// integration/bench/RELIABILITY.md.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// stressMode reports whether the battery runs at full length (`make stress`).
func stressMode() bool { return os.Getenv("DJ_STRESS") != "" }

// batteryRuns is the number of repetitions of one battery case: short in
// `make test` (and with -short), full in `make stress`; DJ_BATTERY_RUNS=N
// sets it for every case (a partial stress run).
func batteryRuns(short, full int) int {
	if n, err := strconv.Atoi(os.Getenv("DJ_BATTERY_RUNS")); err == nil && n > 0 {
		return n
	}
	if stressMode() {
		return full
	}
	return short
}

var reliabilityMu sync.Mutex

// recordReliability appends one row to the battery's record of section
// (a file DJ_RELIABILITY_DIR/<section>.md; nothing when the variable is
// unset, as in `make test`). cells are the row's columns, header the
// table's column names, written once when the file is new. A row says
// what was tried, how many times, and how dj answered, e.g.
//
//	recordReliability(t, "kills", []string{"command", "backend", "kills", "survived"},
//		"backup", "local", "200", "200")
func recordReliability(t *testing.T, section string, header []string, cells ...string) {
	t.Helper()
	dir := os.Getenv("DJ_RELIABILITY_DIR")
	if dir == "" {
		return
	}
	reliabilityMu.Lock()
	defer reliabilityMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("reliability record: %v", err)
		return
	}
	path := filepath.Join(dir, section+".md")
	var b strings.Builder
	if _, err := os.Stat(path); os.IsNotExist(err) {
		fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	}
	esc := make([]string, len(cells))
	for i, c := range cells {
		esc[i] = strings.ReplaceAll(c, "|", `\|`)
	}
	fmt.Fprintf(&b, "| %s |\n", strings.Join(esc, " | "))
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("reliability record: %v", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(b.String()); err != nil {
		t.Errorf("reliability record: %v", err)
	}
}
