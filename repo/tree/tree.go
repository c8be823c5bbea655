// Package tree defines the directory listing stored in a tree blob: a sorted
// list of nodes, each a file, directory, symlink or special file with all of
// its metadata. The encoding is deterministic JSON, so equal directories
// produce equal tree blobs and deduplicate.
package tree

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	fastjson "github.com/goccy/go-json"

	"dj/repo/crypto"
)

// NodeType is the kind of a node.
type NodeType string

// The node types.
const (
	File      NodeType = "file"
	Dir       NodeType = "dir"
	Symlink   NodeType = "symlink"
	Dev       NodeType = "dev" // block device
	CharDev   NodeType = "chardev"
	FIFO      NodeType = "fifo"
	Socket    NodeType = "socket"
	Irregular NodeType = "irregular"
)

// Xattr is one extended attribute. Names and values are raw bytes.
type Xattr struct {
	Name  string
	Value []byte
}

// Node is one directory entry with its metadata.
//
// Name and LinkTarget hold raw bytes and need not be valid UTF-8; the JSON
// encoding keeps such values exactly (see MarshalJSON).
type Node struct {
	Name       string
	Type       NodeType
	Mode       os.FileMode // permission, setuid/setgid/sticky and type bits, as Go reports them
	UID, GID   uint32
	User       string
	Group      string
	ModTime    time.Time
	AccessTime time.Time
	ChangeTime time.Time
	Size       uint64 // file size in bytes
	Blocks     uint64 // allocated 512-byte blocks (st_blocks); less than Size/512 for sparse files
	Links      uint64 // hard link count
	Inode      uint64
	DeviceID   uint64 // st_dev of the file system the node lived on
	Rdev       uint64 // device number of a device node
	LinkTarget string
	Xattrs     []Xattr
	Content    []crypto.ID // data blobs of a file, in order
	Subtree    *crypto.ID  // tree blob of a directory
	// FixedChunk is the size of the fixed chunks a file (a disk image) was
	// cut into, 0 for content-defined chunks: later backups of the file
	// keep its chunker. A multiple of FixedChunkUnit, at most MaxFixedChunk.
	FixedChunk uint64
}

// FixedChunkUnit divides every fixed chunk size, MaxFixedChunk bounds it.
const (
	FixedChunkUnit = 4096
	MaxFixedChunk  = 64 << 20
)

// IsSparse reports whether the file had holes when it was backed up.
func (n *Node) IsSparse() bool {
	return n.Type == File && n.Blocks*512 < n.Size
}

// jsonNode is the wire form of a Node. Strings that are not valid UTF-8 are
// stored base64-encoded in the *_raw fields instead.
type jsonNode struct {
	Name          string      `json:"name,omitempty"`
	NameRaw       []byte      `json:"name_raw,omitempty"`
	Type          NodeType    `json:"type"`
	Mode          os.FileMode `json:"mode"`
	UID           uint32      `json:"uid"`
	GID           uint32      `json:"gid"`
	User          string      `json:"user,omitempty"`
	Group         string      `json:"group,omitempty"`
	ModTime       int64       `json:"mtime"`
	AccessTime    int64       `json:"atime"`
	ChangeTime    int64       `json:"ctime"`
	Size          uint64      `json:"size,omitempty"`
	Blocks        uint64      `json:"blocks,omitempty"`
	Links         uint64      `json:"links,omitempty"`
	Inode         uint64      `json:"inode,omitempty"`
	DeviceID      uint64      `json:"device_id,omitempty"`
	Rdev          uint64      `json:"rdev,omitempty"`
	LinkTarget    string      `json:"linktarget,omitempty"`
	LinkTargetRaw []byte      `json:"linktarget_raw,omitempty"`
	Xattrs        jsonXattrs  `json:"xattrs,omitempty"`
	Content       []crypto.ID `json:"content,omitempty"`
	Subtree       *crypto.ID  `json:"subtree,omitempty"`
	FixedChunk    uint64      `json:"fixed_chunk,omitempty"`
}

type jsonXattr struct {
	Name    string `json:"name,omitempty"`
	NameRaw []byte `json:"name_raw,omitempty"`
	Value   []byte `json:"value"`
}

// jsonXattrs are the extended attributes of a node on the wire.
type jsonXattrs []jsonXattr

// UnmarshalJSON reads the attributes one at a time and stops at the first
// without a name (which checkNode refuses): a general decoder given a
// hostile list of empty objects spent a hundred times its length.
func (xs *jsonXattrs) UnmarshalJSON(b []byte) error {
	dec := fastjson.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		*xs = nil
		return nil
	}
	if d, ok := tok.(fastjson.Delim); !ok || d != '[' {
		return fmt.Errorf("xattrs are %v, not a list", tok)
	}
	var out jsonXattrs
	for dec.More() {
		var x jsonXattr
		if err := dec.Decode(&x); err != nil {
			return err
		}
		if joinString(x.Name, x.NameRaw) == "" {
			return errors.New("an extended attribute without a name")
		}
		out = append(out, x)
	}
	*xs = out
	return generalDelim(dec, ']')
}

