// Check's file checks: snapshot, index and key files, and stored names
// that are not ids.

package maint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/pack"
)

func (c *checker) loadSnapshots(ctx context.Context) error {
	c.progress(CheckProgress{Phase: "snapshots"})
	snaps, problems, err := c.r.Snapshots(ctx)
	if err != nil {
		return err
	}
	c.snaps = snaps
	c.res.Snapshots = len(snaps)
	for _, p := range problems {
		file := backend.Handle{Type: backend.SnapshotFile, Name: p.ID.String()}.String()
		if errors.Is(p.Err, fs.ErrNotExist) {
			c.add(&Problem{Severity: SeverityWarning, Kind: KindFileVanished, Snapshot: idPtr(p.ID), File: file,
				Message: fmt.Sprintf("snapshot %s was removed while check ran (by forget or prune)", p.ID.Short())})
			continue
		}
		c.add(&Problem{Severity: SeverityError, Kind: KindSnapshotUnreadable, Snapshot: idPtr(p.ID), File: file,
			Message: fmt.Sprintf("snapshot %s cannot be read: %v", p.ID.Short(), p.Err)})
	}
	return nil
}

func (c *checker) loadIndex(ctx context.Context) error {
	c.progress(CheckProgress{Phase: "index"})
	problems, err := c.r.LoadIndex(ctx, true)
	if err != nil {
		return err
	}
	if c.opts.IndexLoaded != nil {
		c.opts.IndexLoaded()
	}
	bad := map[crypto.ID]bool{}
	for _, p := range problems {
		bad[p.ID] = true
		file := backend.Handle{Type: backend.IndexFile, Name: p.ID.String()}.String()
		if errors.Is(p.Err, fs.ErrNotExist) {
			c.add(&Problem{Severity: SeverityWarning, Kind: KindFileVanished, File: file,
				Message: fmt.Sprintf("index file %s was removed while check ran (a prune or repair ran at the same time); if blobs are reported missing, run check again", p.ID.Short())})
			continue
		}
		c.add(&Problem{Severity: SeverityError, Kind: KindIndexUnreadable, File: file,
			Message: fmt.Sprintf("index file %s cannot be read: %v", p.ID.Short(), p.Err)})
	}
	loaded := c.r.IndexFiles()
	c.res.IndexFiles = len(loaded)
	ids, err := c.r.ListFiles(ctx, backend.IndexFile)
	if err != nil {
		return err
	}
	sortIDs(ids)
	for _, id := range ids {
		if _, ok := loaded[id]; ok || bad[id] {
			continue
		}
		c.add(&Problem{Severity: SeverityWarning, Kind: KindIndexSuperseded,
			File:    backend.Handle{Type: backend.IndexFile, Name: id.String()}.String(),
			Message: fmt.Sprintf("index file %s is superseded by a newer one but still stored (left by an interrupted prune or repair)", id.Short())})
	}
	c.indexed = c.r.Index().Packs()
	marks, pidx := c.r.PendingPacks()
	c.pendingIdx = pidx
	c.pending = map[crypto.ID][]pack.Blob{}
	for id, blobs := range pidx.Packs() {
		if _, ok := c.indexed[id]; !ok {
			c.pending[id] = blobs
		}
	}
	for id := range marks {
		if _, ok := c.pending[id]; !ok {
			if _, ok := c.indexed[id]; !ok {
				c.pending[id] = nil // a pending pack without blobs
			}
		}
	}
	return nil
}

// maxKeyFileSize bounds a key file read by check.
const maxKeyFileSize = 64 << 10

// checkKeysAndNames checks key files (hash and syntax) and reports stored
// files whose names are not ids. Index and snapshot files had their names
// checked while loading.
func (c *checker) checkKeysAndNames(ctx context.Context) error {
	c.progress(CheckProgress{Phase: "keys"})
	if err := c.reportInvalidNames(ctx); err != nil {
		return err
	}
	return c.checkKeyFiles(ctx)
}

// reportInvalidNames reports key, index and snapshot files whose names are
// not ids.
func (c *checker) reportInvalidNames(ctx context.Context) error {
	be := c.r.Backend()
	for _, t := range []backend.FileType{backend.KeyFile, backend.IndexFile, backend.SnapshotFile} {
		var odd []string
		err := be.List(ctx, t, func(fi backend.FileInfo) error {
			if _, err := crypto.ParseID(fi.Name); err != nil {
				odd = append(odd, fi.Name)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list %s: %w", t, err)
		}
		sort.Strings(odd)
		for _, name := range odd {
			c.add(&Problem{Severity: SeverityWarning, Kind: KindInvalidName, File: string(t) + "/" + name,
				Message: fmt.Sprintf("%s/%s is not named by an id; dj ignores it", t, name)})
		}
	}
	return nil
}

// checkKeyFiles checks that every key file's content matches its name and
// parses as a key file.
func (c *checker) checkKeyFiles(ctx context.Context) error {
	be := c.r.Backend()
	ids, err := c.r.ListFiles(ctx, backend.KeyFile)
	if err != nil {
		return err
	}
	sortIDs(ids)
	for _, id := range ids {
		h := backend.Handle{Type: backend.KeyFile, Name: id.String()}
		fi, err := be.Stat(ctx, h)
		if err == nil && fi.Size > maxKeyFileSize {
			err = fmt.Errorf("%d bytes is too large for a key file", fi.Size)
		}
		var data []byte
		if err == nil {
			data, err = be.Load(ctx, h, 0, 0)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.add(&Problem{Severity: SeverityError, Kind: KindKeyUnreadable, File: h.String(),
				Message: fmt.Sprintf("key %s cannot be read: %v", id.Short(), err)})
			continue
		}
		if crypto.Hash(data) != id {
			c.add(&Problem{Severity: SeverityError, Kind: KindFileHash, File: h.String(),
				Message: fmt.Sprintf("key %s: content does not match its name", id.Short())})
			continue
		}
		if _, err := crypto.ParseKeyFile(data); err != nil {
			c.add(&Problem{Severity: SeverityError, Kind: KindKeyUnreadable, File: h.String(),
				Message: fmt.Sprintf("key %s cannot be parsed: %v", id.Short(), err)})
		}
	}
	return nil
}
