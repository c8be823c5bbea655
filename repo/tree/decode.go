package tree

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"math/bits"
	"os"
	"unicode/utf8"

	"dj/repo/crypto"
)

// errNotPlain means a tree's JSON uses something the plain decoder leaves to
// the general one: escapes, null, unknown keys, numbers with a fraction or
// exponent, invalid UTF-8. Encode never writes these for ordinary names.
var errNotPlain = errors.New("tree JSON is not plain")

// errNoXattrName stops the plain decoder at an extended attribute without
// a name, which checkNode refuses.
var errNoXattrName = errors.New("decode tree: an extended attribute without a name")

// decodePlain parses the JSON that Encode writes, and only that, without
// reflection and with few allocations: one array of nodes, one slice of
// ids per file, one string per name. Walks (a mount's find,
// check, diff, restore) decode thousands of trees, and the general decoder
// spent most of their time allocating. Anything it does not expect gives
// errNotPlain, and Decode hands the tree to the general decoder, so the two
// agree on every input (TestDecodePlainAgrees, FuzzDecode).
func decodePlain(b []byte) (*Tree, error) {
	d := plainDecoder{b: b}
	nodes, err := d.tree()
	if err != nil {
		return nil, err
	}
	if nodes == nil {
		nodes = []*Node{} // as before: an empty tree's Nodes is not nil
	}
	return &Tree{Nodes: nodes}, nil
}

type plainDecoder struct {
	b   []byte
	pos int
	ids []crypto.ID // scratch for the content ids of a file

	// A decoder of a stream (DecodeCompactReader) holds a window of it
	// in b, and reads on between nodes (never within one: a node's
	// fields point into b until it is made).
	src     io.Reader // the stream, or nil when b is the whole tree
	window  int       // the size b is filled to
	eof     bool      // src is at its end
	readErr error     // what src's Read failed with
	inNode  bool      // a node is being decoded

	// shareIDs: a node's Content is the decoder's scratch, valid until
	// the next node (the compact builder copies it at once).
	shareIDs bool
	owners   [2]string // the last two owner names made, reused
}

func (d *plainDecoder) space() {
	for {
		b, i := d.b, d.pos
		for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
			i++
		}
		d.pos = i
		if i < len(b) || !d.more() {
			return
		}
		d.fill()
	}
}

// next skips space and returns the next byte without consuming it.
func (d *plainDecoder) next() byte {
	if d.pos < len(d.b) && d.b[d.pos] > ' ' { // compact JSON: no space
		return d.b[d.pos]
	}
	d.space()
	if d.pos >= len(d.b) {
		return 0
	}
	return d.b[d.pos]
}

// key returns the bytes of an object key up to its closing quote. Keys
// with escapes match no known key, so they need no unescaping here.
func (d *plainDecoder) key() ([]byte, error) {
	if err := d.expect('"'); err != nil {
		return nil, err
	}
	b, i := d.b, d.pos
	for i < len(b) && b[i] != '"' {
		i++
	}
	if i == len(b) {
		return nil, errNotPlain
	}
	k := b[d.pos:i]
	d.pos = i + 1
	return k, nil
}

func (d *plainDecoder) expect(c byte) error {
	if d.next() != c {
		return errNotPlain
	}
	d.pos++
	return nil
}

// str returns the bytes of a string without escapes, checked to be UTF-8.
func (d *plainDecoder) str() ([]byte, error) {
	if err := d.expect('"'); err != nil {
		return nil, err
	}
	b, i := d.b, d.pos
	start := i
	ascii := true
	for ; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			break
		}
		if c < 0x20 || c == '\\' {
			return nil, errNotPlain
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if i == len(b) {
		return nil, errNotPlain
	}
	s := b[start:i]
	d.pos = i + 1
	if !ascii && !utf8.Valid(s) {
		return nil, errNotPlain
	}
	return s, nil
}

// uint parses an unsigned integer of at most size bits.
func (d *plainDecoder) uint(size uint) (uint64, error) {
	d.space()
	b, i := d.b, d.pos
	start := i
	var v uint64
	for ; i < len(b); i++ {
		c := b[i] - '0'
		if c > 9 {
			break
		}
		if i-start < 19 { // up to 19 digits cannot overflow
			v = v*10 + uint64(c)
		}
	}
	n := i - start
	if n == 0 || n > 20 || n > 1 && b[start] == '0' {
		return 0, errNotPlain
	}
	if n == 20 {
		hi, lo := bits.Mul64(v, 10)
		lo, carry := bits.Add64(lo, uint64(b[start+19]-'0'), 0)
		if hi != 0 || carry != 0 {
			return 0, errNotPlain
		}
		v = lo
	}
	if size < 64 && v>>size != 0 {
		return 0, errNotPlain
	}
	if i < len(b) {
		switch b[i] {
		case '.', 'e', 'E':
			return 0, errNotPlain
		}
	}
	d.pos = i
	return v, nil
}

