package repo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

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

	mu       sync.Mutex
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
	return &packer{r: r, open: map[pack.BlobType][]*openPack{}, inflight: map[blobKey]struct{}{}, sem: make(chan struct{}, uploadsInFlight)}
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
	k := blobKey{t, id}
	if r.idx.Has(t, id) {
		return false, nil
	}
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return false, err
	}
	// Check the index again under the lock: an upload moves blobs from
	// inflight to the index while holding it.
	if _, ok := p.inflight[k]; ok || r.idx.Has(t, id) {
		p.mu.Unlock()
		return false, nil
	}
	p.inflight[k] = struct{}{}
	p.mu.Unlock()

	sealed, compressed := r.compressAndSeal(t, id, plain)
	err := p.add(ctx, t, id, sealed, compressed, len(plain))
	r.putBuf(sealed) // add has written it to the pack
	return true, err
}

// compressAndSeal returns the stored form of a blob in one pooled buffer:
// compressed (when that is smaller) right after room for the nonce, then
// sealed in place; incompressible content is sealed from plain directly.
func (r *Repository) compressAndSeal(t pack.BlobType, id crypto.ID, plain []byte) ([]byte, bool) {
	buf := r.getBuf(len(plain) + crypto.Overhead)
	if r.enc != nil && len(plain) >= 64 {
		c := r.enc.EncodeAll(plain, buf[:crypto.NonceSize])
		if len(c)-crypto.NonceSize < len(plain) {
			return pack.SealBlobInPlace(r.key, c, t, id), true
		}
		buf = c
	}
	return pack.SealBlob(r.key, buf[:0], t, id, plain), false
}

// getBuf returns an empty buffer with room for n bytes from the pool.
func (r *Repository) getBuf(n int) []byte {
	select {
	case b := <-r.bufPool:
		if cap(b) >= n {
			return b[:0]
		}
	default:
	}
	// Round up so that the buffer serves later, larger requests too: the
	// pool then settles on a few buffers instead of churning the heap.
	const step = 1 << 20
	return make([]byte, 0, (n+step-1)/step*step)
}

// putBuf returns a buffer to the pool; nil is ignored.
func (r *Repository) putBuf(b []byte) {
	if b == nil || cap(b) > 16<<20 {
		return
	}
	select {
	case r.bufPool <- b[:0]:
	default:
	}
}

// compress returns the zstd encoding of plain when it is smaller.
func (r *Repository) compress(plain []byte) ([]byte, bool) {
	if r.enc == nil || len(plain) < 64 {
		return plain, false
	}
	c := r.enc.EncodeAll(plain, make([]byte, 0, len(plain)))
	if len(c) >= len(plain) {
		return plain, false
	}
	return c, true
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
	full := op.reserved >= int64(p.r.opts.PackSize)
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
	k := blobKey{b.Type, b.ID}
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return err
	}
	if _, ok := p.inflight[k]; ok {
		p.mu.Unlock()
		return nil
	}
	p.inflight[k] = struct{}{}
	p.mu.Unlock()
	return p.add(ctx, b.Type, b.ID, append([]byte(nil), sealed...), b.Compressed, int(b.PlainLength))
}

// SetCompression changes the zstd level for blobs saved from now on
// ("fastest", "default", "better", "best").
func (r *Repository) SetCompression(level string) error {
	nr, err := newRepository(r.be, r.key, r.cfg, Options{Compression: level, PackSize: r.opts.PackSize, KDF: r.opts.KDF})
	if err != nil {
		return err
	}
	r.enc = nr.enc
	return nil
}

// Compress returns the zstd encoding of plain when that is smaller, with the
// repository's current level.
func (r *Repository) Compress(plain []byte) ([]byte, bool) { return r.compress(plain) }

// SaveIndexFile writes an index file.
func (r *Repository) SaveIndexFile(ctx context.Context, f *index.File) (crypto.ID, error) {
	if err := r.locks.check(); err != nil {
		return crypto.ID{}, err
	}
	id, err := r.SaveFile(ctx, backend.IndexFile, f.Encode())
	if err != nil {
		return id, fmt.Errorf("save index: %w", err)
	}
	r.packer.mu.Lock()
	r.indexFiles[id] = f
	r.packer.mu.Unlock()
	return id, nil
}

// IndexFiles returns the index files loaded or written by this handle.
func (r *Repository) IndexFiles() map[crypto.ID]*index.File {
	r.packer.mu.Lock()
	defer r.packer.mu.Unlock()
	out := make(map[crypto.ID]*index.File, len(r.indexFiles))
	for k, v := range r.indexFiles {
		out[k] = v
	}
	return out
}

