package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"dj/repo/archiver"
	"dj/repo/snapshot"
)

// backupReport prints what a backup does the way restic 0.14 does: the
// progress on a terminal (or status lines with --json), the files done
// with -v, the files that could not be read, and the summary.
//
// Text goes to stdout and errors to stderr; with --json every line is one
// JSON message (restic's message types "status", "verbose_status",
// "error" and "summary"), the errors on stderr as restic prints them.
type backupReport struct {
	e      *env
	status *statusTerm // nil: no progress drawn (not a terminal, --quiet, --json)

	mu          sync.Mutex // orders the lines written by the archiver's goroutines
	scanShown   bool
	stdoutJSON  *json.Encoder
	stderrJSON  *json.Encoder
	verbosity   int
	showsStatus bool // JSON status lines
}

func newBackupReport(e *env) *backupReport {
	r := &backupReport{e: e, status: newStatusTerm(e), verbosity: e.verbosity,
		stdoutJSON: jsonEncoder(e.stdout), stderrJSON: jsonEncoder(e.stderr)}
	if e.quiet {
		r.verbosity = 0
	}
	r.showsStatus = e.json && !e.quiet
	return r
}

// start prints which parent snapshot the backup compares against (and with
// -v what it backs up); paths is nil for --stdin.
func (r *backupReport) start(parent *snapshot.Snapshot, paths []string) {
	if r.e.json || paths == nil {
		return
	}
	if parent != nil {
		r.e.printf("using parent snapshot %s\n", parent.ID.Short())
	} else if r.verbosity >= 1 {
		r.e.printf("no parent snapshot found, will read all files\n")
	}
	if r.verbosity >= 1 {
		r.e.printf("start scan on %v\nstart backup on %v\n", paths, paths)
	}
}

// setup points the archiver's callbacks at the report.
func (r *backupReport) setup(opts *archiver.Options) {
	opts.Warn = r.warn
	if r.status != nil || r.showsStatus || r.verbosity >= 1 {
		opts.Progress = r.progress
		opts.ProgressInterval = progressInterval()
		opts.Scan = true
	}
	if r.verbosity >= 1 {
		opts.ItemDone = r.item
	}
}

// jsonStatus is restic's "status" message.
type jsonStatus struct {
	MessageType      string   `json:"message_type"`
	SecondsElapsed   uint64   `json:"seconds_elapsed,omitempty"`
	SecondsRemaining uint64   `json:"seconds_remaining,omitempty"`
	PercentDone      float64  `json:"percent_done"`
	TotalFiles       uint64   `json:"total_files,omitempty"`
	FilesDone        uint64   `json:"files_done,omitempty"`
	TotalBytes       uint64   `json:"total_bytes,omitempty"`
	BytesDone        uint64   `json:"bytes_done,omitempty"`
	ErrorCount       uint64   `json:"error_count,omitempty"`
	CurrentFiles     []string `json:"current_files,omitempty"`
}

// jsonVerbose is restic's "verbose_status" message (with -v). The sizes
// in the repository are not known per item and stay 0.
type jsonVerbose struct {
	MessageType        string  `json:"message_type"`
	Action             string  `json:"action"`
	Item               string  `json:"item"`
	Duration           float64 `json:"duration"`
	DataSize           uint64  `json:"data_size"`
	DataSizeInRepo     uint64  `json:"data_size_in_repo"`
	MetadataSize       uint64  `json:"metadata_size"`
	MetadataSizeInRepo uint64  `json:"metadata_size_in_repo"`
	TotalFiles         uint64  `json:"total_files"`
}

// jsonError is restic's "error" message.
type jsonError struct {
	MessageType string `json:"message_type"`
	Error       struct {
		Message string `json:"message"`
	} `json:"error"`
	During string `json:"during"`
	Item   string `json:"item"`
}

// jsonSummary is restic's "summary" message, with restic's field names
// and order; data_added_packed is the stored size of what was added
// (restic prints it from 0.15 on).
type jsonSummary struct {
	MessageType string `json:"message_type"`
	snapshot.Counts
	TotalDuration float64 `json:"total_duration"`
	SnapshotID    string  `json:"snapshot_id,omitempty"`
	DryRun        bool    `json:"dry_run,omitempty"`
}

// progress shows the backup's progress (called by the archiver's ticker).
func (r *backupReport) progress(p archiver.Progress) {
	if r.verbosity >= 1 && p.ScanDone && !r.scanShown {
		r.scanShown = true
		r.scanFinished(p)
	}
	if r.showsStatus {
		st := jsonStatus{MessageType: "status", SecondsElapsed: uint64(p.Elapsed / time.Second),
			SecondsRemaining: secondsRemaining(p), FilesDone: p.FilesDone, BytesDone: p.BytesDone,
			ErrorCount: p.Errors, CurrentFiles: p.CurrentFiles}
		if p.TotalFiles > 0 || p.ScanDone {
			st.TotalFiles, st.TotalBytes = p.TotalFiles, p.TotalBytes
			st.PercentDone = percentDone(p.BytesDone, p.TotalBytes)
		}
		r.writeJSON(r.stdoutJSON, st)
		return
	}
	if r.status != nil {
		r.status.set(backupStatus(p))
	}
}