func (d *plainDecoder) int64() (int64, error) {
	neg := d.next() == '-'
	if neg {
		d.pos++
		if d.pos < len(d.b) && (d.b[d.pos] < '0' || d.b[d.pos] > '9') {
			return 0, errNotPlain // "- 1"
		}
	}
	v, err := d.uint(64)
	if err != nil {
		return 0, err
	}
	if neg {
		if v > 1<<63 {
			return 0, errNotPlain
		}
		return -int64(v), nil
	}
	if v > 1<<63-1 {
		return 0, errNotPlain
	}
	return int64(v), nil
}

func (d *plainDecoder) id() (crypto.ID, error) {
	var id crypto.ID
	s, err := d.str()
	if err != nil {
		return id, err
	}
	if len(s) != 2*crypto.IDSize {
		return id, errNotPlain
	}
	if _, err := hex.Decode(id[:], s); err != nil {
		return id, errNotPlain
	}
	return id, nil
}

func (d *plainDecoder) bytes() ([]byte, error) {
	s, err := d.str()
	if err != nil {
		return nil, err
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		return nil, errNotPlain
	}
	return out[:n], nil
}

// list calls item for each element of the array or object that open and
// close delimit; item consumes the element.
func (d *plainDecoder) list(open, close byte, item func() error) error {
	if err := d.expect(open); err != nil {
		return err
	}
	if d.next() == close {
		d.pos++
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		switch d.next() {
		case ',':
			d.pos++
		case close:
			d.pos++
			return nil
		default:
			return errNotPlain
		}
	}
}

// object calls field for each key of an object; field consumes the value.
func (d *plainDecoder) object(field func(key []byte) error) error {
	return d.list('{', '}', func() error {
		key, err := d.key()
		if err != nil {
			return err
		}
		if err := d.expect(':'); err != nil {
			return err
		}
		return field(key)
	})
}

// array calls elem for each element of an array; elem consumes it.
func (d *plainDecoder) array(elem func() error) error {
	return d.list('[', ']', elem)
}

func (d *plainDecoder) tree() ([]*Node, error) {
	// The nodes live in blocks that are never copied: one slice grown by
	// doubling allocated twice a big tree's nodes, and held one and a half
	// times them at its peak (a directory of a million files).
	var nodes []*Node
	var block []Node
	err := d.top(func() {
		est := nodesEstimate(d.b)
		nodes, block = make([]*Node, 0, est), make([]Node, 0, est)
	}, func() error {
		if len(block) == cap(block) {
			block = make([]Node, 0, min(max(2*cap(block), 64), maxNodesEstimate))
		}
		block = append(block, Node{})
		n := &block[len(block)-1]
		if err := d.node(n); err != nil {
			return err
		}
		// Checked as it comes, so that a hostile array of empty
		// objects stops at its first.
		prev := ""
		if len(nodes) > 0 {
			prev = nodes[len(nodes)-1].Name
		}
		nodes = append(nodes, n)
		return CheckNode(n, len(nodes) > 1, prev)
	})
	if err != nil {
		return nil, err
	}
	return nodes[:len(nodes):len(nodes)], nil
}

// maxNodesEstimate bounds the nodes allocated before any is read; larger
// trees grow as they are read.
const maxNodesEstimate = 1 << 14

// nodesEstimate returns the number of nodes to allocate for the tree b
// before reading it: the number of its objects (each node is one; so is
// each xattr, and a name may hold a brace, but few do), but no more than
// maxNodesEstimate. The tree comes from storage and may be hostile: a blob
// of a few KiB that decompresses to megabytes of braces must not ask for
// gigabytes.
func nodesEstimate(b []byte) int {
	return min(bytes.Count(b, []byte{'{'}), maxNodesEstimate)
}

// top parses the whole tree, {"nodes": [...]}: it calls start once the
// array begins and elem for each element, which elem consumes.
func (d *plainDecoder) top(start func(), elem func() error) error {
	seen := false
	err := d.object(func(key []byte) error {
		if string(key) != "nodes" || seen {
			return errNotPlain
		}
		seen = true
		start()
		return d.array(elem)
	})
	if err != nil {
		return err
	}
	d.space()
	if d.pos != len(d.b) || !seen {
		return errNotPlain
	}
	return nil
}

