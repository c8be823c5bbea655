// The writing of file contents: jobs of a few chunks per worker, holes,
// verification, and the metadata of a finished file.

package restorer

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"dj/internal/zeros"
	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/tree"
)

// fileState follows a file whose content is being written.
type fileState struct {
	f         *os.File
	path, rel string
	node      *tree.Node
	dir       *dirState
	offsets   []int64 // offset of each chunk, then the end; -1 when unknown
	sparse    bool
	remaining atomic.Int32 // jobs not yet done
	failed    atomic.Bool
}

type job struct {
	f          *fileState
	start, end int // chunk range
}

// startFile creates the file and hands its content to the workers.
func (r *restorer) startFile(ctx context.Context, d *dirState, fsPath, rel string, n *tree.Node) {
	f, err := os.OpenFile(fsPath, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		r.fail(rel, err)
		return
	}
	fs := &fileState{f: f, path: fsPath, rel: rel, node: n, dir: d, sparse: r.opts.Sparse || n.IsSparse()}
	fs.offsets = make([]int64, len(n.Content)+1)
	var missing error
	for i, id := range n.Content {
		size, ok := r.l.BlobSize(id)
		if !ok || fs.offsets[i] < 0 {
			if missing == nil {
				missing = fmt.Errorf("chunk %d (blob %s) is not in the index", i, id.Short())
			}
			fs.offsets[i+1] = -1
			continue
		}
		fs.offsets[i+1] = fs.offsets[i] + int64(size)
	}
	end := fs.offsets[len(n.Content)]
	switch {
	case missing != nil:
		r.failFile(fs, missing)
		end = 0
		for _, off := range fs.offsets {
			end = max(end, off)
		}
	case uint64(end) != n.Size:
		// Trust the content: a hostile size must not make a huge file.
		r.failFile(fs, fmt.Errorf("content is %d bytes, the snapshot says %d", end, n.Size))
	}
	if err := f.Truncate(end); err != nil {
		r.failFile(fs, err)
	}
	njobs := (len(n.Content) + chunksPerJob - 1) / chunksPerJob
	d.pending.Add(1)
	fs.remaining.Store(int32(njobs) + 1) // +1 until all jobs are queued
	for i := 0; i < len(n.Content); i += chunksPerJob {
		j := job{f: fs, start: i, end: min(i+chunksPerJob, len(n.Content))}
		select {
		case r.jobs <- j:
		case <-ctx.Done():
			r.jobDone(ctx, fs)
		}
	}
	r.jobDone(ctx, fs)
}

// writeChunks writes one range of a file's chunks.
func (r *restorer) writeChunks(ctx context.Context, j job, buf []byte) []byte {
	fs := j.f
	for i := j.start; i < j.end; i++ {
		if ctx.Err() != nil {
			return buf
		}
		off, next := fs.offsets[i], fs.offsets[i+1]
		if off < 0 || next < 0 {
			continue // reported by startFile
		}
		id := fs.node.Content[i]
		if fs.sparse && r.zero(id) {
			r.bytes.Add(uint64(next - off))
			continue
		}
		b, err := r.l.LoadBlob(ctx, id, buf)
		if err != nil {
			if ctx.Err() == nil {
				r.failFile(fs, fmt.Errorf("chunk %d at offset %d: %w", i, off, err))
			}
			continue
		}
		buf = b
		if int64(len(b)) != next-off {
			r.failFile(fs, fmt.Errorf("chunk %d at offset %d: %d bytes, the index says %d", i, off, len(b), next-off))
			continue
		}
		if err := writeAt(fs.f, b, off, fs.sparse); err != nil {
			r.failFile(fs, err)
			return buf
		}
		r.bytes.Add(uint64(len(b)))
	}
	return buf
}

// maxBatchJobs bounds the jobs one worker takes at once.
const maxBatchJobs = 256

// gather adds to batch (one job) the jobs waiting in the queue, while
// their chunks come to less than Options.BatchBytes, when batching is on.
func (r *restorer) gather(batch []job) []job {
	if r.batcher == nil {
		return batch
	}
	size := r.jobBytes(batch[0])
	for size < int64(r.opts.BatchBytes) && len(batch) < maxBatchJobs {
		select {
		case j, ok := <-r.jobs:
			if !ok {
				return batch
			}
			batch = append(batch, j)
			size += r.jobBytes(j)
		default:
			return batch
		}
	}
	return batch
}

// jobBytes is the size of a job's chunks.
func (r *restorer) jobBytes(j job) int64 {
	start, end := j.f.offsets[j.start], j.f.offsets[j.end]
	if start < 0 || end < start {
		return 0
	}
	return end - start
}