// ListedIndexFiles returns every index file seen when the index was
// loaded or refreshed, including the superseded ones that were skipped.
// Whoever rewrites the whole index must supersede all of them: superseding
// only the loaded ones would bring an old, skipped file back to life once
// the file that superseded it is gone.
func (r *Repository) ListedIndexFiles() []crypto.ID {
	r.packer.mu.Lock()
	defer r.packer.mu.Unlock()
	out := make([]crypto.ID, 0, len(r.listedIndex))
	for id := range r.listedIndex {
		out = append(out, id)
	}
	return out
}

// IndexProblem is an index file that could not be loaded.
type IndexProblem struct {
	ID  crypto.ID
	Err error
}

// addIndexFile adds a loaded index file: its packs to the index, its
// pending packs to the read-only fallback index.
func (r *Repository) addIndexFile(id crypto.ID, f *index.File) {
	r.packer.mu.Lock()
	r.indexFiles[id] = f
	r.listedIndex[id] = true
	for _, p := range f.Pending {
		if old, ok := r.pendingMarks[p.ID]; !ok || p.MarkedAt < old {
			r.pendingMarks[p.ID] = p.MarkedAt
		}
	}
	r.packer.mu.Unlock()
	r.idx.AddFile(f)
	for _, p := range f.Pending {
		r.pending.AddPack(p.ID, p.Blobs)
	}
}

// PendingPacks returns the packs marked for deletion by prune, with the
// time (Unix ns) they were marked. Their blobs are readable but are not
// used for deduplication.
func (r *Repository) PendingPacks() (map[crypto.ID]int64, *index.Index) {
	r.packer.mu.Lock()
	defer r.packer.mu.Unlock()
	out := make(map[crypto.ID]int64, len(r.pendingMarks))
	for k, v := range r.pendingMarks {
		out[k] = v
	}
	return out, r.pending
}

// RefreshIndex loads index files written since the index was loaded (by
// other processes: a backup that finished while a mount runs) and returns
// how many it added.
func (r *Repository) RefreshIndex(ctx context.Context) (int, error) {
	ids, err := r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		r.packer.mu.Lock()
		_, known := r.indexFiles[id]
		r.packer.mu.Unlock()
		if known {
			continue
		}
		body, err := r.LoadFile(ctx, backend.IndexFile, id)
		if err != nil {
			return n, err
		}
		f, err := index.DecodeFile(body)
		if err != nil {
			return n, fmt.Errorf("%w: index/%s: %w", ErrCorrupt, id, err)
		}
		r.addIndexFile(id, f)
		n++
	}
	if n > 0 {
		r.idx.Compact()
	}
	return n, nil
}

