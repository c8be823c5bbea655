package repo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// openPacksPerType is how many packs of one type the writer fills at once;
// each blob goes into one of them at random, so the sizes of single chunks
// cannot be read off the pack layout.
const openPacksPerType = 2

// uploadsInFlight bounds the packs being saved to the backend at once,
// unless the backend asks for more (backend.ConcurrentSaver, at most
// maxUploadsInFlight).
const (
	uploadsInFlight    = 2
	maxUploadsInFlight = 8
)

// uploadQueue is how many finished packs may wait for an upload slot
// besides those being saved. Only when this many wait does the blob
// stage block (back-pressure, which bounds memory); otherwise handing a
// full pack over costs the sealing goroutine nothing.
const uploadQueue = 2

// blobsQueued is how many sealed blobs may wait for the writer of one pack.
const blobsQueued = 2

// packer collects sealed blobs into packs and uploads finished packs.
//
// Three stages, each with a bounded queue, so that none waits for
// another's I/O while its queue has room: the blob stage (the goroutines
// calling SaveBlob: hashing, compressing, sealing) hands each sealed blob
// to one of the packs being filled; each such pack has a writer goroutine
// that appends the blobs (and hashes the pack's bytes, for its name); a
// pack that is full is queued for the upload stage, which waits for its
// writer, finishes it and saves it, at most inFlight at once. A
// SaveBlob waits only when the chosen pack's writer has blobsQueued blobs
// queued, or uploadQueue full packs already wait for an upload.
//
// On local disk (a backend with the backend.Stager capability) a pack is
// written into a temporary file inside the repository as blobs arrive and
// published by a rename, so its bytes are written once and never copied,
// and memory does not grow with the pack size. Other backends take a pack
// as bytes: it is filled in memory (never staged in a temporary file and
// read back) and handed to Save as it is.
type packer struct {
	r *Repository

	// mu guards the packer's own state below, nothing else.
	mu       sync.Mutex
	packSize int // target pack size
	open     map[pack.BlobType][]*openPack
	inflight map[blobKey]struct{} // blobs added to an open or uploading pack
	written  []index.FilePack     // packs saved since the last index file
	err      error                // first upload error

	// uploads counts the packs handed to the upload stage and not yet
	// saved or dropped; queued bounds them (inFlight+uploadQueue), sem
	// bounds those being saved (inFlight).
	inFlight int
	uploads  sync.WaitGroup
	queued   chan struct{}
	sem      chan struct{}
	// bufs holds the buffers of saved in-memory packs for reuse.
	bufs chan []byte
	// sealBufs holds buffers for sealed blobs (seal.go): as many as can be
	// in flight at once, sealing or queued for a pack's writer.
	sealBufs chan []byte
}

// openPack is a pack being filled.
type openPack struct {
	// f is the pack's temporary file in a local repository
	// (backend.Stager); nil for a pack filled in memory (mem).
	f   *os.File
	mem *memPack

	// reserved is the number of bytes promised to adds (under packer.mu).
	reserved int64
	// adds counts adds that reserved room and have not yet queued their
	// blob.
	adds sync.WaitGroup
	// blobs is the queue of the pack's writer goroutine (write), which
	// alone touches w and err until done is closed.
	blobs  chan sealedBlob
	done   chan struct{}
	closed sync.Once
	w      *pack.StreamWriter
	err    error // first write error
}

// sealedBlob is a blob on its way into a pack; the pack's writer hands
// the buffer to the repository's pool once it is written.
type sealedBlob struct {
	t          pack.BlobType
	id         crypto.ID
	sealed     []byte
	compressed bool
	plainLen   int
}

// write appends the queued blobs to the pack until the queue is closed.
func (op *openPack) write(r *Repository) {
	defer close(op.done)
	for b := range op.blobs {
		if op.err == nil {
			if err := op.w.Add(b.t, b.id, b.sealed, b.compressed, b.plainLen); err != nil {
				op.err = fmt.Errorf("write pack: %w", err)
			}
		}
		r.putSealBuf(b.sealed)
	}
}

// drain waits until every add that reserved room in the pack has queued
// its blob and the writer has written them all. No add may reserve room
// in op any more (it is no longer among the open packs); drain may be
// called more than once.
func (op *openPack) drain() {
	op.adds.Wait()
	op.closed.Do(func() { close(op.blobs) })
	<-op.done
}

// memPack is the io.Writer of a pack filled in memory.
type memPack struct{ b []byte }