func splitString(s string) (string, []byte) {
	if utf8.ValidString(s) {
		return s, nil
	}
	return "", []byte(s)
}

func joinString(s string, raw []byte) string {
	if raw != nil {
		return string(raw)
	}
	return s
}

func timeNS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func nsTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// MarshalJSON encodes the node deterministically. Times are nanoseconds since
// the Unix epoch.
func (n Node) MarshalJSON() ([]byte, error) {
	return json.Marshal(n.wire())
}

// wire returns the node's wire form.
func (n *Node) wire() jsonNode {
	j := jsonNode{
		Type: n.Type, Mode: n.Mode, UID: n.UID, GID: n.GID, User: n.User, Group: n.Group,
		ModTime: timeNS(n.ModTime), AccessTime: timeNS(n.AccessTime), ChangeTime: timeNS(n.ChangeTime),
		Size: n.Size, Blocks: n.Blocks, Links: n.Links, Inode: n.Inode, DeviceID: n.DeviceID, Rdev: n.Rdev,
		Content: n.Content, Subtree: n.Subtree, FixedChunk: n.FixedChunk,
	}
	j.Name, j.NameRaw = splitString(n.Name)
	j.LinkTarget, j.LinkTargetRaw = splitString(n.LinkTarget)
	for _, x := range n.Xattrs {
		jx := jsonXattr{Value: x.Value}
		if jx.Value == nil {
			jx.Value = []byte{}
		}
		jx.Name, jx.NameRaw = splitString(x.Name)
		j.Xattrs = append(j.Xattrs, jx)
	}
	return j
}

// UnmarshalJSON decodes a node written by MarshalJSON.
func (n *Node) UnmarshalJSON(b []byte) error {
	var j jsonNode
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*n = j.node()
	return nil
}

// node converts the wire form back.
func (j *jsonNode) node() Node {
	n := Node{
		Name: joinString(j.Name, j.NameRaw), Type: j.Type, Mode: j.Mode, UID: j.UID, GID: j.GID,
		User: j.User, Group: j.Group,
		ModTime: nsTime(j.ModTime), AccessTime: nsTime(j.AccessTime), ChangeTime: nsTime(j.ChangeTime),
		Size: j.Size, Blocks: j.Blocks, Links: j.Links, Inode: j.Inode, DeviceID: j.DeviceID, Rdev: j.Rdev,
		LinkTarget: joinString(j.LinkTarget, j.LinkTargetRaw), Content: j.Content, Subtree: j.Subtree,
		FixedChunk: j.FixedChunk,
	}
	for _, jx := range j.Xattrs {
		n.Xattrs = append(n.Xattrs, Xattr{Name: joinString(jx.Name, jx.NameRaw), Value: jx.Value})
	}
	return n
}

// jsonTree is the wire form of a tree. Encoding and decoding go through it
// in one pass: per-node MarshalJSON/UnmarshalJSON methods would make
// encoding/json scan every node's bytes again.
type jsonTree struct {
	Nodes []jsonNode `json:"nodes"`
}

// Tree is the content of a directory: nodes sorted by name (byte order).
type Tree struct {
	Nodes []*Node `json:"nodes"`
}

// ErrInvalidName is returned for a node name that must not appear in a tree.
var ErrInvalidName = errors.New("invalid file name in tree")

// ValidName reports whether name may be used as one path element: not empty,
// not "." or "..", and without '/' or NUL.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return nil
}

// Sort orders the nodes by name.
func (t *Tree) Sort() {
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
}

// Find returns the node with the given name, or nil.
func (t *Tree) Find(name string) *Node {
	i := sort.Search(len(t.Nodes), func(i int) bool { return t.Nodes[i].Name >= name })
	if i < len(t.Nodes) && t.Nodes[i].Name == name {
		return t.Nodes[i]
	}
	return nil
}

// Encode returns the deterministic JSON encoding of the tree, sorting it first.
func (t *Tree) Encode() ([]byte, error) {
	t.Sort()
	e := NewEncoder()
	for _, n := range t.Nodes {
		if n == nil {
			return nil, errors.New("encode tree: nil node")
		}
		if err := e.Add(n); err != nil {
			return nil, err
		}
	}
	return e.Finish(), nil
}

// Encoder writes the encoding of a tree node by node, as Encode does,
// holding only the bytes written: a tree of a million nodes need not be in
// memory to be encoded (dj copy rewrites one that way).
type Encoder struct {
	buf  bytes.Buffer
	enc  *json.Encoder
	n    int
	prev string
}

// NewEncoder returns an Encoder of an empty tree.
func NewEncoder() *Encoder {
	e := &Encoder{}
	e.buf.WriteString(`{"nodes":[`)
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}