// LoadIndex reads every index file into memory. Index files that fail to
// load are returned as problems (and make the returned error non-nil unless
// tolerate is set); superseded files are skipped.
func (r *Repository) LoadIndex(ctx context.Context, tolerate bool) ([]IndexProblem, error) {
	ids, err := r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		return nil, err
	}
	files := make([]*index.File, len(ids))
	errs := make([]error, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0) * 2)
	for i, id := range ids {
		g.Go(func() error {
			body, err := r.LoadFile(gctx, backend.IndexFile, id)
			if err == nil {
				files[i], err = index.DecodeFile(body)
				if err != nil {
					err = fmt.Errorf("%w: index/%s: %w", ErrCorrupt, id, err)
				}
			}
			errs[i] = err
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	r.packer.mu.Lock()
	for _, id := range ids {
		r.listedIndex[id] = true
	}
	r.packer.mu.Unlock()
	superseded := map[crypto.ID]bool{}
	var problems []IndexProblem
	for i, f := range files {
		if errs[i] != nil {
			problems = append(problems, IndexProblem{ids[i], errs[i]})
			continue
		}
		for _, s := range f.Supersedes {
			superseded[s] = true
		}
	}
	for i, f := range files {
		if f == nil || superseded[ids[i]] {
			continue
		}
		r.addIndexFile(ids[i], f)
	}
	r.idx.Compact()
	r.pending.Compact()
	if len(problems) > 0 && !tolerate {
		return problems, fmt.Errorf("%d index file(s) could not be loaded, first: %w (run `dj repair index`)", len(problems), problems[0].Err)
	}
	return problems, nil
}

// LoadTypedBlob returns the plaintext of a blob, appended to buf[:0] when it
// fits. The plaintext is verified against id; a blob stored twice is read
// from the second copy if the first is damaged.
func (r *Repository) LoadTypedBlob(ctx context.Context, t pack.BlobType, id crypto.ID, buf []byte) ([]byte, error) {
	locs := r.idx.Lookup(t, id)
	if len(locs) == 0 {
		// A blob only in a pack that prune marked for deletion is still
		// readable until the pack is really gone.
		locs = r.pending.Lookup(t, id)
	}
	if len(locs) == 0 {
		return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), ErrBlobNotFound)
	}
	var firstErr error
	for _, pb := range locs {
		out, err := r.loadPacked(ctx, pb, buf)
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// ErrBlobNotFound means the index does not know a blob.
var ErrBlobNotFound = errors.New("blob not in index")

// maxTreePacks bounds the set of tree packs already prefetched; when it is
// full it starts over.
const maxTreePacks = 4096

// treePackRefresh is how long a prefetched tree pack counts as cached: a
// walk that outlasts it asks again, which costs the kernel only a look at
// its page cache when the pack is still there and brings it back when
// memory pressure (or drop_caches) took it.
const treePackRefresh = 200 * time.Millisecond

// prefetchTreePack asks the backend to start reading the whole tree pack
// that holds a tree about to be loaded, once per treePackRefresh. Packs
// hold trees or data, never both, and the trees of one snapshot sit
// together in a few packs: a walk (find, tar, ls -R through a mount,
// restore, diff, check) then reads each tree pack sequentially, instead
// of its trees one by one in walk order with a disk round trip each.
func (r *Repository) prefetchTreePack(ctx context.Context, h backend.Handle, pack crypto.ID) {
	p, ok := backend.As[backend.Prefetcher](r.be)
	if !ok {
		return
	}
	now := time.Now()
	r.treePacksMu.Lock()
	last, seen := r.treePacks[pack]
	due := !seen || now.Sub(last) > treePackRefresh
	if due {
		if len(r.treePacks) >= maxTreePacks {
			clear(r.treePacks)
		}
		r.treePacks[pack] = now
	}
	r.treePacksMu.Unlock()
	if due {
		p.Prefetch(ctx, h)
	}
}

func (r *Repository) loadPacked(ctx context.Context, pb index.PackedBlob, buf []byte) ([]byte, error) {
	h := backend.Handle{Type: backend.PackFile, Name: pb.PackID.String()}
	if pb.Type == pack.TreeBlob {
		r.prefetchTreePack(ctx, h, pb.PackID)
	}
	var sealed []byte
	var err error
	if rl, ok := backend.As[backend.RangeLoader](r.be); ok {
		b := r.getBuf(int(pb.Length) + backend.RangeSlack)
		sealed, err = rl.LoadRange(ctx, h, int64(pb.Offset), int(pb.Length), b[:cap(b)])
		defer r.putBuf(b)
	} else if il, ok := backend.As[backend.IntoLoader](r.be); ok {
		sealed = r.getBuf(int(pb.Length))[:pb.Length]
		err = il.LoadInto(ctx, h, int64(pb.Offset), sealed)
		defer r.putBuf(sealed)
	} else {
		sealed, err = r.be.Load(ctx, h, int64(pb.Offset), int(pb.Length))
	}
	if err != nil {
		return nil, fmt.Errorf("%s blob %s in pack %s: %w", pb.Type, pb.ID.Short(), pb.PackID.Short(), err)
	}
	return r.OpenPacked(pb, sealed, buf)
}

// OpenPacked decrypts, decompresses and verifies the stored bytes of a blob.
func (r *Repository) OpenPacked(pb index.PackedBlob, sealed []byte, buf []byte) ([]byte, error) {
	fail := func(err error) error {
		return fmt.Errorf("%w: %s blob %s in pack %s: %w", ErrCorrupt, pb.Type, pb.ID.Short(), pb.PackID.Short(), err)
	}
	if pb.Compressed {
		content, err := pack.OpenBlob(r.key, r.getBuf(len(sealed)), pb.Type, pb.ID, sealed)
		if err != nil {
			return nil, fail(err)
		}
		defer r.putBuf(content)
		if cap(buf) < int(pb.PlainLength) {
			buf = make([]byte, 0, pb.PlainLength)
		}
		plain, err := r.dec.DecodeAll(content, buf[:0])
		if err != nil {
			return nil, fail(err)
		}
		if len(plain) != int(pb.PlainLength) {
			return nil, fail(fmt.Errorf("length %d, index says %d", len(plain), pb.PlainLength))
		}
		if r.key.BlobID(plain) != pb.ID {
			return nil, fail(errors.New("content does not match its id"))
		}
		return plain, nil
	}
	plain, err := pack.OpenBlob(r.key, buf[:0], pb.Type, pb.ID, sealed)
	if err != nil {
		return nil, fail(err)
	}
	if r.key.BlobID(plain) != pb.ID {
		return nil, fail(errors.New("content does not match its id"))
	}
	return plain, nil
}

// BlobSize returns the plaintext length of a data blob from the index.
func (r *Repository) BlobSize(id crypto.ID) (int, bool) {
	return r.idx.PlainLength(pack.DataBlob, id)
}

// BlobID returns the keyed id of plaintext.
func (r *Repository) BlobID(plain []byte) crypto.ID { return r.key.BlobID(plain) }

// maxZeroSizes bounds the cache of zero-blob ids by size.
const maxZeroSizes = 64

// IsZeroBlob reports whether a data blob's plaintext is all zeros, using
// only the index: it compares id with the id of that many zero bytes.
func (r *Repository) IsZeroBlob(id crypto.ID) bool {
	n, ok := r.BlobSize(id)
	if !ok {
		return false
	}
	r.zeroMu.Lock()
	zid, ok := r.zeroIDs[n]
	full := len(r.zeroIDs) >= maxZeroSizes
	r.zeroMu.Unlock()
	if !ok && full && n != r.cfg.ChunkerMax {
		// Runs of zeros are cut at the maximum chunk size; other sizes are
		// rare, and hashing zeros for each would cost more than it saves.
		return false
	}
	if !ok {
		zid = r.key.BlobID(make([]byte, n))
		r.zeroMu.Lock()
		r.zeroIDs[n] = zid
		r.zeroMu.Unlock()
	}
	return zid == id
}

// LoadBlob is LoadTypedBlob for data blobs (the shape the restorer and the
// mount need).
func (r *Repository) LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error) {
	return r.LoadTypedBlob(ctx, pack.DataBlob, id, buf)
}

// ReadPackHeader loads and parses the header of a stored pack.
func (r *Repository) ReadPackHeader(ctx context.Context, id crypto.ID, size int64) ([]pack.Blob, error) {
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	n := int64(pack.EagerTail)
	if n > size {
		n = size
	}
	tail, err := r.be.Load(ctx, h, size-n, int(n))
	if err != nil {
		return nil, fmt.Errorf("load header of %s: %w", h, err)
	}
	if len(tail) >= 4 {
		hl, err := pack.HeaderLength(tail[len(tail)-4:], size)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h, err)
		}
		if hl+4 > len(tail) {
			tail, err = r.be.Load(ctx, h, size-int64(hl)-4, hl+4)
			if err != nil {
				return nil, fmt.Errorf("load header of %s: %w", h, err)
			}
		}
	}
	blobs, err := pack.ParseTail(r.key, tail, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	return blobs, nil
}

