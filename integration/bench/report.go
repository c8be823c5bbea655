//go:build bench

package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// cell is one figure of one column: its samples and their summary, or a
// text (yes/no, or why there is no number).
type cell struct {
	Samples []float64 `json:"samples,omitempty"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Text    string    `json:"text,omitempty"`
}

func (c *cell) summarize() {
	if len(c.Samples) == 0 {
		return
	}
	s := append([]float64(nil), c.Samples...)
	sort.Float64s(s)
	c.Min, c.Max = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		c.Median = s[n/2]
	} else {
		c.Median = (s[n/2-1] + s[n/2]) / 2
	}
}

func (c *cell) has() bool { return c != nil && len(c.Samples) > 0 }

// String is "median (min–max)", like perf-baseline.md.
func (c *cell) String() string {
	if c == nil {
		return "–"
	}
	if len(c.Samples) == 0 {
		if c.Text != "" {
			return c.Text
		}
		return "–"
	}
	s := fmtNum(c.Median)
	if len(c.Samples) > 1 && fmtNum(c.Min) != fmtNum(c.Max) {
		s += " (" + fmtNum(c.Min) + "–" + fmtNum(c.Max) + ")"
	}
	if c.Text != "" {
		s += " " + c.Text
	}
	return s
}

// figure is one row of a result table.
type figure struct {
	Key    string           `json:"key"`
	Name   string           `json:"name"`
	Unit   string           `json:"unit"`
	Higher bool             `json:"higher_is_better"`
	Cells  map[string]*cell `json:"cells"`
	// Ratio is dj's advantage over restic: dj/restic when higher is
	// better, restic/dj when lower is better; above 1 means dj is ahead.
	Ratio   *float64       `json:"ratio,omitempty"`
	Targets []targetResult `json:"targets,omitempty"`

	specs []targetSpec
	ratio bool // show the ratio column
}

// targetSpec is a goal from the issue, checked against the medians.
type targetSpec struct {
	desc string
	// eval returns the measured value shown next to the goal, whether it
	// is met, and false when there is nothing to judge.
	eval func(f *figure, r *report) (value string, pass bool, ok bool)
}

// targetResult is a goal and how the run did.
type targetResult struct {
	Target string `json:"target"`
	Value  string `json:"value,omitempty"`
	Pass   *bool  `json:"pass,omitempty"`
}

// report is the result of one section.
type report struct {
	Section  string            `json:"section"`
	Date     string            `json:"date"`
	Quick    bool              `json:"quick"`
	Runs     int               `json:"runs"`
	Machine  map[string]string `json:"machine"`
	Versions map[string]string `json:"versions"`
	Corpus   map[string]any    `json:"corpus,omitempty"`
	Columns  []string          `json:"columns"`
	Figures  []*figure         `json:"figures"`
	Notes    []string          `json:"notes,omitempty"`
	Problems []string          `json:"problems,omitempty"`
	Duration float64           `json:"duration_seconds"`

	byKey map[string]*figure
	start time.Time
}

func (h *harness) newReport(section string, columns ...string) *report {
	machine := map[string]string{}
	for k, v := range h.machine {
		machine[k] = v
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			machine["load average at the start (1, 5, 15 min)"] = strings.Join(f[:3], " ")
		}
	}
	return &report{Section: section, Date: time.Now().Format("2006-01-02"), Quick: h.cfg.quick, Runs: h.cfg.runs,
		Machine: machine, Versions: h.versions, Columns: columns, byKey: map[string]*figure{}, start: time.Now()}
}

// fig declares a row. Rows appear in the order they are declared.
func (r *report) fig(key, name, unit string, higher bool, specs ...targetSpec) *figure {
	f := &figure{Key: key, Name: name, Unit: unit, Higher: higher, Cells: map[string]*cell{}, specs: specs}
	r.Figures = append(r.Figures, f)
	r.byKey[key] = f
	return f
}

// withRatio shows dj's advantage over restic in the ratio column.
func (f *figure) withRatio() *figure { f.ratio = true; return f }

func (r *report) cell(key, col string) *cell {
	f := r.byKey[key]
	if f == nil {
		panic("bench: undeclared figure " + key)
	}
	c := f.Cells[col]
	if c == nil {
		c = &cell{}
		f.Cells[col] = c
	}
	return c
}

// add records one sample.
func (r *report) add(key, col string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	c := r.cell(key, col)
	c.Samples = append(c.Samples, v)
}

// text sets the text of a cell (for yes/no figures, and failures).
func (r *report) text(key, col, s string) {
	c := r.cell(key, col)
	if c.Text == "" || c.Text == "yes" {
		c.Text = s
	} else if !strings.Contains(c.Text, s) {
		c.Text += ", " + s
	}
}

func (r *report) median(key, col string) (float64, bool) {
	f := r.byKey[key]
	if f == nil {
		return 0, false
	}
	c := f.Cells[col]
	if !c.has() {
		return 0, false
	}
	return c.Median, true
}

// finish summarizes the cells and judges the targets.
func (r *report) finish(problems []string) {
	r.Duration = time.Since(r.start).Seconds()
	r.Problems = problems
	// Summarize every cell first: a target may compare with a figure
	// declared after its own.
	for _, f := range r.Figures {
		for _, c := range f.Cells {
			c.summarize()
		}
	}
	for _, f := range r.Figures {
		if f.ratio {
			if v, ok := advantage(r, f.Key, "dj", "restic"); ok {
				f.Ratio = &v
			}
		}
		f.Targets = nil
		for _, s := range f.specs {
			tr := targetResult{Target: s.desc}
			if v, pass, ok := s.eval(f, r); ok {
				tr.Value = v
				tr.Pass = &pass
			}
			f.Targets = append(f.Targets, tr)
		}
	}
}

// advantage is how far column a is ahead of column b on figure key: a/b
// when higher is better, b/a when lower is better.
func advantage(r *report, key, a, b string) (float64, bool) {
	f := r.byKey[key]
	va, oka := r.median(key, a)
	vb, okb := r.median(key, b)
	if !oka || !okb || va <= 0 || vb <= 0 {
		return 0, false
	}
	if f.Higher {
		return va / vb, true
	}
	return vb / va, true
}

// atLeastTimes: column col is at least x times better than column ref.
func atLeastTimes(x float64, col, ref, desc string) targetSpec {
	return targetSpec{desc: desc, eval: func(f *figure, r *report) (string, bool, bool) {
		v, ok := advantage(r, f.Key, col, ref)
		if !ok {
			return "", false, false
		}
		return fmt.Sprintf("%.2f×", v), v >= x*(1-1e-9), true
	}}
}

// fractionOf: column col reaches at least x of column ref (higher is better).
func fractionOf(x float64, col, ref, desc string) targetSpec {
	return targetSpec{desc: desc, eval: func(f *figure, r *report) (string, bool, bool) {
		a, oka := r.median(f.Key, col)
		b, okb := r.median(f.Key, ref)
		if !oka || !okb || b <= 0 {
			return "", false, false
		}
		return fmt.Sprintf("%.0f%%", 100*a/b), a/b >= x, true
	}}
}

// fractionOfFigure: column col reaches at least x of column refCol of
// figure refKey (higher is better).
func fractionOfFigure(x float64, col, refKey, refCol, desc string) targetSpec {
	return targetSpec{desc: desc, eval: func(f *figure, r *report) (string, bool, bool) {
		a, oka := r.median(f.Key, col)
		b, okb := r.median(refKey, refCol)
		if !oka || !okb || b <= 0 {
			return "", false, false
		}
		return fmt.Sprintf("%.0f%%", 100*a/b), a/b >= x, true
	}}
}

// below: the median of column col is under x.
func below(x float64, col, desc string) targetSpec {
	return targetSpec{desc: desc, eval: func(f *figure, r *report) (string, bool, bool) {
		a, ok := r.median(f.Key, col)
		if !ok {
			return "", false, false
		}
		return fmtNum(a) + " " + f.Unit, a < x, true
	}}
}

// atMost: the median of column col is at most x.
func atMost(x float64, col, desc string) targetSpec {
	return targetSpec{desc: desc, eval: func(f *figure, r *report) (string, bool, bool) {
		a, ok := r.median(f.Key, col)
		if !ok {
			return "", false, false
		}
		return fmtNum(a) + " " + f.Unit, a <= x, true
	}}
}

// atLeast: the median of column col is at least x (higher is better).
func atLeast(x float64, col, desc string) targetSpec {
	return targetSpec{desc: desc, eval: func(f *figure, r *report) (string, bool, bool) {
		a, ok := r.median(f.Key, col)
		if !ok {
			return "", false, false
		}
		return fmtNum(a) + " " + f.Unit, a >= x, true
	}}
}

// fmtNum prints three significant digits, and whole numbers with thousands
// separators from 1000 on, like perf-baseline.md.
func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1000 || (a >= 10 && v == math.Trunc(v) && a < 1e15):
		return commas(int64(math.Round(v)))
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a >= 0.01:
		return fmt.Sprintf("%.3f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func commas(n int64) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// markdown renders the report as a markdown document.
func (r *report) markdown() string {
	var b strings.Builder
	quick := ""
	if r.Quick {
		quick = " (BENCH_QUICK: smaller corpus, not comparable with full runs)"
	}
	fmt.Fprintf(&b, "# dj bench: %s section, %s%s\n\n", r.Section, r.Date, quick)
	fmt.Fprintf(&b, "Cells show the **median (min–max)** of %d run(s) unless a row says otherwise. ", r.Runs)
	b.WriteString("\"dj vs restic\" is dj's advantage: dj/restic for speeds, restic/dj for times, sizes and memory; above 1× dj is ahead. ")
	b.WriteString("Targets are the goals from the issues; the harness only reports them. ")
	b.WriteString("Units: MB = 10^6 bytes, MiB = 2^20 bytes. See integration/bench/README.md for the method.\n\n")
	b.WriteString("## Machine and versions\n")
	for _, k := range sortedKeys(r.Machine) {
		fmt.Fprintf(&b, "- %s: %s\n", k, r.Machine[k])
	}
	for _, k := range sortedKeys(r.Versions) {
		fmt.Fprintf(&b, "- %s: %s\n", k, r.Versions[k])
	}
	if len(r.Corpus) > 0 {
		b.WriteString("\n## Corpus\n")
		for _, k := range sortedKeys(r.Corpus) {
			fmt.Fprintf(&b, "- %s: %v\n", k, r.Corpus[k])
		}
	}
	b.WriteString("\n## Results\n")
	b.WriteString(r.table())
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if len(r.Problems) > 0 {
		b.WriteString("\n## Problems during the run\n")
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(p, "\n", " "))
		}
	}
	fmt.Fprintf(&b, "\nThe section took %s.\n", time.Duration(r.Duration*float64(time.Second)).Round(time.Second))
	return b.String()
}

// table renders the figures as a markdown table.
func (r *report) table() string {
	var b strings.Builder
	b.WriteString("| figure | unit |")
	for _, c := range r.Columns {
		fmt.Fprintf(&b, " %s |", c)
	}
	b.WriteString(" dj vs restic | target | result |\n|---|---|")
	for range r.Columns {
		b.WriteString("---:|")
	}
	b.WriteString("---:|---|---|\n")
	for _, f := range r.Figures {
		name := strings.ReplaceAll(f.Name, "|", `\|`)
		fmt.Fprintf(&b, "| %s | %s |", name, f.Unit)
		for _, c := range r.Columns {
			fmt.Fprintf(&b, " %s |", strings.ReplaceAll(f.Cells[c].String(), "|", `\|`))
		}
		ratio := ""
		if f.Ratio != nil {
			ratio = fmt.Sprintf("%.2f×", *f.Ratio)
		}
		var goals, results []string
		for _, t := range f.Targets {
			goals = append(goals, t.Target)
			switch {
			case t.Pass == nil:
				results = append(results, "n/a")
			case *t.Pass:
				results = append(results, "PASS "+t.Value)
			default:
				results = append(results, "FAIL "+t.Value)
			}
		}
		fmt.Fprintf(&b, " %s | %s | %s |\n", ratio, strings.Join(goals, "; "), strings.Join(results, "; "))
	}
	return b.String()
}

// writeReport prints the table and writes the .md and .json files.
func (h *harness) writeReport(r *report) error {
	h.mu.Lock()
	probs := append([]string(nil), h.problems...)
	h.problems = nil
	h.mu.Unlock()
	r.finish(probs)
	md := r.markdown()
	fmt.Fprintf(h.out, "\n%s\n", md)
	if err := os.MkdirAll(h.cfg.results, 0o755); err != nil {
		return err
	}
	name := r.Date + "-" + r.Section
	if r.Quick {
		name += "-quick"
	}
	base := filepath.Join(h.cfg.results, name)
	js, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".md", []byte(md), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", append(js, '\n'), 0o644); err != nil {
		return err
	}
	h.logf("wrote %s.md and .json", base)
	return nil
}