// writeBatch writes the chunks of several jobs, loaded together.
func (r *restorer) writeBatch(ctx context.Context, batch []job) {
	type chunk struct {
		f *fileState
		i int
	}
	var ids []crypto.ID
	var chunks []chunk
	for _, j := range batch {
		fs := j.f
		for i := j.start; i < j.end; i++ {
			off, next := fs.offsets[i], fs.offsets[i+1]
			if off < 0 || next < 0 {
				continue // reported by startFile
			}
			id := fs.node.Content[i]
			if fs.sparse && r.zero(id) {
				r.bytes.Add(uint64(next - off))
				continue
			}
			ids = append(ids, id)
			chunks = append(chunks, chunk{fs, i})
		}
	}
	_ = r.batcher.LoadBlobs(ctx, ids, func(k int, b []byte, err error) {
		fs, i := chunks[k].f, chunks[k].i
		off, next := fs.offsets[i], fs.offsets[i+1]
		switch {
		case err != nil:
			if ctx.Err() == nil {
				r.failFile(fs, fmt.Errorf("chunk %d at offset %d: %w", i, off, err))
			}
		case int64(len(b)) != next-off:
			r.failFile(fs, fmt.Errorf("chunk %d at offset %d: %d bytes, the index says %d", i, off, len(b), next-off))
		default:
			if err := writeAt(fs.f, b, off, fs.sparse); err != nil {
				r.failFile(fs, err)
				return
			}
			r.bytes.Add(uint64(len(b)))
		}
	})
}

// writeAt writes b at off. With sparse set it skips the all-zero blocks
// (aligned to the file offset), which stay holes since the file was
// truncated to its size, empty, before.
func writeAt(f *os.File, b []byte, off int64, sparse bool) error {
	if !sparse {
		_, err := f.WriteAt(b, off)
		return err
	}
	start := -1 // of the current run of data blocks
	for i := 0; i < len(b); {
		end := min(len(b), i+holeBlock-int((off+int64(i))%holeBlock))
		if zeros.All(b[i:end]) {
			if start >= 0 {
				if _, err := f.WriteAt(b[start:i], off+int64(start)); err != nil {
					return err
				}
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i = end
	}
	if start >= 0 {
		_, err := f.WriteAt(b[start:], off+int64(start))
		return err
	}
	return nil
}

func (r *restorer) failFile(fs *fileState, err error) {
	if !fs.failed.Swap(true) {
		r.fail(fs.rel, err)
	}
}

// jobDone drops one count on fs; the last one finishes the file: verify,
// close, metadata, and the count on its directory.
func (r *restorer) jobDone(ctx context.Context, fs *fileState) {
	if fs.remaining.Add(-1) != 0 {
		return
	}
	if ctx.Err() != nil {
		fs.f.Close()
		r.dirDone(ctx, fs.dir)
		return
	}
	if r.opts.Verify && !fs.failed.Load() {
		if err := r.verify(fs); err != nil {
			r.failFile(fs, fmt.Errorf("verify: %w", err))
		}
	}
	if err := fs.f.Close(); err != nil {
		r.failFile(fs, err)
	}
	r.files.Add(1)
	r.applyMeta(fs.path, fs.rel, fs.node, !fs.failed.Load())
	r.dirDone(ctx, fs.dir)
}

// verify reads the restored file back and checks every chunk.
func (r *restorer) verify(fs *fileState) error {
	var buf []byte
	for i, id := range fs.node.Content {
		off, size := fs.offsets[i], fs.offsets[i+1]-fs.offsets[i]
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := fs.f.ReadAt(buf, off); err != nil {
			return fmt.Errorf("read chunk %d at offset %d: %w", i, off, err)
		}
		if r.l.BlobID(buf) != id {
			return fmt.Errorf("chunk %d at offset %d differs from the snapshot", i, off)
		}
	}
	fi, err := fs.f.Stat()
	if err != nil {
		return err
	}
	if end := fs.offsets[len(fs.node.Content)]; fi.Size() != end {
		return fmt.Errorf("file is %d bytes, the snapshot says %d", fi.Size(), end)
	}
	return nil
}

// applyMeta sets the metadata of n on p; without times the modification
// time stays that of the restore (for damaged files).
func (r *restorer) applyMeta(p, rel string, n *tree.Node, times bool) {
	if !times {
		c := *n
		c.ModTime = time.Now()
		c.AccessTime = c.ModTime
		n = &c
	}
	warn, err := fsnode.Apply(p, n, r.apply)
	if warn != nil {
		r.warn(rel, warn)
	}
	if err != nil {
		r.fail(rel, fmt.Errorf("metadata: %w", err))
	}
}
