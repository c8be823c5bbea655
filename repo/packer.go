package repo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
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

// uploadsInFlight bounds the finished packs being uploaded at once.
const uploadsInFlight = 2

// packer collects sealed blobs into packs and uploads finished packs.
//
// Packs are written to temporary files as blobs arrive, never held in
// memory: a backup's memory does not grow with the pack size, and on local
// disk (a backend with the backend.Stager capability) the temporary file is created
// inside the repository and renamed into place, so a pack's bytes are
// written once and never copied.
type packer struct {
	r *Repository

	// mu guards the packer's own state below, nothing else.
	mu       sync.Mutex
	packSize int // target pack size
	open     map[pack.BlobType][]*openPack
	inflight map[blobKey]struct{} // blobs added to an open or uploading pack
	written  []index.FilePack     // packs saved since the last index file
	err      error                // first upload error

	uploads sync.WaitGroup
	sem     chan struct{}
}

// openPack is a pack being filled.
type openPack struct {
	f *os.File
	// staged is true when f lives inside a local repository (backend.Stager).
	staged bool

	// reserved is the number of bytes promised to adds (under packer.mu).
	reserved int64
	// writers counts adds that reserved room and have not yet written.
	writers sync.WaitGroup

	mu  sync.Mutex // serialises writes to w
	w   *pack.StreamWriter
	err error // first write error
}

// discard removes the temporary file of a pack that will not be saved.
func (op *openPack) discard() {
	name := op.f.Name()
	_ = op.f.Close()
	_ = os.Remove(name)
}

type blobKey struct {
	t  pack.BlobType
	id crypto.ID
}

func newPacker(r *Repository) *packer {
	return &packer{r: r, packSize: r.opts.PackSize, open: map[pack.BlobType][]*openPack{}, inflight: map[blobKey]struct{}{}, sem: make(chan struct{}, uploadsInFlight)}
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
	sealed, compressed := r.compressAndSeal(t, id, plain)
	err := p.add(ctx, t, id, sealed, compressed, len(plain))
	r.putBuf(sealed) // add has written it to the pack
	return true, err
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

// newOpenPack creates the temporary file of a new pack.
func (p *packer) newOpenPack(ctx context.Context) (*openPack, error) {
	op := &openPack{}
	var err error
	if st, ok := backend.As[backend.Stager](p.r.be); ok {
		op.f, err = st.CreateTemp(ctx, backend.PackFile)
		op.staged = true
	} else {
		op.f, err = os.CreateTemp("", "dj-pack-*")
	}
	if err != nil {
		return nil, fmt.Errorf("create pack file: %w", err)
	}
	op.w = pack.NewStreamWriter(p.r.key, op.f)
	return op, nil
}

func (p *packer) add(ctx context.Context, t pack.BlobType, id crypto.ID, sealed []byte, compressed bool, plainLen int) error {
	p.mu.Lock()
	ops := p.open[t]
	for len(ops) < openPacksPerType {
		op, err := p.newOpenPack(ctx)
		if err != nil {
			p.mu.Unlock()
			return err
		}
		ops = append(ops, op)
	}
	i := rand.IntN(len(ops))
	op := ops[i]
	op.reserved += int64(len(sealed))
	op.writers.Add(1)
	full := op.reserved >= int64(p.packSize)
	if full {
		ops = append(ops[:i], ops[i+1:]...)
	}
	p.open[t] = ops
	p.mu.Unlock()

	op.mu.Lock()
	var err error
	if op.err == nil {
		if err = op.w.Add(t, id, sealed, compressed, plainLen); err != nil {
			op.err = fmt.Errorf("write pack: %w", err)
			err = op.err
		}
	}
	op.mu.Unlock()
	op.writers.Done()
	if full {
		// No add can reserve room in op any more; wait for those that did.
		op.writers.Wait()
		if uerr := p.upload(ctx, op); err == nil {
			err = uerr
		}
	}
	return err
}

// upload finishes a pack and saves it in the background; it blocks while
// uploadsInFlight packs are already uploading.
func (p *packer) upload(ctx context.Context, op *openPack) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		op.discard()
		return ctx.Err()
	}
	p.uploads.Add(1)
	go func() {
		defer p.uploads.Done()
		defer func() { <-p.sem }()
		id, blobs, err := p.save(ctx, op)
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			if p.err == nil {
				p.err = err
			}
			return
		}
		p.r.idx.AddPack(id, blobs)
		p.written = append(p.written, index.FilePack{ID: id, Blobs: blobs})
		for _, b := range blobs {
			delete(p.inflight, blobKey{b.Type, b.ID})
		}
	}()
	return nil
}

// save writes the header of a filled pack and stores it in the backend; the
// temporary file is gone afterwards whatever happens.
func (p *packer) save(ctx context.Context, op *openPack) (crypto.ID, []pack.Blob, error) {
	if op.err != nil {
		op.discard()
		return crypto.ID{}, nil, op.err
	}
	id, size, blobs, err := op.w.Finish()
	if err != nil {
		op.discard()
		return id, nil, fmt.Errorf("write pack: %w", err)
	}
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	if op.staged {
		st, _ := backend.As[backend.Stager](p.r.be)
		err = st.SaveTemp(ctx, h, op.f)
	} else {
		data := make([]byte, size)
		_, err = op.f.ReadAt(data, 0)
		op.discard()
		if err == nil {
			err = p.r.be.Save(ctx, h, data)
		}
	}
	if err != nil {
		return id, nil, fmt.Errorf("save pack %s: %w", id.Short(), err)
	}
	return id, blobs, nil
}

// takeOpen removes the packs being filled from the packer and returns them;
// adds that reserved room in them may still be writing (op.writers).
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
		op.writers.Wait()
		op.discard()
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
		op.writers.Wait()
		if op.w.Count() == 0 && op.err == nil {
			op.discard()
			continue
		}
		if err := p.upload(ctx, op); err != nil {
			for _, rest := range ops[i+1:] {
				rest.writers.Wait()
				rest.discard()
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
