package tree

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"
	"time"

	"dj/repo/crypto"
)

func sampleTree() *Tree {
	sub := crypto.ID{1, 2, 3}
	return &Tree{Nodes: []*Node{
		{Name: "z-file", Type: File, Mode: 0o4755, UID: 1000, GID: 100, User: "ann", Group: "users",
			ModTime: time.Unix(1700000000, 123456789), AccessTime: time.Unix(1700000001, 1), ChangeTime: time.Unix(1700000002, 999999999),
			Size: 12345, Blocks: 8, Links: 2, Inode: 42, DeviceID: 7, Content: []crypto.ID{{9}, {8}},
			Xattrs: []Xattr{{Name: "user.a", Value: []byte{0, 1, 2}}, {Name: "user.\xff", Value: nil}}},
		{Name: "a-dir", Type: Dir, Mode: os.ModeDir | 0o750, Subtree: &sub},
		{Name: "bad\xff\xfename", Type: Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "target\xfe"},
		{Name: "dev", Type: CharDev, Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Rdev: 259},
	}}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	tr := sampleTree()
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleTree()
	want.Sort()
	want.Nodes[3].Xattrs[1].Value = []byte{} // nil values come back empty
	for i := range want.Nodes {
		if !reflect.DeepEqual(got.Nodes[i], want.Nodes[i]) {
			t.Fatalf("node %d:\n got %+v\nwant %+v", i, got.Nodes[i], want.Nodes[i])
		}
	}
}

func TestEncodingIsDeterministic(t *testing.T) {
	a, _ := sampleTree().Encode()
	tr := sampleTree()
	tr.Nodes[0], tr.Nodes[2] = tr.Nodes[2], tr.Nodes[0]
	b, _ := tr.Encode()
	if !bytes.Equal(a, b) {
		t.Fatal("equal trees encode differently")
	}
}