// Write appends p to the pack.
func (m *memPack) Write(p []byte) (int, error) {
	m.b = append(m.b, p...)
	return len(p), nil
}

// discard drops a pack that will not be saved, once its writer is done:
// its temporary file is removed, its memory returned to the pool.
func (p *packer) discard(op *openPack) {
	op.drain()
	if op.f != nil {
		name := op.f.Name()
		_ = op.f.Close()
		_ = os.Remove(name)
		return
	}
	p.putPackBuf(op.mem.b)
	op.mem.b = nil
}

// PackMemory is the most memory the packs being filled and uploaded take
// at once: nothing for a backend that stages packs in local files, else
// the buffers of the packs being filled (two per blob type), queued and
// uploading, each a quarter above the pack size. A backup's memory limit
// must leave room for it, or the collector runs without pause.
func (r *Repository) PackMemory() int64 {
	if _, ok := backend.As[backend.Stager](r.be); ok {
		return 0
	}
	return int64(r.packer.packsInMemory()) * int64(r.packer.memPackCap())
}

// packsInMemory is the most packs a backup holds at once: those being
// filled (openPacksPerType for each of the two blob types), queued and
// uploading.
func (p *packer) packsInMemory() int { return 2*openPacksPerType + p.inFlight + uploadQueue }

// memPackCap is the capacity of an in-memory pack's buffer. A pack ends
// once it reaches packSize, so it exceeds it by one chunk and its header at
// most: a quarter more is room for nearly every pack.
func (p *packer) memPackCap() int { return p.packSize + p.packSize/4 }

// putPackBuf keeps the buffer of an in-memory pack for the next one.
func (p *packer) putPackBuf(b []byte) {
	if b == nil {
		return
	}
	select {
	case p.bufs <- b[:0]:
	default:
	}
}

type blobKey struct {
	t  pack.BlobType
	id crypto.ID
}

func newPacker(r *Repository) *packer {
	inFlight := uploadsInFlight
	if cs, ok := backend.As[backend.ConcurrentSaver](r.be); ok {
		inFlight = min(max(inFlight, cs.SaveConcurrency()), maxUploadsInFlight)
	}
	p := &packer{r: r, packSize: r.opts.PackSize, open: map[pack.BlobType][]*openPack{}, inflight: map[blobKey]struct{}{},
		inFlight: inFlight, queued: make(chan struct{}, inFlight+uploadQueue), sem: make(chan struct{}, inFlight),
		sealBufs: make(chan []byte, 3*runtime.GOMAXPROCS(0)+2*openPacksPerType*(blobsQueued+1))}
	p.bufs = make(chan []byte, p.packsInMemory())
	return p
}

// SaveBlob stores a blob unless the repository already has it and returns
// its id and whether it was new. The blob is durable only after Flush.
// SaveBlob is safe for concurrent use; compression and encryption run in the
// calling goroutine, so callers parallelise by calling from several.
func (r *Repository) SaveBlob(ctx context.Context, t pack.BlobType, plain []byte) (crypto.ID, bool, error) {
	id := r.key.BlobID(plain)
	added, err := r.saveBlobWithID(ctx, t, id, plain)
	return id, added, err
}

func (r *Repository) saveBlobWithID(ctx context.Context, t pack.BlobType, id crypto.ID, plain []byte) (bool, error) {
	if len(plain) > pack.MaxBlobSize {
		return false, fmt.Errorf("blob of %d bytes is larger than the maximum %d", len(plain), pack.MaxBlobSize)
	}
	p := r.packer
	if r.idx.Has(t, id) {
		return false, nil
	}
	if ok, err := p.reserve(t, id, true); !ok {
		return false, err
	}
	// Every blob is checked before it goes into a pack: its compressed
	// form must decompress to its plaintext (a raw blob is sealed as it is).
	sealed, compressed, err := r.compressAndSealChecked(t, id, plain, true)
	if err != nil {
		p.unreserve(t, id)
		return false, err
	}
	return true, p.add(ctx, t, id, sealed, compressed, len(plain))
}

// reserve marks a blob as being written and reports whether the caller
// should write it: false when an open or uploading pack already holds it,
// or, with dedup, when the index knows it. It returns the first upload
// error instead, once there is one. The index is checked under p.mu
// because an upload moves blobs from inflight to the index while holding
// it.
func (p *packer) reserve(t pack.BlobType, id crypto.ID, dedup bool) (bool, error) {
	k := blobKey{t, id}
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return false, err
	}
	if _, ok := p.inflight[k]; ok || (dedup && p.r.idx.Has(t, id)) {
		p.mu.Unlock()
		return false, nil
	}
	p.inflight[k] = struct{}{}
	p.mu.Unlock()
	return true, nil
}

