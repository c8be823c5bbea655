// Streams: backups of content that does not come from walking a file
// system, such as the disks and configuration files inside a Proxmox VE
// dump (package pve). The caller hands chunks to the same blob workers a
// walk uses, builds the trees, and finishes the snapshot.

package archiver

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	"dj/repo/chunker"
	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// Stream is a backup whose content the caller supplies: chunks through
// Buffer and SaveChunk (or whole files through SaveFile), trees through
// SaveTree, and the snapshot through Finish. Chunks are hashed,
// compressed and sealed by the blob workers on all cores while the caller
// reads on. Close releases the workers of a stream that is not finished.
type Stream struct {
	a        *archiver
	ctx      context.Context
	cancel   context.CancelFunc
	stopOnce sync.Once
	stop     func()
	stopProg func()
}

// NewStream starts the blob workers of a stream backup into repo.
// opts.FixedChunkSize sizes the chunk buffers (chunker.FixedSize when 0).
func NewStream(ctx context.Context, repo Repository, opts Options) *Stream {
	a := newArchiver(repo, opts)
	if a.bufCap < a.fixedSize() {
		a.bufCap = a.fixedSize()
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{a: a, ctx: ctx, cancel: cancel}
	s.stop = a.startWorkers(ctx)
	s.stopProg = a.startProgress()
	return s
}

// Context returns the stream's context, cancelled by Close.
func (s *Stream) Context() context.Context { return s.ctx }

// Buffer returns an empty chunk buffer from the stream's bounded pool,
// waiting for one when all are in use; its capacity may be less than a
// chunk (append grows it). Hand it to SaveChunk, or back with
// ReleaseBuffer.
func (s *Stream) Buffer() ([]byte, error) {
	select {
	case b := <-s.a.bufs:
		if b == nil {
			b = make([]byte, 0, s.a.bufCap)
		}
		return b[:0], nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// ReleaseBuffer returns an unused buffer of Buffer to the pool.
func (s *Stream) ReleaseBuffer(b []byte) { s.a.putChunkBuf(b) }

// Pending is a chunk on its way into the repository.
type Pending struct{ res *blobResult }

// Wait returns the chunk's blob id once it is saved.
func (p *Pending) Wait() (crypto.ID, error) {
	<-p.res.done
	return p.res.id, p.res.err
}

// SaveChunk hands a chunk (a buffer of Buffer, which the stream takes
// over) to the blob workers. A chunk of zeros costs no compression or
// encryption once the repository has a blob of zeros of its length.
func (s *Stream) SaveChunk(chunk []byte) *Pending {
	a := s.a
	res := &blobResult{done: make(chan struct{})}
	a.bytes.Add(uint64(len(chunk)))
	if id, ok := a.knownZero(chunk); ok {
		res.id = id
		a.putChunkBuf(chunk)
		close(res.done)
		return &Pending{res}
	}
	select {
	case a.blobJobs <- blobJob{buf: chunk, res: res}:
	case <-s.ctx.Done():
		a.putChunkBuf(chunk)
		res.err = s.ctx.Err()
		close(res.done)
	}
	return &Pending{res}
}

// SaveFile chunks r whole, with content-defined chunks or, when
// fixedSize > 0, fixed ones, and returns its blob ids and length.
func (s *Stream) SaveFile(r io.Reader, fixedSize int) ([]crypto.ID, uint64, error) {
	var src chunkSource
	if fixedSize > 0 {
		src = chunker.NewFixed(nil, fixedSize)
	} else {
		src = chunker.NewWithSizes(nil, s.a.repo.Gear(), s.a.minSize, s.a.avgSize, s.a.maxSize)
	}
	return s.a.chunkStream(s.ctx, src, r)
}

// SaveTree saves a tree (checked by decoding it, as every tree is).
func (s *Stream) SaveTree(t *tree.Tree) (crypto.ID, error) { return s.a.saveTree(s.ctx, t) }

// FileDone counts a file of the stream in the summary and reports it to
// Options.ItemDone.
func (s *Stream) FileDone(path string, n *tree.Node) {
	s.a.files.Add(1)
	s.a.filesNew.Add(1)
	if s.a.opts.ItemDone != nil {
		s.a.opts.ItemDone(Item{Path: path, Action: ItemNew, Duration: time.Since(s.a.start), DataAdded: s.a.claimAdded(n.Content)})
	}
}

// Warn reports a problem with one item; the snapshot counts it as an error.
func (s *Stream) Warn(path string, err error) { s.a.warn(path, err) }

// Finish waits for every chunk, writes the index and the snapshot of the
// tree root with the given paths, and stops the workers.
func (s *Stream) Finish(paths []string, root crypto.ID) (*snapshot.Snapshot, error) {
	s.halt()
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	defer s.cancel()
	return s.a.finish(s.ctx, paths, root)
}

// Close stops a stream (a no-op after Finish); nothing of it becomes a
// snapshot.
func (s *Stream) Close() {
	s.cancel()
	s.halt()
}

func (s *Stream) halt() {
	s.stopOnce.Do(func() {
		s.stop()
		s.stopProg()
	})
}

// NodeMeta returns the owner and times a stream's nodes get: the running
// user's ids and the given time.
func NodeMeta(n *tree.Node, t time.Time) {
	n.UID, n.GID = uint32(os.Getuid()), uint32(os.Getgid())
	n.ModTime, n.AccessTime, n.ChangeTime = t, t, t
}
