// Check's verification of one pack: its header against the index, and
// with --read-data every blob opened, decompressed and hashed.

package maint

import (
	"context"
	"fmt"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

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