// unreserve forgets a blob reserve marked as being written, which will
// not be added after all.
func (p *packer) unreserve(t pack.BlobType, id crypto.ID) {
	p.mu.Lock()
	delete(p.inflight, blobKey{t, id})
	p.mu.Unlock()
}

// newOpenPack starts a new pack: a temporary file in a local repository,
// a buffer in memory otherwise.
func (p *packer) newOpenPack(ctx context.Context) (*openPack, error) {
	op := &openPack{blobs: make(chan sealedBlob, blobsQueued), done: make(chan struct{})}
	if st, ok := backend.As[backend.Stager](p.r.be); ok {
		f, err := st.CreateTemp(ctx, backend.PackFile)
		if err != nil {
			return nil, fmt.Errorf("create pack file: %w", err)
		}
		op.f = f
		op.w = pack.NewStreamWriter(p.r.key, f)
	} else {
		var b []byte
		select {
		case b = <-p.bufs:
		default:
			// The whole buffer at once: growing it by appends
			// copied each pack about five times over into fresh
			// memory, the largest cost of a remote backup (36% of
			// its CPU over SFTP).
			b = make([]byte, 0, p.memPackCap())
		}
		op.mem = &memPack{b: b}
		op.w = pack.NewStreamWriter(p.r.key, op.mem)
	}
	go op.write(p.r)
	return op, nil
}

// add queues a sealed blob for one of the open packs of its type, chosen at
// random, and hands the pack to the upload stage when it is full. add owns
// sealed from then on: it goes back to the repository's buffer pool once
// written. Write errors surface through the upload of the pack (p.err).
func (p *packer) add(ctx context.Context, t pack.BlobType, id crypto.ID, sealed []byte, compressed bool, plainLen int) error {
	p.mu.Lock()
	ops := p.open[t]
	for len(ops) < openPacksPerType {
		op, err := p.newOpenPack(ctx)
		if err != nil {
			p.open[t] = ops
			p.mu.Unlock()
			p.r.putSealBuf(sealed)
			return err
		}
		ops = append(ops, op)
	}
	i := rand.IntN(len(ops))
	op := ops[i]
	op.reserved += int64(len(sealed))
	op.adds.Add(1)
	full := op.reserved >= int64(p.packSize)
	if full {
		ops = append(ops[:i], ops[i+1:]...)
	}
	p.open[t] = ops
	p.mu.Unlock()

	op.blobs <- sealedBlob{t: t, id: id, sealed: sealed, compressed: compressed, plainLen: plainLen}
	op.adds.Done()
	if full {
		// No add can reserve room in op any more; the upload stage waits
		// for those that did and for the pack's writer.
		return p.upload(ctx, op)
	}
	return nil
}

// upload hands a full pack to the upload stage. It returns at once unless
// uploadQueue packs already wait for an upload slot.
func (p *packer) upload(ctx context.Context, op *openPack) error {
	select {
	case p.queued <- struct{}{}:
	case <-ctx.Done():
		p.discard(op)
		return ctx.Err()
	}
	p.uploads.Add(1)
	go func() {
		defer p.uploads.Done()
		defer func() { <-p.queued }()
		op.drain()
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			p.discard(op)
			p.fail(ctx.Err())
			return
		}
		id, blobs, err := p.save(ctx, op)
		<-p.sem
		if err != nil {
			p.fail(err)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.r.idx.AddPack(id, blobs)
		p.written = append(p.written, index.FilePack{ID: id, Blobs: blobs})
		for _, b := range blobs {
			delete(p.inflight, blobKey{b.Type, b.ID})
		}
	}()
	return nil
}

// fail records the first upload error; later adds and FlushPacks return it.
func (p *packer) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

