//go:build linux

package fusefs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// fakeRepo is an in-memory Repository. Trees are stored encoded and decoded
// on each load, as a real repository does.
type fakeRepo struct {
	mu       sync.Mutex
	snaps    []*snapshot.Snapshot
	trees    map[crypto.ID][]byte
	blobs    map[crypto.ID][]byte
	corrupt  map[crypto.ID]bool
	delay    time.Duration // added to every blob load
	zeroSize map[int]crypto.ID

	blobLoads     atomic.Int64
	inflight      atomic.Int64      // blob loads running now
	maxInflight   atomic.Int64      // the most blob loads that ran at once
	loaded        map[crypto.ID]int // loads per blob
	treeLoads     atomic.Int64
	snapshotReads atomic.Int64
}

var errCorrupt = errors.New("fake: blob fails verification")

func newFakeRepo() *fakeRepo {
	return &fakeRepo{
		trees:    make(map[crypto.ID][]byte),
		blobs:    make(map[crypto.ID][]byte),
		corrupt:  make(map[crypto.ID]bool),
		zeroSize: make(map[int]crypto.ID),
		loaded:   make(map[crypto.ID]int),
	}
}

// loadCount returns how often blob id was loaded.
func (r *fakeRepo) loadCount(id crypto.ID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loaded[id]
}

func (r *fakeRepo) Snapshots(ctx context.Context) ([]*snapshot.Snapshot, error) {
	r.snapshotReads.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*snapshot.Snapshot(nil), r.snaps...), nil
}

func (r *fakeRepo) LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error) {
	b, err := r.treeBytes(id)
	if err != nil {
		return nil, err
	}
	return tree.Decode(b)
}

// treeBytes returns the encoding of a tree, counting the load.
func (r *fakeRepo) treeBytes(id crypto.ID) ([]byte, error) {
	r.treeLoads.Add(1)
	r.mu.Lock()
	b, ok := r.trees[id]
	r.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("fake: tree %s not found", id.Short())
	}
	return b, nil
}

// streamingRepo is a fakeRepo that decodes trees as a real repository does
// (repo.LoadCompactTree): as they stream, moving to files as spill says.
type streamingRepo struct{ *fakeRepo }

func (r streamingRepo) LoadCompactTree(ctx context.Context, id crypto.ID, spill tree.SpillOptions) (*tree.Compact, error) {
	b, err := r.treeBytes(id)
	if err != nil {
		return nil, err
	}
	return tree.DecodeCompactReader(bytes.NewReader(b), len(b), spill)
}

func (r *fakeRepo) LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error) {
	r.blobLoads.Add(1)
	r.mu.Lock()
	r.loaded[id]++
	b, ok := r.blobs[id]
	bad := r.corrupt[id]
	delay := r.delay
	r.mu.Unlock()
	n := r.inflight.Add(1)
	defer r.inflight.Add(-1)
	for m := r.maxInflight.Load(); n > m && !r.maxInflight.CompareAndSwap(m, n); m = r.maxInflight.Load() {
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if !ok {
		return nil, fmt.Errorf("fake: blob %s not found", id.Short())
	}
	if bad {
		return nil, errCorrupt
	}
	return append(buf[:0], b...), nil
}

func (r *fakeRepo) BlobSize(id crypto.ID) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.blobs[id]
	return len(b), ok
}

func (r *fakeRepo) IsZeroBlob(id crypto.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.blobs[id]
	return ok && r.zeroSize[len(b)] == id
}

// addBlob stores a data blob and returns its id.
func (r *fakeRepo) addBlob(data []byte) crypto.ID {
	id := crypto.Hash(data)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobs[id] = append([]byte(nil), data...)
	if len(data) > 0 && bytes.Count(data, []byte{0}) == len(data) {
		r.zeroSize[len(data)] = id
	}
	return id
}

// addTree stores a tree and returns its id.
func (r *fakeRepo) addTree(t *tree.Tree) crypto.ID {
	b, err := t.Encode()
	if err != nil {
		panic(err)
	}
	id := crypto.Hash(append([]byte("tree"), b...))
	r.mu.Lock()
	r.trees[id] = b
	r.mu.Unlock()
	return id
}

func (r *fakeRepo) addSnapshot(sn *snapshot.Snapshot) {
	b, _ := json.Marshal(sn)
	sn.ID = crypto.Hash(b)
	r.mu.Lock()
	r.snaps = append(r.snaps, sn)
	r.mu.Unlock()
}

func (r *fakeRepo) removeSnapshot(id crypto.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, sn := range r.snaps {
		if sn.ID == id {
			r.snaps = append(r.snaps[:i], r.snaps[i+1:]...)
			return
		}
	}
}

// chunks splits data into blobs of the given sizes (repeating the last).
func (r *fakeRepo) chunks(data []byte, sizes ...int) []crypto.ID {
	var ids []crypto.ID
	for i := 0; len(data) > 0; i++ {
		n := sizes[min(i, len(sizes)-1)]
		n = min(n, len(data))
		ids = append(ids, r.addBlob(data[:n]))
		data = data[n:]
	}
	return ids
}

