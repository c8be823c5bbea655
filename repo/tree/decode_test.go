package tree

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"
	"time"

	"dj/repo/crypto"
)

// randomTree makes a tree with nodes of every kind and awkward values:
// names that need escapes or are not UTF-8, empty and missing content and
// xattrs, extreme numbers and times.
func randomTree(rng *rand.Rand, n int) *Tree {
	names := []string{"a", "ünï", "日本語", "sp ace", "quote\"d", "back\\slash", "tab\tx", "ctl\x01", "bad\xff", "html<&>", "line\u2028sep", "emoji🙂"}
	types := []NodeType{File, Dir, Symlink, Dev, CharDev, FIFO, Socket, Irregular}
	t := &Tree{}
	for i := 0; i < n; i++ {
		nd := &Node{
			Name: fmt.Sprintf("%s-%d", names[rng.IntN(len(names))], i),
			Type: types[rng.IntN(len(types))],
			Mode: os.FileMode(rng.Uint32()),
			UID:  rng.Uint32(), GID: rng.Uint32(),
			Size: rng.Uint64(), Blocks: rng.Uint64N(1 << 40), Links: rng.Uint64N(3), Inode: rng.Uint64(),
			DeviceID: rng.Uint64(), Rdev: rng.Uint64N(1 << 20),
		}
		switch rng.IntN(4) {
		case 0:
			nd.ModTime = time.Unix(0, math.MinInt64+1)
		case 1:
			nd.ModTime = time.Unix(0, rng.Int64())
			nd.AccessTime = time.Unix(0, -rng.Int64N(1<<50))
			nd.ChangeTime = time.Unix(0, math.MaxInt64)
		}
		if rng.IntN(3) == 0 {
			nd.User, nd.Group = names[rng.IntN(len(names))], "grp"
		}
		switch nd.Type {
		case Dir:
			id := crypto.ID{byte(i), 0xab}
			nd.Subtree = &id
		case File:
			for k := rng.IntN(4); k > 0; k-- {
				nd.Content = append(nd.Content, crypto.ID{byte(k), byte(i), 0xcd})
			}
			if rng.IntN(5) == 0 {
				nd.Content = []crypto.ID{}
			}
		case Symlink:
			nd.LinkTarget = names[rng.IntN(len(names))]
		}
		for k := rng.IntN(3); k > 0; k-- {
			v := make([]byte, rng.IntN(5))
			for j := range v {
				v[j] = byte(rng.IntN(256))
			}
			nd.Xattrs = append(nd.Xattrs, Xattr{Name: "user." + names[rng.IntN(len(names))], Value: v})
		}
		t.Nodes = append(t.Nodes, nd)
	}
	return t
}

// TestDecodePlainAgrees checks that the plain decoder reads what Encode
// writes exactly as the general decoder does, and that on mangled trees it
// either steps aside or agrees with it.
func TestDecodePlainAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	plain := 0
	for round := 0; round < 300; round++ {
		b, err := randomTree(rng, rng.IntN(12)).Encode()
		if err != nil {
			t.Fatal(err)
		}
		if agree(t, b) {
			plain++
		}
		for m := 0; m < 20 && len(b) > 0; m++ {
			agree(t, mangle(rng, b))
		}
	}
	if plain < 30 {
		t.Fatalf("the plain decoder read only %d of 300 encoded trees", plain)
	}
	// Trees of ordinary names are always plain.
	tr := sampleTree()
	tr.Nodes[2].Name, tr.Nodes[2].LinkTarget = "link", "target"
	b, _ := tr.Encode()
	if _, err := decodePlain(b); err != nil {
		t.Fatalf("the plain decoder refused an ordinary tree: %v", err)
	}
}

// mangle returns a copy of b (not empty) with a byte flipped, dropped or
// inserted, or cut short.
func mangle(rng *rand.Rand, b []byte) []byte {
	c := append([]byte(nil), b...)
	k := rng.IntN(len(c))
	switch rng.IntN(4) {
	case 0:
		c[k] ^= byte(1 << rng.IntN(8))
	case 1:
		c = append(c[:k], c[k+1:]...)
	case 2:
		const ins = "{}[],:\"0-e\\ "
		c = append(c[:k], append([]byte{ins[rng.IntN(len(ins))]}, c[k:]...)...)
	case 3:
		c = c[:k]
	}
	return c
}

// agree fails the test if decodePlain reads b differently from the general
// decoder; it reports whether decodePlain read it.
func agree(t *testing.T, b []byte) bool {
	t.Helper()
	p, perr := decodePlain(b)
	if perr != nil {
		return false
	}
	g, gerr := decodeGeneral(b)
	if gerr != nil {
		t.Fatalf("plain decoder read %q, the general one refused it: %v", b, gerr)
	}
	if len(p.Nodes) != len(g.Nodes) {
		t.Fatalf("%q: %d nodes, the general decoder has %d", b, len(p.Nodes), len(g.Nodes))
	}
	for i := range p.Nodes {
		if !reflect.DeepEqual(p.Nodes[i], g.Nodes[i]) {
			t.Fatalf("%q: node %d:\nplain   %#v\ngeneral %#v", b, i, p.Nodes[i], g.Nodes[i])
		}
	}
	return true
}

// addSeeds adds the encodings of random trees of 0 to 7 nodes to a fuzz
// test's corpus.
func addSeeds(f *testing.F, seed1, seed2 uint64) {
	rng := rand.New(rand.NewPCG(seed1, seed2))
	for i := 0; i < 8; i++ {
		b, _ := randomTree(rng, i).Encode()
		f.Add(b)
	}
}

func FuzzDecodePlain(f *testing.F) {
	addSeeds(f, 3, 4)
	f.Fuzz(func(t *testing.T, b []byte) { agree(t, b) })
}

func BenchmarkDecode(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	tr := randomTree(rng, 100)
	for i, n := range tr.Nodes { // ordinary names and numbers, as most trees have
		n.Name, n.LinkTarget, n.User, n.Group = fmt.Sprintf("file-%03d.go", i), "target", "ann", "users"
		n.Xattrs = nil
		n.Mode, n.UID, n.GID, n.Links = 0o644, 1000, 100, 1
		n.Size, n.Blocks, n.Inode, n.DeviceID, n.Rdev = rng.Uint64N(1<<20), rng.Uint64N(1<<11), rng.Uint64N(1<<24), 2049, 0
		n.ModTime = time.Unix(1700000000+rng.Int64N(1<<24), rng.Int64N(1e9))
		n.AccessTime, n.ChangeTime = n.ModTime, n.ModTime
	}
	enc, _ := tr.Encode()
	for _, bc := range []struct {
		name string
		fn   func([]byte) (*Tree, error)
	}{{"plain", decodePlain}, {"general", decodeGeneral}, {"compact", func(b []byte) (*Tree, error) {
		_, err := DecodeCompact(b)
		return nil, err
	}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for i := 0; i < b.N; i++ {
				if _, err := bc.fn(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
