// Check's pack checks: every indexed pack is stored and its header agrees
// with the index; with --read-data, every blob of every pack (or the
// subset) is read and verified. This file lists and schedules the packs;
// check_packverify.go checks one.

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
