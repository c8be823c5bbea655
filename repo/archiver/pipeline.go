// Pipeline plumbing: the file workers (read and chunk, file.go) hand chunks
// to the blob workers (hash, compress, seal: the CPU stage) through
// blobJobs; chunk buffers come from a bounded pool. The blob workers hand
// sealed blobs to the repository's packer, whose uploads are a stage of
// their own with a bounded queue (repo/packer.go): no blob worker waits
// for an upload while the queue has room.

package archiver

import (
	"context"
	"io"
	"sync"

	"dj/internal/zeros"
	"dj/repo/chunker"
	"dj/repo/crypto"
	"dj/repo/pack"
)

type blobJob struct {
	buf []byte
	res *blobResult
}

type blobResult struct {
	done  chan struct{}
	id    crypto.ID
	added bool
	err   error
}

// startWorkers starts the file and blob workers and returns a function that
// stops them after the queues drain.
func (a *archiver) startWorkers(ctx context.Context) func() {
	// The walker runs ahead of the file workers by up to prefetchAhead
	// files, and asks the kernel to start reading each one (prefetch), so
	// the disk has many requests outstanding while the workers compress.
	a.fileJobs = make(chan fileJob, prefetchAhead)
	a.blobJobs = make(chan blobJob, a.opts.BlobWorkers)
	// Chunk buffers in flight: enough to keep every blob worker busy while
	// file workers fill more. Each holds at most one chunk (max 8 MiB).
	nbuf := a.opts.BlobWorkers + a.opts.FileWorkers
	a.bufs = make(chan []byte, nbuf)
	for i := 0; i < nbuf; i++ {
		a.bufs <- nil
	}
	var fwg, bwg sync.WaitGroup
	for i := 0; i < a.opts.FileWorkers; i++ {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			ch := chunker.NewWithSizes(nil, a.repo.Gear(), a.minSize, a.avgSize, a.maxSize)
			for job := range a.fileJobs {
				a.saveFile(ctx, ch, job)
			}
		}()
	}
	for i := 0; i < a.opts.BlobWorkers; i++ {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			for job := range a.blobJobs {
				job.res.id, job.res.added, job.res.err = a.saveData(ctx, job.buf)
				a.putChunkBuf(job.buf)
				close(job.res.done)
			}
		}()
	}
	return func() {
		close(a.fileJobs)
		fwg.Wait()
		close(a.blobJobs)
		bwg.Wait()
	}
}

// chunkBufSize is the capacity of the pooled chunk buffers: twice the
// average chunk size holds all but a few percent of content-defined
// chunks; a backup with fixed-size chunks uses buffers of their size.
func (a *archiver) chunkBufSize() int { return a.bufCap }

// fixedSize is the size of fixed chunks.
func (a *archiver) fixedSize() int {
	if a.opts.FixedChunkSize > 0 {
		return a.opts.FixedChunkSize
	}
	return chunker.FixedSize
}

// chunkSource is a chunker: content-defined (chunker.Chunker) or
// fixed-size (chunker.Fixed).
type chunkSource interface {
	Reset(r io.Reader)
	Next(buf []byte) ([]byte, error)
}

// knownZero reports whether chunk is all zeros and the repository has
// the blob of such a chunk already, and returns its id: then the chunk
// costs no hashing, compression or encryption (disk images are mostly
// zeros). A chunk of data fails the test at its first bytes.
func (a *archiver) knownZero(chunk []byte) (crypto.ID, bool) {
	if len(chunk) == 0 || chunk[0] != 0 || !zeros.All(chunk) {
		return crypto.ID{}, false
	}
	var id crypto.ID
	if v, ok := a.zeroIDs.Load(len(chunk)); ok {
		id = v.(crypto.ID)
	} else {
		id = a.repo.BlobID(chunk)
		a.zeroIDs.Store(len(chunk), id)
	}
	if a.opts.DryRun || !a.repo.HasBlob(pack.DataBlob, id) {
		return crypto.ID{}, false
	}
	return id, true
}

// putChunkBuf returns a chunk buffer to the pool. One that grew for an
// unusually large chunk is dropped (and replaced when next needed), so the
// pool's memory stays at its size however large the chunks were.
func (a *archiver) putChunkBuf(b []byte) {
	if cap(b) > a.chunkBufSize() {
		b = nil
	}
	a.bufs <- b[:0]
}

func (a *archiver) saveData(ctx context.Context, data []byte) (crypto.ID, bool, error) {
	if a.opts.DryRun {
		id := a.repo.BlobID(data)
		return id, !a.repo.HasBlob(pack.DataBlob, id), nil
	}
	id, added, err := a.repo.SaveBlob(ctx, pack.DataBlob, data)
	if added {
		a.added.Add(uint64(len(data)))
		a.dataBlobs.Add(1)
		if a.opts.ItemDone != nil {
			a.newBlobs.Store(id, uint64(len(data)))
		}
	}
	return id, added, err
}

func waitAll(rs []*blobResult) {
	for _, r := range rs {
		<-r.done
	}
}
