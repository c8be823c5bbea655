package tree

import (
	"bytes"
	"errors"
	"os"

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
