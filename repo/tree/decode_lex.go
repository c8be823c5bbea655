package tree

// The plain decoder's reading of JSON tokens: white space, keys, strings,
// numbers, ids, base64 bytes, objects and arrays. decode.go builds trees
// and nodes out of them.

import (
	"encoding/base64"
	"encoding/hex"
	"io"
	"math/bits"
	"unicode/utf8"

	"dj/repo/crypto"
)

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
