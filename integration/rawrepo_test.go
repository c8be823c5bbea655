package integration

// A writer of arbitrary trees and snapshots (issue 12, "hostile trees"):
// it opens a test repository with its real key through the dj packages and
// stores whatever the test asks for, bypassing backup and every check the
// archiver and the tree encoder make: invalid or duplicate names, nodes out
// of order, blobs under forged ids, snapshots with any paths.

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"dj/backend"
	"dj/backend/local"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// rawRepo is an open repository that writes what it is told.
type rawRepo struct {
	t   *testing.T
	ctx context.Context
	r   *repo.Repository
}

// openRaw opens the env's (local) repository with its password and loads
// its index. Call done to write the index and close it.
func (e *env) openRaw() *rawRepo {
	e.t.Helper()
	ctx := context.Background()
	be, err := local.Open(ctx, e.repo)
	if err != nil {
		e.t.Fatalf("open backend: %v", err)
	}
	r, err := repo.Open(ctx, be, e.password, repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		be.Close()
		e.t.Fatalf("open repository: %v", err)
	}
	if _, err := r.LoadIndex(ctx, false); err != nil {
		r.Close()
		e.t.Fatalf("load index: %v", err)
	}
	return &rawRepo{t: e.t, ctx: ctx, r: r}
}

// done writes the index of everything saved and closes the repository.
func (rr *rawRepo) done() {
	rr.t.Helper()
	rr.flush()
	if err := rr.r.Close(); err != nil {
		rr.t.Fatalf("close repository: %v", err)
	}
}

// flush uploads the packs and writes their index.
func (rr *rawRepo) flush() {
	rr.t.Helper()
	if err := rr.r.Flush(rr.ctx); err != nil {
		rr.t.Fatalf("flush: %v", err)
	}
}

// data stores a data blob and returns its id.
func (rr *rawRepo) data(b []byte) crypto.ID {
	rr.t.Helper()
	id, _, err := rr.r.SaveBlob(rr.ctx, pack.DataBlob, b)
	if err != nil {
		rr.t.Fatalf("save data blob: %v", err)
	}
	return id
}

// treeRaw stores b, whatever it is, as a tree blob.
func (rr *rawRepo) treeRaw(b []byte) crypto.ID {
	rr.t.Helper()
	id, _, err := rr.r.SaveBlob(rr.ctx, pack.TreeBlob, b)
	if err != nil {
		rr.t.Fatalf("save tree blob: %v", err)
	}
	return id
}

// tree stores nodes as a tree blob in the order given, unchecked: names
// may be invalid, duplicated or unsorted.
func (rr *rawRepo) tree(nodes ...*tree.Node) crypto.ID {
	rr.t.Helper()
	if nodes == nil {
		nodes = []*tree.Node{}
	}
	b, err := json.Marshal(struct {
		Nodes []*tree.Node `json:"nodes"`
	}{nodes})
	if err != nil {
		rr.t.Fatal(err)
	}
	return rr.treeRaw(b)
}

// forged stores plain as a blob of type t under id, which need not be the
// id of plain (the blob's own hash): a repository written by someone who
// holds the key but not the rules.
func (rr *rawRepo) forged(t pack.BlobType, id crypto.ID, plain []byte) {
	rr.t.Helper()
	sealed := pack.SealBlob(rr.r.Key(), nil, t, id, plain)
	b := pack.Blob{Type: t, ID: id, Length: uint32(len(sealed)), PlainLength: uint32(len(plain))}
	if err := rr.r.CopySealedBlob(rr.ctx, b, sealed); err != nil {
		rr.t.Fatalf("save forged blob: %v", err)
	}
}

// snapshot flushes what was saved and writes a snapshot of root with the
// given paths; it returns the snapshot's id.
func (rr *rawRepo) snapshot(root crypto.ID, paths ...string) string {
	rr.t.Helper()
	if paths == nil {
		paths = []string{"/hostile"}
	}
	return rr.saveSnapshot(&snapshot.Snapshot{Time: time.Now(), Tree: root, Paths: paths, Hostname: "hostile", Username: "root"})
}

// saveSnapshot flushes what was saved and writes sn as it is; it returns
// the snapshot's id.
func (rr *rawRepo) saveSnapshot(sn *snapshot.Snapshot) string {
	rr.t.Helper()
	rr.flush()
	if err := rr.r.SaveSnapshot(rr.ctx, sn); err != nil {
		rr.t.Fatalf("save snapshot: %v", err)
	}
	return sn.ID.String()
}

// Nodes for raw trees.

var rawTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func rawFile(name string, size uint64, content ...crypto.ID) *tree.Node {
	return &tree.Node{Name: name, Type: tree.File, Mode: 0o644, ModTime: rawTime, AccessTime: rawTime, ChangeTime: rawTime,
		Size: size, Blocks: (size + 511) / 512, Links: 1, Content: content}
}

func rawDir(name string, sub crypto.ID) *tree.Node {
	return &tree.Node{Name: name, Type: tree.Dir, Mode: os.ModeDir | 0o755, ModTime: rawTime, AccessTime: rawTime, ChangeTime: rawTime, Subtree: &sub}
}

func rawSymlink(name, target string) *tree.Node {
	return &tree.Node{Name: name, Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, ModTime: rawTime, AccessTime: rawTime, ChangeTime: rawTime,
		Size: uint64(len(target)), Links: 1, LinkTarget: target}
}

// splitIndex rewrites the repository's index so that the entries of every
// pack are split over two index files (its even entries in one, its odd
// ones in the other) and removes the index files it replaces: a valid
// index that restic 0.19's index rewrite lost entries of. It returns how
// many packs it split.
func (rr *rawRepo) splitIndex() int {
	rr.t.Helper()
	ids, err := rr.r.ListFiles(rr.ctx, backend.IndexFile)
	if err != nil {
		rr.t.Fatal(err)
	}
	var halves [2]index.File
	split := 0
	for _, id := range ids {
		f, err := rr.r.LoadIndexFile(rr.ctx, id)
		if err != nil {
			rr.t.Fatal(err)
		}
		for _, fp := range f.Packs {
			var parts [2][]pack.Blob
			for i, b := range fp.Blobs {
				parts[i%2] = append(parts[i%2], b)
			}
			for h, blobs := range parts {
				if len(blobs) > 0 {
					halves[h].Packs = append(halves[h].Packs, index.FilePack{ID: fp.ID, Blobs: blobs})
				}
			}
			if len(parts[1]) > 0 {
				split++
			}
		}
		halves[0].Pending = append(halves[0].Pending, f.Pending...)
	}
	for _, f := range halves {
		if _, err := rr.r.SaveFile(rr.ctx, backend.IndexFile, f.Encode()); err != nil {
			rr.t.Fatal(err)
		}
	}
	for _, id := range ids {
		if err := rr.r.Backend().Remove(rr.ctx, backend.Handle{Type: backend.IndexFile, Name: id.String()}); err != nil {
			rr.t.Fatal(err)
		}
	}
	return split
}
