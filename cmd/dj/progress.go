package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"dj/repo/archiver"
)

// byteProgress draws a progress bar of bytes with files, rate and ETA on a
// terminal; it is nil when output is not a terminal or --quiet/--json.
type byteProgress struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newByteProgress(e *env, what string) *byteProgress {
	if !e.progressWanted() {
		return nil
	}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription(what),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
	)
	return &byteProgress{bar: bar}
}

// set moves the bar; total 0 means unknown.
func (p *byteProgress) set(done, total uint64, desc string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if total > 0 && p.bar.GetMax64() != int64(total) {
		p.bar.ChangeMax64(int64(total))
	}
	p.bar.Describe(desc)
	_ = p.bar.Set64(int64(done))
}

func (p *byteProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.bar.Finish()
	_ = p.bar.Clear()
}

// statusTerm keeps a block of status lines at the bottom of a terminal
// (restic's way: a status line, then the files being read) and lets other
// output scroll above it. Without a terminal it prints the first status
// line as a plain line each time (only when asked for with DJ_PROGRESS_FPS).
type statusTerm struct {
	mu    sync.Mutex
	out   io.Writer // where the status goes (stderr)
	fd    int       // out's descriptor, for its size; -1 when not a terminal
	other io.Writer // stdout when it is the same terminal, else nil
	shown int       // status lines on the screen now
	lines []string  // the status to draw
}

// newStatusTerm returns a status area on stderr, or nil when there is to be
// none: with --quiet or --json, or when stderr is not a terminal and
// DJ_PROGRESS_FPS is not set.
func newStatusTerm(e *env) *statusTerm {
	if e.quiet || e.json {
		return nil
	}
	s := &statusTerm{out: e.stderr, fd: -1}
	if isTerminal(e.stderr) {
		s.fd = int(e.stderr.(*os.File).Fd())
		if isTerminal(e.stdout) {
			s.other = e.stdout
		}
	} else if os.Getenv("DJ_PROGRESS_FPS") == "" {
		return nil
	}
	return s
}

// progressInterval is how often progress is shown: 60 times a second as
// restic does, or DJ_PROGRESS_FPS times (restic's RESTIC_PROGRESS_FPS).
func progressInterval() time.Duration {
	fps, err := strconv.ParseFloat(os.Getenv("DJ_PROGRESS_FPS"), 64)
	if err != nil || fps <= 0 || fps > 60 {
		fps = 60
	}
	return time.Duration(float64(time.Second) / fps)
}

// set draws lines as the new status.
func (s *statusTerm) set(lines []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		if len(lines) > 0 {
			fmt.Fprintln(s.out, lines[0])
		}
		return
	}
	s.lines = lines
	s.draw()
}

// draw replaces the status on the screen with s.lines, in one write.
func (s *statusTerm) draw() {
	width, height, err := term.GetSize(s.fd)
	if err != nil || width < 10 {
		width, height = 80, 25
	}
	lines := s.lines
	if room := max(1, height-2); len(lines) > room {
		lines = lines[:room]
	}
	var b strings.Builder
	s.clearTo(&b)
	for _, l := range lines {
		b.WriteString(truncateWidth(l, width-1))
		b.WriteString("\n")
	}
	s.shown = len(lines)
	_, _ = io.WriteString(s.out, b.String())
}

// clearTo writes what erases the status lines on the screen to b.
func (s *statusTerm) clearTo(b *strings.Builder) {
	if s.shown > 0 {
		fmt.Fprintf(b, "\x1b[%dA\r\x1b[J", s.shown)
		s.shown = 0
	}
}

// erase erases the status lines on the screen, if any.
func (s *statusTerm) erase() {
	var b strings.Builder
	if s.clearTo(&b); b.Len() > 0 {
		_, _ = io.WriteString(s.out, b.String())
	}
}

// print writes text to w (stdout or stderr) above the status. The status
// is drawn again at the next update, so a flood of lines costs no redraws.
func (s *statusTerm) print(w io.Writer, text string) {
	if s == nil {
		_, _ = io.WriteString(w, text)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if w == s.out || w == s.other {
		s.erase()
	}
	_, _ = io.WriteString(w, text)
}

// finish erases the status.
func (s *statusTerm) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.erase()
	s.lines = nil
}

// truncateWidth cuts s to at most n runes, so that no status line wraps.
func truncateWidth(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:max(0, n)])
}

// backupStatus renders a backup's progress as restic does, with the rate
// at the end: a status line and the files being read now, e.g.
//
//	[0:05] 45.20%  1234 files 1.200 GiB, total 5678 files 2.600 GiB, 0 errors ETA 0:06, 245.760 MiB/s
//	/home/ann/photos/img_0001.jpg
func backupStatus(p archiver.Progress) []string {
	var line string
	if p.TotalFiles == 0 && !p.ScanDone {
		line = fmt.Sprintf("[%s] %d files, %s, %d errors", formatElapsed(p.Elapsed), p.FilesDone,
			formatBytes(p.BytesDone), p.Errors)
	} else {
		line = fmt.Sprintf("[%s] %s  %d files %s, total %d files %s, %d errors", formatElapsed(p.Elapsed),
			formatPercent(p.BytesDone, p.TotalBytes), p.FilesDone, formatBytes(p.BytesDone),
			p.TotalFiles, formatBytes(p.TotalBytes), p.Errors)
		if secs := secondsRemaining(p); secs > 0 {
			line += " ETA " + formatSeconds(secs)
		}
	}
	line += ", " + formatRate(p.BytesDone, p.Elapsed)
	return append([]string{line}, p.CurrentFiles...)
}

// secondsRemaining estimates the rest of a backup from its average rate so
// far, once the scan has counted the total (restic's estimate); 0 means
// unknown.
func secondsRemaining(p archiver.Progress) uint64 {
	if !p.ScanDone || p.BytesDone == 0 || p.BytesDone >= p.TotalBytes {
		return 0
	}
	todo := float64(p.TotalBytes - p.BytesDone)
	return uint64(p.Elapsed.Seconds() / float64(p.BytesDone) * todo)
}

// percentDone is the fraction of the total bytes done, at most 1.
func percentDone(done, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return min(1, float64(done)/float64(total))
}

// formatPercent renders done of total as "45.20%", at most "100.00%".
func formatPercent(done, total uint64) string {
	return fmt.Sprintf("%3.2f%%", 100*percentDone(done, total))
}

// formatRate renders bytes over d as "12.345 MiB/s", in the binary units
// of the sizes beside it.
func formatRate(bytes uint64, d time.Duration) string {
	if d <= 0 {
		return formatBytes(0) + "/s"
	}
	return formatBytes(uint64(float64(bytes)/d.Seconds())) + "/s"
}

// formatElapsed renders a duration as restic does: "0:05", "12:34:56".
func formatElapsed(d time.Duration) string {
	return formatSeconds(uint64(max(0, d) / time.Second))
}

// formatSeconds renders seconds as m:ss, or h:mm:ss from an hour on.
func formatSeconds(sec uint64) string {
	h, m, s := sec/3600, sec/60%60, sec%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%d:%02d", m, s)
}