// Add appends a node; nodes must come sorted by name, each name once.
func (e *Encoder) Add(n *Node) error {
	if e.n > 0 && n.Name <= e.prev {
		return fmt.Errorf("encode tree: %q after %q: nodes not sorted or duplicated", n.Name, e.prev)
	}
	if e.n > 0 {
		e.buf.WriteByte(',')
	}
	if err := e.enc.Encode(n.wire()); err != nil {
		return fmt.Errorf("encode tree: %q: %w", n.Name, err)
	}
	e.buf.Truncate(e.buf.Len() - 1) // json.Encoder ends each value with a newline
	e.n++
	e.prev = n.Name
	return nil
}

// Finish returns the encoding of the nodes added. The Encoder must not be
// used afterwards.
func (e *Encoder) Finish() []byte {
	e.buf.WriteString("]}\n")
	return e.buf.Bytes()
}

// Decode parses a tree and checks it: names valid and unique, sorted, and
// each node carrying only what its type allows. Trees come from storage and
// are treated as hostile: each node is checked as it is read, and memory
// grows with the valid nodes read, never with a length the input claims.
func Decode(b []byte) (*Tree, error) {
	t, err := decodePlain(b)
	if errors.Is(err, errNotPlain) {
		t, err = decodeGeneral(b)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// decodeGeneral parses a tree with a general JSON decoder, one node at a
// time, and checks each node as it is read (see Decode). The object's only
// key is "nodes" (in any case, as encoding/json matches keys); its value
// is null or an array of nodes.
func decodeGeneral(b []byte) (*Tree, error) {
	dec := fastjson.NewDecoder(bytes.NewReader(b))
	if err := generalDelim(dec, '{'); err != nil {
		return nil, err
	}
	t := &Tree{Nodes: []*Node{}}
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("decode tree: %w", err)
		}
		key, _ := tok.(string)
		if !strings.EqualFold(key, "nodes") {
			var skip fastjson.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, fmt.Errorf("decode tree: %w", err)
			}
			continue
		}
		if seen {
			return nil, errors.New("decode tree: two lists of nodes")
		}
		seen = true
		if t.Nodes, err = generalNodes(dec, nodesEstimate(b)); err != nil {
			return nil, err
		}
	}
	if err := generalDelim(dec, '}'); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decode tree: data after the tree")
	}
	return t, nil
}

// generalNodes reads the value of "nodes": null, or an array of nodes, each
// checked as it is read.
func generalNodes(dec *fastjson.Decoder, estimate int) ([]*Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("decode tree: %w", err)
	}
	if tok == nil {
		return []*Node{}, nil
	}
	if d, ok := tok.(fastjson.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("decode tree: nodes are %v, not a list", tok)
	}
	nodes := make([]*Node, 0, estimate)
	for dec.More() {
		var jn *jsonNode
		if err := dec.Decode(&jn); err != nil {
			return nil, fmt.Errorf("decode tree: %w", err)
		}
		if jn == nil {
			return nil, errors.New("decode tree: null node")
		}
		n := jn.node()
		prev := ""
		if len(nodes) > 0 {
			prev = nodes[len(nodes)-1].Name
		}
		if err := CheckNode(&n, len(nodes) > 0, prev); err != nil {
			return nil, err
		}
		nodes = append(nodes, &n)
	}
	return nodes, generalDelim(dec, ']')
}

// generalDelim reads the delimiter want.
func generalDelim(dec *fastjson.Decoder, want fastjson.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("decode tree: %w", err)
	}
	if d, ok := tok.(fastjson.Delim); !ok || d != want {
		return fmt.Errorf("decode tree: want %v, found %v", want, tok)
	}
	return nil
}

// CheckNode validates one node of a tree, given the name of the node
// before it (when there is one): every decoder of this package checks each
// node with it, and readers of trees from loaders that may not decode
// through this package (maint's diff) check with it too.
func CheckNode(n *Node, hasPrev bool, prev string) error {
	if err := ValidName(n.Name); err != nil {
		return fmt.Errorf("decode tree: %w", err)
	}
	if hasPrev && prev >= n.Name {
		return fmt.Errorf("decode tree: nodes not sorted or duplicated at %q", n.Name)
	}
	for _, x := range n.Xattrs {
		if x.Name == "" {
			return fmt.Errorf("decode tree: %q has an extended attribute without a name", n.Name)
		}
	}
	if n.FixedChunk != 0 && (n.Type != File || n.FixedChunk%FixedChunkUnit != 0 || n.FixedChunk > MaxFixedChunk) {
		return fmt.Errorf("decode tree: %s %q has fixed chunks of %d bytes", n.Type, n.Name, n.FixedChunk)
	}
	switch n.Type {
	case Dir:
		if n.Subtree == nil {
			return fmt.Errorf("decode tree: directory %q has no subtree", n.Name)
		}
	case File, Symlink, Dev, CharDev, FIFO, Socket, Irregular:
		if n.Subtree != nil {
			return fmt.Errorf("decode tree: %s %q has a subtree", n.Type, n.Name)
		}
	default:
		return fmt.Errorf("decode tree: node %q has unknown type %q", n.Name, n.Type)
	}
	return nil
}
