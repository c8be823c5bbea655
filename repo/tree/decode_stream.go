package tree

// The plain decoder's stream mode (DecodeCompactReader): a window on the
// stream, refilled between nodes, and what the compact builder lets the
// decoder reuse from node to node.

import "io"

// nodeType returns the type named s, without a copy for the known ones.
func nodeType(s []byte) NodeType {
	for _, t := range compactTypes {
		if string(t) == string(s) {
			return t
		}
	}
	return NodeType(s)
}

// owner returns s as a string, the same string as the last time or the
// time before (a directory's files mostly share their user and group).
func (d *plainDecoder) owner(s []byte) string {
	for _, o := range d.owners {
		if o == string(s) {
			return o
		}
	}
	o := string(s)
	d.owners[1], d.owners[0] = d.owners[0], o
	return o
}

// fill moves what is left of the window to its start and reads src until
// the window is full or src at its end.
func (d *plainDecoder) fill() {
	rest := d.b[d.pos:]
	if cap(d.b) < d.window {
		nb := make([]byte, len(rest), d.window)
		copy(nb, rest)
		d.b = nb
	} else {
		d.b = d.b[:copy(d.b[:cap(d.b)], rest)]
	}
	d.pos = 0
	for len(d.b) < cap(d.b) && !d.eof {
		n, err := d.src.Read(d.b[len(d.b):cap(d.b)])
		d.b = d.b[:len(d.b)+n]
		if err == io.EOF {
			d.eof = true
		} else if err != nil {
			d.eof, d.readErr = true, err
		}
	}
}

// more reports whether the window could take more of the stream now.
func (d *plainDecoder) more() bool {
	return d.src != nil && !d.eof && !d.inNode
}

// nextNode decodes the next node into n. Reading a stream, it first makes
// sure a quarter of the window lies ahead, and a node that does not fit in
// what is read is decoded again in a window twice as large.
func (d *plainDecoder) nextNode(n *Node) error {
	if d.src == nil {
		*n = Node{}
		return d.node(n)
	}
	for {
		if !d.eof && len(d.b)-d.pos < d.window/4 {
			d.fill()
		}
		start := d.pos
		*n = Node{}
		d.inNode = true
		err := d.node(n)
		d.inNode = false
		if err == nil || d.eof {
			return err
		}
		d.pos = start
		d.window *= 2
		d.fill()
	}
}