// fentry describes one node of a test tree by its path.
type fentry struct {
	path string
	node tree.Node // Name and Subtree are set by build; Type defaults to File, Size to the data's
	data []byte    // file content
	// sizes splits data into chunks (default: one chunk).
	sizes []int
}

// build stores the trees for entries and returns the root tree's id.
// Directories named only as parents get mode 0755.
func (r *fakeRepo) build(entries []fentry) crypto.ID {
	type dir struct {
		node     *tree.Node
		children map[string]*tree.Node
	}
	dirs := map[string]*dir{"": {children: map[string]*tree.Node{}}}
	var ensure func(p string) *dir
	ensure = func(p string) *dir {
		if d, ok := dirs[p]; ok {
			return d
		}
		parent := ensure(path.Dir("/" + p)[1:])
		n := &tree.Node{Name: path.Base(p), Type: tree.Dir, Mode: os.ModeDir | 0o755, Links: 2,
			ModTime: time.Unix(1600000000, 0)}
		parent.children[n.Name] = n
		d := &dir{node: n, children: map[string]*tree.Node{}}
		dirs[p] = d
		return d
	}
	for _, e := range entries {
		p := strings.Trim(e.path, "/")
		n := e.node
		n.Name = path.Base(p)
		if n.Type == "" {
			n.Type = tree.File
		}
		if n.Type == tree.Dir {
			d := ensure(p)
			n.Subtree = nil
			*d.node = n
			continue
		}
		if n.Type == tree.File {
			sizes := e.sizes
			if len(sizes) == 0 {
				sizes = []int{max(len(e.data), 1)}
			}
			n.Content = r.chunks(e.data, sizes...)
			if n.Size == 0 { // a size given disagrees with the data on purpose
				n.Size = uint64(len(e.data))
			}
			if n.Blocks == 0 {
				n.Blocks = (n.Size + 511) / 512
			}
		}
		if n.Links == 0 {
			n.Links = 1
		}
		ensure(path.Dir("/" + p)[1:]).children[n.Name] = &n
	}
	// Store bottom-up: deepest directories first.
	paths := make([]string, 0, len(dirs))
	for p := range dirs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	sort.SliceStable(paths, func(i, j int) bool {
		di, dj := depth(paths[i]), depth(paths[j])
		return di > dj
	})
	var rootID crypto.ID
	for _, p := range paths {
		d := dirs[p]
		t := &tree.Tree{}
		for _, c := range d.children {
			t.Nodes = append(t.Nodes, c)
		}
		id := r.addTree(t)
		if p == "" {
			rootID = id
			continue
		}
		sub := id
		d.node.Subtree = &sub
	}
	return rootID
}

func depth(p string) int {
	if p == "" {
		return 0
	}
	return strings.Count(p, "/") + 1
}

// randomData returns n pseudo-random bytes from seed.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// mkdev encodes a device number as Go's stat reports it.
func mkdev(major, minor uint64) uint64 {
	return (major&0xfff)<<8 | (major&^0xfff)<<32 | minor&0xff | (minor&^0xff)<<12
}

// Test fixture: three hosts' worth of snapshots.
var (
	t0      = time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	aTxtV1  = []byte("hello, version one\n")
	aTxtV2  = []byte("hello, version two, longer\n")
	bigData = randomData(1, 3<<20+12345)
)

// badOffset is where the corrupt chunk of bad.bin starts; it is 256 KiB long.
const badOffset = 14 * 256 << 10