func TestDecodeRejectsHostileTrees(t *testing.T) {
	sub := crypto.ID{1}
	cases := map[string][]*Node{
		"dotdot":     {{Name: "..", Type: File}},
		"dot":        {{Name: ".", Type: File}},
		"empty":      {{Name: "", Type: File}},
		"slash":      {{Name: "a/b", Type: File}},
		"nul":        {{Name: "a\x00", Type: File}},
		"duplicate":  {{Name: "a", Type: File}, {Name: "a", Type: File}},
		"unsorted":   {{Name: "b", Type: File}, {Name: "a", Type: File}},
		"dir no sub": {{Name: "d", Type: Dir}},
		"file sub":   {{Name: "f", Type: File, Subtree: &sub}},
		"bad type":   {{Name: "x", Type: "weird"}},
	}
	for name, nodes := range cases {
		raw, err := encodeUnsorted(nodes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(raw); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Decode([]byte(`{"nodes":[null]}`)); err == nil {
		t.Error("null node accepted")
	}
	if _, err := Decode([]byte(`{"nodes":`)); err == nil {
		t.Error("truncated tree accepted")
	}
	if err := ValidName("a/b"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("ValidName: %v", err)
	}
}

// encodeUnsorted encodes nodes in the given order (Encode would sort them).
func encodeUnsorted(nodes []*Node) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"nodes":[`)
	for i, n := range nodes {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := n.MarshalJSON()
		if err != nil {
			return nil, err
		}
		buf.Write(b)
	}
	buf.WriteString(`]}`)
	return buf.Bytes(), nil
}

func TestFindAndSparse(t *testing.T) {
	tr := sampleTree()
	tr.Sort()
	if n := tr.Find("dev"); n == nil || n.Rdev != 259 {
		t.Fatal("Find")
	}
	if tr.Find("nope") != nil {
		t.Fatal("found a missing name")
	}
	if !(&Node{Type: File, Size: 1 << 20, Blocks: 8}).IsSparse() || (&Node{Type: File, Size: 4096, Blocks: 8}).IsSparse() {
		t.Fatal("IsSparse")
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := sampleTree().Encode()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Decode(b)
		// Check agrees with Decode on every input.
		if n, cerr := Check(b); (cerr == nil) != (err == nil) || (err == nil && n != len(tr.Nodes)) {
			t.Fatalf("Check: %d nodes, %v; Decode: %v", n, cerr, err)
		}
		if err != nil {
			return
		}
		for _, n := range tr.Nodes {
			if ValidName(n.Name) != nil {
				t.Fatalf("decoded an invalid name %q", n.Name)
			}
		}
	})
}

func TestLinkKey(t *testing.T) {
	a := &Node{Name: "a", Type: File, Size: 3, Links: 2, Inode: 7, DeviceID: 1, Content: []crypto.ID{{1}}}
	b := *a
	b.Name, b.ModTime = "b", time.Unix(5, 0)
	if a.LinkKey() != b.LinkKey() {
		t.Error("two links to one inode have different keys")
	}
	for name, change := range map[string]func(n *Node){
		"content": func(n *Node) { n.Content = []crypto.ID{{2}} },
		"more":    func(n *Node) { n.Content = append(n.Content, crypto.ID{1}) },
		"size":    func(n *Node) { n.Size++ },
		"target":  func(n *Node) { n.LinkTarget = "x" },
		"rdev":    func(n *Node) { n.Rdev = 1 },
		"inode":   func(n *Node) { n.Inode++ },
	} {
		c := *a
		c.Content = append([]crypto.ID(nil), a.Content...)
		change(&c)
		if a.LinkKey() == c.LinkKey() {
			t.Errorf("%s: nodes with different %s have the same key", name, name)
		}
	}
	cp, err := NewCompact(&Tree{Nodes: []*Node{a}})
	if err != nil {
		t.Fatal(err)
	}
	if cp.LinkData(0) != a.LinkData() {
		t.Error("Compact.LinkData differs from Node.LinkData")
	}
}

// TestEncoderAgrees: the node-by-node Encoder writes the bytes of the whole
// tree encoded at once (as Encode did before it used the Encoder): tree ids
// depend on them.
func TestEncoderAgrees(t *testing.T) {
	whole := func(tr *Tree) []byte {
		w := jsonTree{Nodes: make([]jsonNode, 0, len(tr.Nodes))}
		for _, n := range tr.Nodes {
			w.Nodes = append(w.Nodes, n.wire())
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(w); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	rng := rand.New(rand.NewPCG(5, 6))
	trees := []*Tree{{}, sampleTree(), {Nodes: []*Node{{Name: "<a&b>\xff", Type: File}}}}
	for i := range 50 {
		trees = append(trees, randomTree(rng, i))
	}
	for i, tr := range trees {
		tr.Sort()
		got, err := tr.Encode()
		if err != nil {
			t.Fatalf("tree %d: %v", i, err)
		}
		if want := whole(tr); !bytes.Equal(got, want) {
			t.Fatalf("tree %d: Encode wrote\n%s\nwant\n%s", i, got, want)
		}
	}
	dup := &Tree{Nodes: []*Node{{Name: "a", Type: File}, {Name: "a", Type: File}}}
	if _, err := dup.Encode(); err == nil {
		t.Error("a tree with a name twice encoded")
	}
	e := NewEncoder()
	if err := e.Add(&Node{Name: "b", Type: File}); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(&Node{Name: "a", Type: File}); err == nil {
		t.Error("nodes out of order encoded")
	}
}

// TestCheck: Check counts the nodes of a tree Decode accepts, and refuses
// what Decode refuses, in both decoders' JSON.
func TestCheck(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 40 {
		tr := randomTree(rng, i)
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if n, err := Check(b); err != nil || n != len(tr.Nodes) {
			t.Fatalf("tree %d: Check %d, %v; want %d nodes", i, n, err, len(tr.Nodes))
		}
	}
	for _, in := range []string{
		`{"nodes":[{"name":"b","type":"file"},{"name":"a","type":"file"}]}`,
		`{"nodes":[{"name":"a","type":"file"},{"name":"a","type":"file"}]}`,
		`{"nodes":[{"name":"..","type":"file"}]}`,
		`{"nodes":[{"name":"d","type":"dir"}]}`,
		`{"nodes":[{"name":"\u0061","type":"file"},{"name":"a","type":"file"}]}`, // the general decoder's
		`{"nodes":null}`,
		`{"nodes":[{"name":"\u0061","type":"file"}]}`,
		`{"nodes":[]}`,
		`{"nodes":[`,
	} {
		tr, derr := Decode([]byte(in))
		n, cerr := Check([]byte(in))
		if (derr == nil) != (cerr == nil) || (derr == nil && n != len(tr.Nodes)) {
			t.Errorf("%s: Check %d, %v; Decode %v", in, n, cerr, derr)
		}
	}
}