// node decodes one node. Each key may appear once; name and name_raw (and
// linktarget and linktarget_raw) combine as joinString does.
func (d *plainDecoder) node(n *Node) error {
	var (
		seen                uint32
		name, nameRaw       []byte
		target, targetRaw   []byte
		hasNameRaw, hasTRaw bool
	)
	err := d.object(func(key []byte) error {
		k := nodeKey(key)
		if k < 0 || seen&(1<<k) != 0 {
			return errNotPlain
		}
		seen |= 1 << k
		var err error
		var v uint64
		switch k {
		case keyName:
			name, err = d.str()
		case keyNameRaw:
			nameRaw, err = d.bytes()
			hasNameRaw = true
		case keyType:
			var s []byte
			s, err = d.str()
			n.Type = nodeType(s)
		case keyMode:
			v, err = d.uint(32)
			n.Mode = os.FileMode(v)
		case keyUID:
			v, err = d.uint(32)
			n.UID = uint32(v)
		case keyGID:
			v, err = d.uint(32)
			n.GID = uint32(v)
		case keyUser:
			var s []byte
			s, err = d.str()
			n.User = d.owner(s)
		case keyGroup:
			var s []byte
			s, err = d.str()
			n.Group = d.owner(s)
		case keyMtime, keyAtime, keyCtime:
			var ns int64
			ns, err = d.int64()
			t := nsTime(ns)
			switch k {
			case keyMtime:
				n.ModTime = t
			case keyAtime:
				n.AccessTime = t
			default:
				n.ChangeTime = t
			}
		case keySize:
			n.Size, err = d.uint(64)
		case keyBlocks:
			n.Blocks, err = d.uint(64)
		case keyLinks:
			n.Links, err = d.uint(64)
		case keyInode:
			n.Inode, err = d.uint(64)
		case keyDeviceID:
			n.DeviceID, err = d.uint(64)
		case keyRdev:
			n.Rdev, err = d.uint(64)
		case keyLinkTarget:
			target, err = d.str()
		case keyLinkTargetRaw:
			targetRaw, err = d.bytes()
			hasTRaw = true
		case keyXattrs:
			err = d.array(func() error {
				x, err := d.xattr()
				if err == nil && x.Name == "" {
					// checkNode refuses it; stop before a
					// hostile list of {} grows.
					return errNoXattrName
				}
				n.Xattrs = append(n.Xattrs, x)
				return err
			})
		case keyContent:
			d.ids = d.ids[:0]
			err = d.array(func() error {
				id, err := d.id()
				d.ids = append(d.ids, id)
				return err
			})
			if d.shareIDs {
				n.Content = d.ids[:len(d.ids):len(d.ids)]
			} else {
				n.Content = append(make([]crypto.ID, 0, len(d.ids)), d.ids...)
			}
		case keySubtree:
			var id crypto.ID
			id, err = d.id()
			n.Subtree = &id
		case keyFixedChunk:
			n.FixedChunk, err = d.uint(64)
		}
		return err
	})
	if err != nil {
		return err
	}
	if hasNameRaw {
		n.Name = string(joinStringBytes(name, nameRaw))
	} else {
		n.Name = string(name)
	}
	if hasTRaw {
		n.LinkTarget = string(joinStringBytes(target, targetRaw))
	} else {
		n.LinkTarget = string(target)
	}
	return nil
}

// joinStringBytes is joinString for a decoded raw field, which the general
// decoder gives as a non-nil slice even when empty.
func joinStringBytes(s, raw []byte) []byte {
	if raw != nil {
		return raw
	}
	return s
}

func (d *plainDecoder) xattr() (Xattr, error) {
	var (
		x                   Xattr
		name, nameRaw       []byte
		hasName, hasRaw, hv bool
	)
	err := d.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "name":
			if hasName {
				return errNotPlain
			}
			hasName = true
			name, err = d.str()
		case "name_raw":
			if hasRaw {
				return errNotPlain
			}
			hasRaw = true
			nameRaw, err = d.bytes()
		case "value":
			if hv {
				return errNotPlain
			}
			hv = true
			x.Value, err = d.bytes()
		default:
			return errNotPlain
		}
		return err
	})
	if hasRaw {
		x.Name = string(joinStringBytes(name, nameRaw))
	} else {
		x.Name = string(name)
	}
	return x, err
}

// The keys of a node, as bit positions.
const (
	keyName = iota
	keyNameRaw
	keyType
	keyMode
	keyUID
	keyGID
	keyUser
	keyGroup
	keyMtime
	keyAtime
	keyCtime
	keySize
	keyBlocks
	keyLinks
	keyInode
	keyDeviceID
	keyRdev
	keyLinkTarget
	keyLinkTargetRaw
	keyXattrs
	keyContent
	keySubtree
	keyFixedChunk
)

// nodeKey returns the bit position of a node's key, or -1.
func nodeKey(key []byte) int {
	switch string(key) {
	case "name":
		return keyName
	case "name_raw":
		return keyNameRaw
	case "type":
		return keyType
	case "mode":
		return keyMode
	case "uid":
		return keyUID
	case "gid":
		return keyGID
	case "user":
		return keyUser
	case "group":
		return keyGroup
	case "mtime":
		return keyMtime
	case "atime":
		return keyAtime
	case "ctime":
		return keyCtime
	case "size":
		return keySize
	case "blocks":
		return keyBlocks
	case "links":
		return keyLinks
	case "inode":
		return keyInode
	case "device_id":
		return keyDeviceID
	case "rdev":
		return keyRdev
	case "linktarget":
		return keyLinkTarget
	case "linktarget_raw":
		return keyLinkTargetRaw
	case "xattrs":
		return keyXattrs
	case "content":
		return keyContent
	case "subtree":
		return keySubtree
	case "fixed_chunk":
		return keyFixedChunk
	}
	return -1
}