// fixture is the repository most tests mount.
type fixture struct {
	repo             *fakeRepo
	sn1, sn2, sn3    *snapshot.Snapshot
	snBroken         *snapshot.Snapshot
	badBlob          crypto.ID
	badData          []byte
	sparse           []byte
	bigSizes         []int
	fileMtime, atime time.Time
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{repo: newFakeRepo()}
	r := f.repo
	f.fileMtime = time.Date(2023, 12, 24, 18, 30, 15, 123456789, time.UTC)
	f.atime = time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	ctime := time.Date(2024, 1, 3, 3, 4, 5, 7, time.UTC)
	f.bigSizes = []int{700 << 10, 1 << 20, 300 << 10, 1<<20 + 17}
	f.sparse = make([]byte, 3<<20)
	copy(f.sparse[1<<20:], "data in the middle of zeros")
	common := func(a []byte) []fentry {
		return []fentry{
			{path: "home/ann/docs", node: tree.Node{Type: tree.Dir, Mode: os.ModeDir | 0o750, UID: 1000, GID: 100, Links: 2,
				ModTime: f.fileMtime, Xattrs: []tree.Xattr{{Name: "user.dir", Value: []byte("dirval")}}}},
			{path: "home/ann/docs/a.txt", data: a, node: tree.Node{Mode: 0o644, UID: 1000, GID: 100, ModTime: f.fileMtime,
				AccessTime: f.atime, ChangeTime: ctime, Inode: 11, DeviceID: 7,
				Xattrs: []tree.Xattr{{Name: "user.comment", Value: []byte("a comment")}, {Name: "user.empty", Value: []byte{}}}}},
			{path: "home/ann/docs/big.bin", data: bigData, sizes: f.bigSizes, node: tree.Node{Mode: 0o600, UID: 1000, GID: 100, ModTime: f.fileMtime}},
			{path: "home/ann/docs/sparse.img", data: f.sparse, sizes: []int{1 << 20}, node: tree.Node{Mode: 0o644, Blocks: 8}},
			{path: "home/ann/docs/empty", node: tree.Node{Mode: 0o644}},
			{path: "home/ann/docs/link", node: tree.Node{Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "a.txt",
				Xattrs: []tree.Xattr{{Name: "trusted.l", Value: []byte("on a link")}}}},
			{path: "home/ann/docs/hard1", data: []byte("linked content\n"), node: tree.Node{Mode: 0o640, Links: 2, Inode: 99, DeviceID: 7}},
			{path: "home/ann/docs/sub/hard2", data: []byte("linked content\n"), node: tree.Node{Mode: 0o640, Links: 2, Inode: 99, DeviceID: 7}},
			{path: "home/ann/docs/sub/deeper/x", data: []byte("x\n"), node: tree.Node{Mode: 0o444}},
			{path: "home/ann/docs/setuid", data: []byte("#!/bin/sh\n"), node: tree.Node{Mode: 0o755 | os.ModeSetuid}},
			{path: "home/ann/docs/secret", node: tree.Node{Type: tree.Dir, Mode: os.ModeDir | 0o700, UID: 1000}},
			{path: "home/ann/docs/secret/s", data: []byte("s"), node: tree.Node{Mode: 0o600, UID: 1000}},
			{path: "home/ann/docs/naïve ünïcode.txt", data: []byte("unicode\n"), node: tree.Node{Mode: 0o644}},
			{path: "dev/null", node: tree.Node{Type: tree.CharDev, Mode: os.ModeDevice | os.ModeCharDevice | 0o666, Rdev: mkdev(1, 3)}},
			{path: "dev/sda1", node: tree.Node{Type: tree.Dev, Mode: os.ModeDevice | 0o660, Rdev: mkdev(8, 1), GID: 6}},
			{path: "dev/big", node: tree.Node{Type: tree.CharDev, Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Rdev: mkdev(300, 70000)}},
			{path: "tmp/fifo", node: tree.Node{Type: tree.FIFO, Mode: os.ModeNamedPipe | 0o644}},
			{path: "tmp/sock", node: tree.Node{Type: tree.Socket, Mode: os.ModeSocket | 0o755}},
		}
	}
	root1 := r.build(common(aTxtV1))
	e2 := append(common(aTxtV2), fentry{path: "home/ann/docs/b.txt", data: []byte("new in two\n"), node: tree.Node{Mode: 0o644}})
	root2 := r.build(e2)
	root3 := r.build([]fentry{{path: "srv/www/index.html", data: []byte("<html>beta</html>\n"), node: tree.Node{Mode: 0o644}}})

	f.sn1 = &snapshot.Snapshot{Time: t0, Hostname: "alpha", Username: "ann", Tags: []string{"daily"}, Tree: root1, Paths: []string{"/home/ann/docs"}}
	f.sn2 = &snapshot.Snapshot{Time: t0.Add(time.Hour), Hostname: "alpha", Username: "ann", Tags: []string{"daily", "weekly"}, Tree: root2, Paths: []string{"/home/ann/docs"}}
	f.sn3 = &snapshot.Snapshot{Time: t0.Add(time.Hour), Hostname: "beta", Username: "www", Tree: root3, Paths: []string{"/srv/www"}}
	r.addSnapshot(f.sn1)
	r.addSnapshot(f.sn2)
	r.addSnapshot(f.sn3)

	badData := randomData(7, 4<<20)
	rootBroken := r.build([]fentry{
		{path: "bad.bin", data: badData, sizes: []int{256 << 10}, node: tree.Node{Mode: 0o644}},
		{path: "good.txt", data: []byte("still fine\n"), node: tree.Node{Mode: 0o644}},
	})
	f.badData = badData
	f.badBlob = crypto.Hash(badData[badOffset : badOffset+256<<10])
	r.corrupt[f.badBlob] = true
	f.snBroken = &snapshot.Snapshot{Time: t0.Add(3 * time.Hour), Hostname: "gamma", Tags: []string{"broken"}, Tree: rootBroken, Paths: []string{"/"}}
	r.addSnapshot(f.snBroken)
	return f
}

// timeName is a snapshot's directory name with the default time template.
func timeName(sn *snapshot.Snapshot) string {
	return sn.Time.Local().Format(DefaultTimeTemplate)
}