// scanFinished reports the totals of the scan (with -v). The scan's
// duration is known to the progress interval.
func (r *backupReport) scanFinished(p archiver.Progress) {
	if r.e.json {
		r.writeJSON(r.stdoutJSON, jsonVerbose{MessageType: "verbose_status", Action: "scan_finished",
			Duration: p.Elapsed.Seconds(), DataSize: p.TotalBytes, TotalFiles: p.TotalFiles})
		return
	}
	r.text(r.e.stdout, fmt.Sprintf("scan finished in %.3fs: %d files, %s\n", p.Elapsed.Seconds(), p.TotalFiles, formatBytes(p.TotalBytes)))
}

// item lists a finished file or directory: with --json -v every one, as
// restic does; in text -v the new and modified files, -vv everything.
func (r *backupReport) item(it archiver.Item) {
	path := it.Path
	if it.Dir {
		path += "/"
	}
	action := map[archiver.ItemAction]string{archiver.ItemNew: "new", archiver.ItemModified: "modified", archiver.ItemUnchanged: "unchanged"}[it.Action]
	if r.e.json {
		v := jsonVerbose{MessageType: "verbose_status", Action: action, Item: path, Duration: it.Duration.Seconds()}
		if it.Dir {
			v.MetadataSize = it.TreeSize
		} else {
			v.DataSize = it.DataAdded
		}
		r.writeJSON(r.stdoutJSON, v)
		return
	}
	if r.verbosity < 2 && (it.Dir || it.Action == archiver.ItemUnchanged) {
		return
	}
	r.text(r.e.stdout, itemLine(action, path, it)+"\n")
}

// itemLine renders a finished item as restic -vv does, e.g.
// "new       /home/ann/a.txt, saved in 0.012s (1.205 KiB added)".
func itemLine(action, path string, it archiver.Item) string {
	head := fmt.Sprintf("%-9s %s", action, path)
	switch {
	case it.Action == archiver.ItemUnchanged:
		return head
	case it.Dir:
		// Directories add no data, only their tree.
		return fmt.Sprintf("%s, saved in %.3fs (0 B added, 0 B stored, %s metadata)", head, it.Duration.Seconds(), formatBytes(it.TreeSize))
	default:
		return fmt.Sprintf("%s, saved in %.3fs (%s added)", head, it.Duration.Seconds(), formatBytes(it.DataAdded))
	}
}

// warn reports a file that could not be read (the backup goes on).
func (r *backupReport) warn(path string, err error) {
	if r.e.json {
		m := jsonError{MessageType: "error", During: "archival", Item: path}
		m.Error.Message = err.Error()
		r.writeJSON(r.stderrJSON, m)
		return
	}
	r.text(r.e.stderr, fmt.Sprintf("error: %s: %v\n", path, unwrapPathError(err)))
}

func (r *backupReport) writeJSON(enc *json.Encoder, v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = enc.Encode(v)
}

// text writes a line above the progress, unless --quiet (errors always).
func (r *backupReport) text(w io.Writer, s string) {
	if r.e.quiet && w != r.e.stderr {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.print(w, s)
}

// finish erases the progress.
func (r *backupReport) finish() {
	if r.status != nil {
		r.status.finish()
	}
}

// summary prints the backup's statistics as restic does.
func (r *backupReport) summary(sn *snapshot.Snapshot, dryRun bool) {
	s := sn.Summary
	d := s.BackupEnd.Sub(s.BackupStart)
	if r.e.json {
		m := jsonSummary{MessageType: "summary", Counts: s.Counts, TotalDuration: d.Seconds(), DryRun: dryRun}
		if !dryRun && !sn.ID.IsNull() { // no snapshot written: no ID (as restic)
			m.SnapshotID = sn.ID.Short()
		}
		r.writeJSON(r.stdoutJSON, m)
		return
	}
	e := r.e
	e.printf("\n")
	e.printf("Files:       %5d new, %5d changed, %5d unmodified\n", s.FilesNew, s.FilesChanged, s.FilesUnmodified)
	e.printf("Dirs:        %5d new, %5d changed, %5d unmodified\n", s.DirsNew, s.DirsChanged, s.DirsUnmodified)
	if r.verbosity >= 1 {
		e.printf("Data Blobs:  %5d new\n", s.DataBlobs)
		e.printf("Tree Blobs:  %5d new\n", s.TreeBlobs)
	}
	verb := "Added to the repository"
	if dryRun {
		verb = "Would add to the repository"
	}
	e.printf("%s: %-5s (%-5s stored)\n", verb, formatBytes(s.DataAdded), formatBytes(s.DataAddedPacked))
	e.printf("\n")
	e.printf("processed %d files, %s in %s\n", s.TotalFilesProcessed, formatBytes(s.TotalBytesProcessed), formatElapsed(d))
	switch {
	case dryRun:
	case sn.ID.IsNull(): // --skip-if-unchanged
		e.printf("skipped creating snapshot: nothing changed since the parent snapshot\n")
	default:
		e.printf("snapshot %s saved\n", sn.ID.Short())
	}
}
