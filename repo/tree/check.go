package tree

import "errors"

// Check decodes and checks the tree b as Decode does, holding one node at
// a time, and returns how many nodes it has: the read-back test of a tree
// about to be written, in a few KiB whatever its size. JSON the plain
// decoder leaves to the general one is decoded whole, as Decode does.
func Check(b []byte) (int, error) {
	d := plainDecoder{b: b}
	var n Node
	var prev string
	count := 0
	err := d.top(func() {}, func() error {
		n = Node{}
		if err := d.node(&n); err != nil {
			return err
		}
		if err := CheckNode(&n, count > 0, prev); err != nil {
			return err
		}
		prev = n.Name
		count++
		return nil
	})
	if errors.Is(err, errNotPlain) {
		t, err := decodeGeneral(b)
		if err != nil {
			return 0, err
		}
		return len(t.Nodes), nil
	}
	if err != nil {
		return 0, err
	}
	return count, nil
}
