// Check's pack checks: every indexed pack is stored and its header agrees
// with the index; with --read-data, every blob of every pack (or the
// subset) is read and verified.

package maint

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

type packJob struct {
	id      crypto.ID
	size    int64
	blobs   []pack.Blob // index entries (nil for unreferenced packs)
	read    bool        // load the whole pack and verify it
	unref   bool        // no index names the pack
	pending bool
}

type packResult struct {
	problems []*Problem
	bytes    int64
	header   []pack.Blob
}

// checkPacks compares storage with the index, then checks the header of
// every pack (and with ReadData, its content) in parallel.
func (c *checker) checkPacks(ctx context.Context) error {
	if err := c.listStoredPacks(ctx); err != nil {
		return err
	}
	jobs := c.packJobs()
	if c.opts.ReadData {
		c.chooseReads(jobs)
	}
	results, err := c.runPackJobs(ctx, jobs)
	if err != nil {
		return err
	}
	c.collectPackResults(jobs, results)
	return nil
}

// listStoredPacks records the packs in storage and their sizes, and
// reports pack files whose names are not ids.
func (c *checker) listStoredPacks(ctx context.Context) error {
	c.stored = map[crypto.ID]int64{}
	var odd []string
	err := c.r.Backend().List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		if id, err := crypto.ParseID(fi.Name); err == nil {
			c.stored[id] = fi.Size
		} else {
			odd = append(odd, fi.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	sort.Strings(odd)
	for _, name := range odd {
		c.add(&Problem{Severity: SeverityWarning, Kind: KindInvalidName, File: string(backend.PackFile) + "/" + name,
			Message: fmt.Sprintf("pack file %s is not named by an id; dj ignores it", name)})
	}
	return nil
}

// packJobs returns a job for every stored pack: the indexed and pending
// ones in id order, then the unreferenced ones. Indexed packs missing
// from storage are reported here and get no job.
func (c *checker) packJobs() []packJob {
	var jobs []packJob
	var indexedIDs []crypto.ID
	for id := range c.indexed {
		indexedIDs = append(indexedIDs, id)
	}
	for id := range c.pending {
		indexedIDs = append(indexedIDs, id)
	}
	sortIDs(indexedIDs)
	for _, id := range indexedIDs {
		blobs, ok := c.indexed[id]
		pending := !ok
		if pending {
			blobs = c.pending[id]
		}
		blobs = dedupBlobs(blobs)
		size, ok := c.stored[id]
		if !ok {
			if pending {
				c.gone[id] = c.add(&Problem{Severity: SeverityWarning, Kind: KindPendingGone, Pack: idPtr(id), File: packFile(id),
					Message: fmt.Sprintf("pack %s, marked for deletion, is already deleted (a prune ran meanwhile, or was interrupted)", id.Short()),
					allOf:   blobs})
				continue
			}
			c.gone[id] = c.add(&Problem{Severity: SeverityError, Kind: KindPackMissing, Pack: idPtr(id), File: packFile(id),
				Blobs: problemBlobsOf(blobs), allOf: blobs,
				Message: fmt.Sprintf("pack %s is in the index but missing from storage (%d blobs)", id.Short(), len(blobs))})
			continue
		}
		jobs = append(jobs, packJob{id: id, size: size, blobs: blobs, pending: pending})
	}
	c.res.Packs = len(jobs)
	var unref []crypto.ID
	for id := range c.stored {
		_, a := c.indexed[id]
		_, b := c.pending[id]
		if !a && !b {
			unref = append(unref, id)
		}
	}
	sortIDs(unref)
	c.res.UnreferencedPack = len(unref)
	for _, id := range unref {
		jobs = append(jobs, packJob{id: id, size: c.stored[id], unref: true})
	}
	return jobs
}

// chooseReads marks the jobs whose packs --read-data reads (the Subset),
// and orders the jobs for the pass.
func (c *checker) chooseReads(jobs []packJob) {
	var ids []crypto.ID
	for _, j := range jobs {
		if !j.unref {
			ids = append(ids, j.id)
		}
	}
	chosen := c.opts.Subset.choose(ids, c.stored, func(id crypto.ID) bool {
		blobs := c.indexed[id]
		return len(blobs) > 0 && blobs[0].Type == pack.DataBlob
	})
	for i := range jobs {
		jobs[i].read = chosen[jobs[i].id]
	}
	// Largest packs first: the pass then ends on small ones, and no
	// core waits alone on a large pack at the end.
	sort.SliceStable(jobs, func(a, b int) bool {
		return jobs[a].read && !jobs[b].read || jobs[a].read == jobs[b].read && jobs[a].size > jobs[b].size
	})
}

// runPackJobs checks every pack in parallel and returns the results in
// job order.
//
// Readers load the packs to read, in job order, into a few buffers;
// workers verify them in the order they arrive (a large pack still being
// read holds up no worker). Reading and verifying overlap, and memory
// holds at most cap(free) packs.
func (c *checker) runPackJobs(ctx context.Context, jobs []packJob) ([]packResult, error) {
	var totalBytes int64
	for _, j := range jobs {
		if j.read {
			totalBytes += j.size
		}
	}
	phase := "packs"
	if c.opts.ReadData {
		phase = "read-data"
	}
	results := make([]packResult, len(jobs))
	var (
		done      int64
		bytesDone int64
		wmu       sync.Mutex
		wg        sync.WaitGroup
	)
	c.progress(CheckProgress{Phase: phase, Total: int64(len(jobs)), TotalBytes: totalBytes})
	free := make(chan []byte, c.opts.Workers+CheckReaders)
	for range cap(free) {
		free <- nil
	}
	ready := c.startPackReaders(ctx, jobs, free)
	for w := 0; w < c.opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var plain []byte
			for lp := range ready {
				i := lp.i
				if ctx.Err() == nil {
					results[i], plain = c.checkPackTwice(ctx, jobs[i], lp, plain)
				}
				if jobs[i].read {
					if lp.data != nil {
						lp.buf = lp.data[:cap(lp.data)]
					}
					free <- lp.buf // never blocks: buffers go back where they came from
				}
				if ctx.Err() != nil {
					continue // let the readers run out
				}
				if jobs[i].pending {
					downgradePending(results[i].problems)
				}
				wmu.Lock()
				done++
				bytesDone += results[i].bytes
				p := CheckProgress{Phase: phase, Done: done, Total: int64(len(jobs)), Bytes: bytesDone, TotalBytes: totalBytes}
				wmu.Unlock()
				c.progress(p)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

// startPackReaders starts the CheckReaders goroutines. They take the jobs
// in order and send every one to the returned channel, which they close
// when done: a pack to read is loaded into a buffer from free (nil: not
// yet allocated), other jobs go through as they are.
func (c *checker) startPackReaders(ctx context.Context, jobs []packJob, free chan []byte) <-chan loadedPack {
	var maxRead int64
	for _, j := range jobs {
		if j.read && j.size <= pack.MaxPackSize {
			maxRead = max(maxRead, (j.size+4095)&^4095)
		}
	}
	ready := make(chan loadedPack, len(jobs))
	var nextRead atomic.Int64
	var rg sync.WaitGroup
	for range CheckReaders {
		rg.Add(1)
		go func() {
			defer rg.Done()
			for {
				i := int(nextRead.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				if !jobs[i].read || ctx.Err() != nil {
					ready <- loadedPack{i: i, err: ctx.Err()}
					continue
				}
				var buf []byte
				select {
				case buf = <-free:
				case <-ctx.Done():
					ready <- loadedPack{i: i, err: ctx.Err()}
					continue
				}
				if buf == nil {
					// Room for the largest pack at once: a buffer that
					// grows pack by pack is garbage many times over. (Go
					// aligns allocations this large to pages, as reads
					// around the page cache want.)
					buf = make([]byte, maxRead)
				}
				data, err := c.loadPack(ctx, jobs[i], buf)
				ready <- loadedPack{i: i, data: data, buf: buf, err: err}
			}
		}()
	}
	go func() {
		rg.Wait()
		close(ready)
	}()
	return ready
}

// downgradePending turns the errors found in a pack marked for deletion
// into warnings: damage there costs nothing unless a snapshot still needs
// its blobs, which the tree walk reports as missing.
func downgradePending(problems []*Problem) {
	for _, p := range problems {
		if p.Severity == SeverityError {
			p.Severity = SeverityWarning
			p.Message += " (the pack is marked for deletion)"
		}
	}
}

// collectPackResults adds the pack checks' problems in job order, counts
// what was read, records the blobs of unreferenced packs and the copies
// that cannot be used.
func (c *checker) collectPackResults(jobs []packJob, results []packResult) {
	for i, j := range jobs {
		res := results[i]
		if j.read {
			c.res.PacksRead++
			c.res.BytesRead += res.bytes
		}
		if j.unref {
			for _, b := range res.header {
				ref := BlobRef{b.Type, b.ID}
				if _, ok := c.unrefBlobs[ref]; !ok {
					c.unrefBlobs[ref] = index.PackedBlob{Blob: b, PackID: j.id}
				}
			}
		}
		for _, p := range res.problems {
			i := c.add(p)
			if p.Pack != nil {
				if p.allOf != nil {
					c.gone[*p.Pack] = i
				}
				for _, ref := range p.candidates {
					c.unusable[packBlob{*p.Pack, ref}] = true
				}
			}
		}
	}
}

// CheckReaders is the number of goroutines that read packs for
// check --read-data. They mostly wait for the disk, and should have Ps of
// their own (GOMAXPROCS above CheckOptions.Workers), or each finished read
// waits for a busy worker to be preempted before the next one is issued.
const CheckReaders = 2

// dedupBlobs drops repeated entries (a pack listed in two index files).
func dedupBlobs(blobs []pack.Blob) []pack.Blob {
	// Alike blobs share their offset: with offsets strictly increasing
	// (the usual case) there are none, and nothing is copied.
	increasing := true
	for i := 1; i < len(blobs) && increasing; i++ {
		increasing = blobs[i-1].Offset < blobs[i].Offset
	}
	if increasing {
		return blobs
	}
	seen := make(map[pack.Blob]bool, len(blobs))
	out := blobs[:0:0]
	for _, b := range blobs {
		if !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	return out
}

// loadedPack is a pack read for a worker: its bytes (in buf's storage),
// or why it could not be read.
type loadedPack struct {
	i    int // the job
	data []byte
	buf  []byte
	err  error
}

// checkPackTwice is checkPack, except that a pack that was read and
// found damaged is read once more: when the second read checks clean, the
// first download was corrupted on its way (storage or network that damage
// a download now and then), the pack is sound, and check reports the
// second read, with a warning that keeps the first error (restic #5467).
func (c *checker) checkPackTwice(ctx context.Context, j packJob, lp loadedPack, buf []byte) (packResult, []byte) {
	res, buf := c.checkPack(ctx, j, lp, buf)
	first := firstError(res.problems)
	if !j.read || first == nil || ctx.Err() != nil {
		return res, buf
	}
	data, err := c.loadPack(ctx, j, nil)
	if err != nil {
		return res, buf
	}
	again, buf := c.checkPack(ctx, j, loadedPack{i: lp.i, data: data}, buf)
	if firstError(again.problems) != nil {
		return res, buf
	}
	again.problems = append(again.problems, &Problem{Severity: SeverityWarning, Kind: first.Kind, Pack: idPtr(j.id), File: packFile(j.id),
		Message: fmt.Sprintf("pack %s: the first read was damaged (%s), a second read was sound: the storage or network corrupted a download", j.id.Short(), first.Message)})
	return again, buf
}

// firstError returns the first problem of error severity, or nil.
func firstError(problems []*Problem) *Problem {
	for _, p := range problems {
		if p.Severity == SeverityError {
			return p
		}
	}
	return nil
}

// loadPack reads a whole pack, into buf's storage where it can. On local
// disk it reads around the page cache: a check of stored data must see what
// the disk holds, not a cached copy (and it spares the kernel a copy).
func (c *checker) loadPack(ctx context.Context, j packJob, buf []byte) ([]byte, error) {
	if j.size > pack.MaxPackSize {
		return nil, fmt.Errorf("%w: %d bytes is larger than the maximum pack size", pack.ErrCorrupt, j.size)
	}
	h := backend.Handle{Type: backend.PackFile, Name: j.id.String()}
	if ul, ok := backend.As[backend.UncachedLoader](c.r.Backend()); ok {
		return ul.LoadUncached(ctx, h, buf)
	}
	return c.r.Backend().Load(ctx, h, 0, 0)
}

// checkPack checks one pack: its header against the index entries, and
// with j.read (lp holds the pack) every blob. buf is scratch for plaintext,
// returned for reuse.
func (c *checker) checkPack(ctx context.Context, j packJob, lp loadedPack, buf []byte) (packResult, []byte) {
	var res packResult
	id := j.id
	file := packFile(id)
	h := backend.Handle{Type: backend.PackFile, Name: id.String()}
	var (
		header []pack.Blob
		data   []byte
		err    error
	)
	if j.read {
		data, err = lp.data, lp.err
		res.bytes = int64(len(data))
		if err == nil {
			header, err = pack.ParseTail(c.r.Key(), data, int64(len(data)))
			if err != nil {
				err = fmt.Errorf("%s: %w", h, err)
			}
			if (c.opts.PackHashes || err != nil || hasPadding(header)) && crypto.Hash(data) != id {
				res.problems = append(res.problems, &Problem{Severity: SeverityError, Kind: KindPackHash, Pack: idPtr(id), File: file,
					Message: fmt.Sprintf("pack %s: content does not match its name (the file is damaged)", id.Short())})
			}
		}
	} else {
		header, err = c.r.ReadPackHeader(ctx, id, j.size)
	}
	if ctx.Err() != nil {
		return res, buf
	}
	if err != nil {
		if j.unref {
			res.problems = append(res.problems, &Problem{Severity: SeverityWarning, Kind: KindPackUnreferenced, Pack: idPtr(id), File: file,
				Message: fmt.Sprintf("pack %s is not in any index, and its header cannot be read: %v", id.Short(), err)})
			return res, buf
		}
		p := &Problem{Severity: SeverityError, Kind: KindPackHeader, Pack: idPtr(id), File: file,
			Message: fmt.Sprintf("header of pack %s cannot be read: %v", id.Short(), err)}
		if data == nil {
			// Without the data we cannot tell which blobs are intact: count
			// them all as unusable.
			p.allOf = j.blobs
			p.Blobs = problemBlobsOf(j.blobs)
		} else {
			p.Message += " (its indexed blobs are verified one by one)"
		}
		res.problems = append(res.problems, p)
		if data == nil {
			return res, buf
		}
	}
	res.header = header
	if j.unref {
		res.problems = append(res.problems, &Problem{Severity: SeverityWarning, Kind: KindPackUnreferenced, Pack: idPtr(id), File: file,
			Message: fmt.Sprintf("pack %s (%d blobs) is not in any index (a backup is running or was interrupted, or repair left a damaged pack; prune removes such packs)", id.Short(), len(header))})
		return res, buf
	}
	if err == nil {
		res.problems = append(res.problems, compareHeader(id, j.blobs, header)...)
	}
	if data == nil {
		return res, buf
	}
	// Verify every blob: the header's when it parsed, else the index's.
	toVerify := header
	if err != nil {
		toVerify = j.blobs
	}
	var problems []*Problem
	problems, buf = c.verifyBlobs(j, data, toVerify, buf)
	res.problems = append(res.problems, problems...)
	return res, buf
}

// verifyBlobs decrypts and verifies the blobs of pack j, whose bytes data
// holds, and keeps the summaries of its indexed trees for the tree walk.
// buf is scratch for plaintext, returned for reuse.
func (c *checker) verifyBlobs(j packJob, data []byte, blobs []pack.Blob, buf []byte) ([]*Problem, []byte) {
	id := j.id
	file := packFile(id)
	inIndex := make(map[pack.Blob]bool, len(j.blobs))
	for _, b := range j.blobs {
		inIndex[b] = true
	}
	var problems []*Problem
	var damagedIndexed, damagedExtra []BlobRef
	var firstErr error
	for _, b := range blobs {
		if b.Type == pack.PaddingBlob {
			continue
		}
		end := int64(b.Offset) + int64(b.Length)
		var verr error
		if end > int64(len(data)) {
			verr = fmt.Errorf("blob %s lies beyond the end of the pack", b.ID.Short())
		} else {
			buf, verr = c.r.OpenPacked(index.PackedBlob{Blob: b, PackID: id}, data[b.Offset:end], buf)
		}
		if verr == nil {
			if b.Type == pack.TreeBlob && inIndex[b] {
				c.keepSummary(b.ID, buf)
			}
			if cap(buf) > maxScratch {
				buf = nil // a huge tree's plaintext is not kept for the next blob
			}
			continue
		}
		if firstErr == nil {
			firstErr = verr
		}
		if inIndex[b] {
			damagedIndexed = append(damagedIndexed, BlobRef{b.Type, b.ID})
		} else {
			damagedExtra = append(damagedExtra, BlobRef{b.Type, b.ID})
		}
	}
	if len(damagedIndexed) > 0 {
		problems = append(problems, &Problem{Severity: SeverityError, Kind: KindBlobDamaged, Pack: idPtr(id), File: file,
			Blobs: problemBlobs(damagedIndexed), candidates: damagedIndexed,
			Message: fmt.Sprintf("pack %s: %d blob(s) are damaged, first: %v", id.Short(), len(damagedIndexed), firstErr)})
	}
	if len(damagedExtra) > 0 {
		problems = append(problems, &Problem{Severity: SeverityWarning, Kind: KindBlobDamaged, Pack: idPtr(id), File: file,
			Blobs:   problemBlobs(damagedExtra),
			Message: fmt.Sprintf("pack %s: %d damaged blob(s) that no index lists (nothing needs them)", id.Short(), len(damagedExtra))})
	}
	return problems, buf
}

// maxScratch is the largest plaintext scratch a pack worker keeps between
// blobs (data blobs are at most 8 MiB; a tree blob can be hundreds).
const maxScratch = 16 << 20

// hasPadding reports whether a pack header lists padding, whose bytes no
// seal covers.
func hasPadding(blobs []pack.Blob) bool {
	for _, b := range blobs {
		if b.Type == pack.PaddingBlob {
			return true
		}
	}
	return false
}

// compareHeader checks that every index entry of a pack is in its header
// with the same place and sizes. Header entries the index lacks are only a
// warning (repair index drops damaged blobs; nothing refers to them).
func compareHeader(id crypto.ID, indexed, header []pack.Blob) []*Problem {
	type key struct {
		ref    BlobRef
		offset uint32
	}
	inHeader := make(map[key]pack.Blob, len(header))
	for _, b := range header {
		inHeader[key{BlobRef{b.Type, b.ID}, b.Offset}] = b
	}
	seen := make(map[key]bool, len(indexed))
	var wrong []BlobRef
	for _, b := range indexed {
		k := key{BlobRef{b.Type, b.ID}, b.Offset}
		seen[k] = true
		if hb, ok := inHeader[k]; !ok || hb != b {
			wrong = append(wrong, k.ref)
		}
	}
	var out []*Problem
	if len(wrong) > 0 {
		out = append(out, &Problem{Severity: SeverityError, Kind: KindPackMismatch, Pack: idPtr(id), File: packFile(id),
			Blobs: problemBlobs(wrong), candidates: wrong,
			Message: fmt.Sprintf("pack %s: %d index entries are not in the pack header as indexed", id.Short(), len(wrong))})
	}
	var extra []BlobRef
	for _, b := range header {
		if !seen[key{BlobRef{b.Type, b.ID}, b.Offset}] {
			extra = append(extra, BlobRef{b.Type, b.ID})
		}
	}
	if len(extra) > 0 {
		out = append(out, &Problem{Severity: SeverityWarning, Kind: KindPackExtraBlobs, Pack: idPtr(id), File: packFile(id),
			Blobs:   problemBlobs(extra),
			Message: fmt.Sprintf("pack %s holds %d blob(s) its index entry does not list", id.Short(), len(extra))})
	}
	return out
}

// usable reports whether some indexed copy of a blob (normal, or pending
// when pending is set) can be read, as far as the pack checks know.
func (c *checker) usable(ref BlobRef, pending bool) bool {
	locs := c.r.Index().Lookup(ref.Type, ref.ID)
	if pending {
		locs = append(locs, c.pendingIdx.Lookup(ref.Type, ref.ID)...)
	}
	for _, l := range locs {
		if _, gone := c.gone[l.PackID]; gone {
			continue
		}
		if !c.unusable[packBlob{l.PackID, ref}] {
			return true
		}
	}
	return false
}
