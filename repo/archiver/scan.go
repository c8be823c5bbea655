// Progress: the scan that counts the files ahead of the backup for an
// ETA, and the periodic progress report.

package archiver

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"time"
)

func (a *archiver) progress() Progress {
	p := Progress{
		Elapsed: time.Since(a.start), FilesDone: a.files.Load(), DirsDone: a.dirs.Load(),
		BytesDone: a.bytes.Load(), BytesAdded: a.added.Load(), Errors: a.errCount.Load(),
		ScanDone: a.scanDone.Load(), TotalFiles: a.totalFiles.Load(), TotalBytes: a.totalBytes.Load(),
	}
	if c := a.current.Load(); c != nil {
		p.Current = *c
	}
	if q := a.queued.Load(); q > 0 {
		p.FilesDone -= min(p.FilesDone, uint64(q)) // the files done, not the files found
	}
	a.reading.Range(func(k, _ any) bool {
		p.CurrentFiles = append(p.CurrentFiles, k.(string))
		return true
	})
	sort.Strings(p.CurrentFiles)
	return p
}

func (a *archiver) startProgress() func() {
	if a.opts.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(a.opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				a.opts.Progress(a.progress())
				return
			case <-t.C:
				a.opts.Progress(a.progress())
			}
		}
	}()
	return func() { close(stop); <-done }
}

// scan counts the files and bytes to back up, for the progress ETA.
func (a *archiver) scan(ctx context.Context, paths []string) {
	for _, p := range paths {
		if fi, err := os.Lstat(p); err == nil && !a.excludedLeaf(p, fi) {
			a.scanEntry(ctx, p, fi)
		}
	}
	if ctx.Err() == nil { // a scan cut short has no totals
		a.scanDone.Store(true)
	}
}

func (a *archiver) scanEntry(ctx context.Context, path string, fi os.FileInfo) {
	if ctx.Err() != nil {
		return
	}
	if !fi.IsDir() {
		if fi.Mode().IsRegular() { // counted as the backup counts files
			a.totalFiles.Add(1)
			a.totalBytes.Add(uint64(fi.Size()))
		}
		return
	}
	names, _ := readDirNames(path)
	var tags []string
	if len(a.opts.ExcludeIfPresent) > 0 {
		tags = a.taggedBy(path)
	}
	for _, name := range names {
		if excludedByTag(tags, name) {
			continue
		}
		cpath := filepath.Join(path, name)
		cfi, err := os.Lstat(cpath)
		if err != nil || (a.opts.Exclude != nil && a.opts.Exclude(cpath, cfi)) {
			continue
		}
		a.scanEntry(ctx, cpath, cfi)
	}
}
