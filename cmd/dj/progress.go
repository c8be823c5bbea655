package main

import (
	"fmt"
	"sync"

	"github.com/schollz/progressbar/v3"

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

type backupProgress struct{ *byteProgress }

func newBackupProgress(e *env) *backupProgress {
	b := newByteProgress(e, "scanning")
	if b == nil {
		return nil
	}
	return &backupProgress{b}
}

func (b *backupProgress) update(p archiver.Progress) {
	total := uint64(0)
	desc := fmt.Sprintf("%d files", p.FilesDone)
	if p.ScanDone {
		total = p.TotalBytes
		if total < p.BytesDone {
			total = p.BytesDone
		}
		desc = fmt.Sprintf("%d/%d files", p.FilesDone, p.TotalFiles)
	}
	if p.Errors > 0 {
		desc += fmt.Sprintf(", %d errors", p.Errors)
	}
	b.set(p.BytesDone, total, desc)
}