// save writes the header of a filled pack and stores it in the backend; the
// pack's temporary file or buffer is gone afterwards whatever happens.
func (p *packer) save(ctx context.Context, op *openPack) (crypto.ID, []pack.Blob, error) {
	op.drain()
	if op.err != nil {
		p.discard(op)
		return crypto.ID{}, nil, op.err
	}
	id, _, blobs, err := op.w.Finish()
	if err != nil {
		p.discard(op)
		return id, nil, fmt.Errorf("write pack: %w", err)
	}
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	// Packs hold trees or data, never both: tell the backend which (S3
	// keeps tree packs in the standard storage class).
	ctx = backend.WithPackKind(ctx, packKind(blobs))
	if op.f != nil {
		st, _ := backend.As[backend.Stager](p.r.be)
		err = st.SaveTemp(ctx, h, op.f)
	} else {
		err = p.r.be.Save(ctx, h, op.mem.b)
		p.discard(op)
	}
	if err != nil {
		return id, nil, fmt.Errorf("save pack %s: %w", id.Short(), err)
	}
	return id, blobs, nil
}

// takeOpen removes the packs being filled from the packer and returns them;
// adds that reserved room in them may still be queuing (op.adds), their
// writers still writing.
func (p *packer) takeOpen() []*openPack {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ops []*openPack
	for t, list := range p.open {
		ops = append(ops, list...)
		delete(p.open, t)
	}
	return ops
}

// discardOpen removes the temporary files of packs still being filled (a
// backup that failed or was cancelled).
func (p *packer) discardOpen() {
	for _, op := range p.takeOpen() {
		p.discard(op)
	}
}

// Flush uploads the packs being filled, waits for all uploads and writes an
// index file for the packs saved since the last flush.
func (r *Repository) Flush(ctx context.Context) error {
	written, err := r.FlushPacks(ctx)
	if err != nil || len(written) == 0 {
		return err
	}
	_, err = r.SaveIndexFile(ctx, &index.File{Packs: written})
	return err
}

// FlushPacks uploads the packs being filled and waits for all uploads, and
// returns the packs saved since the last flush without writing an index file
// for them (the caller must).
func (r *Repository) FlushPacks(ctx context.Context) ([]index.FilePack, error) {
	p := r.packer
	ops := p.takeOpen()
	for i, op := range ops {
		op.drain()
		if op.w.Count() == 0 && op.err == nil {
			p.discard(op)
			continue
		}
		if err := p.upload(ctx, op); err != nil {
			for _, rest := range ops[i+1:] {
				p.discard(rest)
			}
			p.uploads.Wait()
			return nil, err
		}
	}
	p.uploads.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		// The packs that were saved stay listed, for IndexUploaded.
		return nil, p.err
	}
	written := p.written
	p.written = nil
	return written, nil
}

// CopySealedBlob adds the stored bytes of a blob (from another pack) to the
// packs being written, even though the index already knows the blob: repack
// moves ciphertext without decrypting it again. The blob's type and id are
// bound into the ciphertext, so moving it cannot change what it opens to.
func (r *Repository) CopySealedBlob(ctx context.Context, b pack.Blob, sealed []byte) error {
	p := r.packer
	if ok, err := p.reserve(b.Type, b.ID, false); !ok {
		return err
	}
	return p.add(ctx, b.Type, b.ID, append([]byte(nil), sealed...), b.Compressed, int(b.PlainLength))
}

// RewriteBlob compresses (at the current level) and seals plain and adds it
// to the packs being written even though the index knows the blob (repack
// with recompression).
func (r *Repository) RewriteBlob(ctx context.Context, t pack.BlobType, id crypto.ID, plain []byte) (int, error) {
	p := r.packer
	if ok, err := p.reserve(t, id, false); !ok {
		return 0, err
	}
	content, compressed := r.compress(plain)
	sealed := pack.SealBlob(r.key, make([]byte, 0, len(content)+crypto.Overhead), t, id, content)
	if err := r.verifySealed(t, id, sealed, compressed, plain); err != nil {
		p.unreserve(t, id)
		return 0, err
	}
	return len(sealed), p.add(ctx, t, id, sealed, compressed, len(plain))
}

// SetPackSize changes the target size of packs written from now on.
func (r *Repository) SetPackSize(n int) {
	r.packer.mu.Lock()
	r.packer.packSize = n
	r.packer.mu.Unlock()
}

// PackSize returns the target pack size.
func (r *Repository) PackSize() int {
	r.packer.mu.Lock()
	defer r.packer.mu.Unlock()
	return r.packer.packSize
}

// packKind says whether the blobs of a pack are trees or data.
func packKind(blobs []pack.Blob) backend.PackKind {
	for _, b := range blobs {
		if b.Type == pack.TreeBlob {
			return backend.TreePack
		}
	}
	return backend.DataPack
}
