// The packs that check --read-data-subset reads.

package maint

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"

	"dj/repo/crypto"
)

// Subset selects the packs that --read-data-subset reads: packs whose id's
// first byte modulo M is N-1 ("n/m"), a random share of the packs ("x%"), or
// random data packs until at least a total size is reached ("5G"; as in
// restic, the size is a lower bound: a subset of 10M reads at least one data
// pack whatever its size).
type Subset struct {
	N, M     int
	Fraction float64
	Bytes    int64
}

// String renders the subset as it is written on the command line.
func (s *Subset) String() string {
	switch {
	case s.M > 0:
		return fmt.Sprintf("%d/%d", s.N, s.M)
	case s.Fraction > 0:
		return strconv.FormatFloat(s.Fraction*100, 'f', -1, 64) + "%"
	}
	return strconv.FormatInt(s.Bytes, 10)
}

// choose returns the packs of the subset.
// isData tells data packs from tree packs.
func (s *Subset) choose(ids []crypto.ID, sizes map[crypto.ID]int64, isData func(crypto.ID) bool) map[crypto.ID]bool {
	out := map[crypto.ID]bool{}
	if s == nil {
		for _, id := range ids {
			out[id] = true
		}
		return out
	}
	if s.M > 0 {
		for _, id := range ids {
			if int(id[0])%s.M == s.N-1 {
				out[id] = true
			}
		}
		return out
	}
	order := append([]crypto.ID(nil), ids...)
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	if s.Fraction > 0 {
		n := int(math.Ceil(s.Fraction * float64(len(order))))
		for _, id := range order[:min(n, len(order))] {
			out[id] = true
		}
		return out
	}
	// Data packs first (in random order): the size counts the data that is
	// read; tree packs are read by every check's walk anyway.
	sort.SliceStable(order, func(i, j int) bool { return isData(order[i]) && !isData(order[j]) })
	var total int64
	for _, id := range order {
		if total >= s.Bytes {
			break
		}
		total += sizes[id]
		out[id] = true
	}
	return out
}