// HasBlob reports whether the index knows a blob.
func (r *Repository) HasBlob(t pack.BlobType, id crypto.ID) bool { return r.idx.Has(t, id) }

// Gear returns the keyed gear table of the chunker.
func (r *Repository) Gear() *[256]uint64 { return r.key.Gear() }

// ChunkerSizes returns the chunker's minimum, average and maximum chunk sizes.
func (r *Repository) ChunkerSizes() (min, avg, max int) {
	return r.cfg.ChunkerMin, r.cfg.ChunkerAvg, r.cfg.ChunkerMax
}

// RewriteBlob compresses (at the current level) and seals plain and adds it
// to the packs being written even though the index knows the blob (repack
// with recompression).
func (r *Repository) RewriteBlob(ctx context.Context, t pack.BlobType, id crypto.ID, plain []byte) (int, error) {
	p := r.packer
	k := blobKey{t, id}
	p.mu.Lock()
	if _, ok := p.inflight[k]; ok {
		p.mu.Unlock()
		return 0, nil
	}
	p.inflight[k] = struct{}{}
	p.mu.Unlock()
	content, compressed := r.compress(plain)
	sealed := pack.SealBlob(r.key, make([]byte, 0, len(content)+crypto.Overhead), t, id, content)
	return len(sealed), p.add(ctx, t, id, sealed, compressed, len(plain))
}

// SetPackSize changes the target size of packs written from now on.
func (r *Repository) SetPackSize(n int) {
	r.packer.mu.Lock()
	r.opts.PackSize = n
	r.packer.mu.Unlock()
}

// PackSize returns the target pack size.
func (r *Repository) PackSize() int {
	r.packer.mu.Lock()
	defer r.packer.mu.Unlock()
	return r.opts.PackSize
}
