package maint

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	"dj/repo/crypto"
)

// maxPatternParts bounds the elements of one find pattern: a pattern's
// progress along a path is a bit set of the element positions it has
// reached, held in one uint64.
const maxPatternParts = 62

// findPattern is one compiled find pattern with restic's rules (its
// filter.Match on the full path of a node): the pattern is cleaned, split
// at '/' into filepath.Match globs; "**" stands for any number of path
// elements; a pattern that starts with '/' must match from the root, any
// other may match a run of elements at any depth; and a match of a
// directory is a match of everything below it. The empty pattern matches
// everything.
type findPattern struct {
	parts    []string
	simple   []bool // the part has no glob characters: compare with ==
	anchored bool
	final    uint64 // bit of the position after the last part
}

// compileFindPattern parses a pattern; with fold it is lower-cased (paths
// are lower-cased too when matching ignores case).
func compileFindPattern(s string, fold bool) (*findPattern, error) {
	orig := s
	if fold {
		s = strings.ToLower(s)
	}
	if s == "" {
		// restic: the empty pattern matches everything. A single "**"
		// does the same.
		s = "**"
	}
	parts := strings.Split(filepath.ToSlash(filepath.Clean(s)), "/")
	p := &findPattern{}
	if len(parts) > 1 && parts[0] == "" {
		p.anchored = true
		parts = parts[1:]
	}
	if len(parts) > maxPatternParts {
		return nil, fmt.Errorf("pattern %q has more than %d elements", orig, maxPatternParts)
	}
	for _, part := range parts {
		if _, err := filepath.Match(part, "x"); err != nil {
			return nil, fmt.Errorf("invalid pattern %q: %w", orig, err)
		}
		p.parts = append(p.parts, part)
		p.simple = append(p.simple, !strings.ContainsAny(part, `\[]*?`))
	}
	p.final = 1 << len(p.parts)
	return p, nil
}

// start is the state at the root, before any element.
func (p *findPattern) start() uint64 { return p.closure(1) }

// closure adds the positions a "**" reaches without consuming an element.
func (p *findPattern) closure(s uint64) uint64 {
	for j, part := range p.parts {
		if s&(1<<j) != 0 && part == "**" {
			s |= 1 << (j + 1)
		}
	}
	return s
}

// step returns the state after the element el. A state with the final bit
// set means the path up to el matches.
func (p *findPattern) step(s uint64, el string) uint64 {
	var next uint64
	for j, part := range p.parts {
		if s&(1<<j) == 0 {
			continue
		}
		switch {
		case part == "**":
			next |= 1 << j
		case p.simple[j]:
			if part == el {
				next |= 1 << (j + 1)
			}
		default:
			if ok, _ := filepath.Match(part, el); ok {
				next |= 1 << (j + 1)
			}
		}
	}
	if !p.anchored {
		// The pattern may begin at any element.
		next |= 1
	}
	return p.closure(next)
}

// findMatcher runs several patterns at once: a node matches when any of
// them matches its path, or matched a directory above it.
type findMatcher struct {
	patterns []*findPattern
	fold     bool
}

// acceptAll is the state below a matched directory: everything matches.
const acceptAll = "*"

// deadState is the state in which no pattern can match anything below.
const deadState = ""

func newFindMatcher(patterns []string, fold bool) (*findMatcher, error) {
	m := &findMatcher{fold: fold}
	for _, s := range patterns {
		p, err := compileFindPattern(s, fold)
		if err != nil {
			return nil, err
		}
		m.patterns = append(m.patterns, p)
	}
	return m, nil
}

// start is the state at the root of a snapshot.
func (m *findMatcher) start() string {
	st := make([]uint64, len(m.patterns))
	for i, p := range m.patterns {
		st[i] = p.start()
	}
	return m.encode(st)
}

// encode turns per-pattern position sets into a compact key; a state in
// which every set is empty is deadState.
func (m *findMatcher) encode(st []uint64) string {
	dead := true
	for _, s := range st {
		if s != 0 {
			dead = false
		}
	}
	if dead {
		return deadState
	}
	b := make([]byte, 8*len(st))
	for i, s := range st {
		binary.LittleEndian.PutUint64(b[8*i:], s)
	}
	return string(b)
}

// decode is the inverse of encode for a live state.
func (m *findMatcher) decode(key string, st []uint64) []uint64 {
	st = st[:0]
	for i := range m.patterns {
		st = append(st, binary.LittleEndian.Uint64([]byte(key[8*i:8*i+8])))
	}
	return st
}

// idPrefix is a blob or tree id, or a prefix of one, in hex.
type idPrefix struct {
	b   []byte // whole bytes
	odd bool   // one more hex digit follows in nib
	nib byte
}

func parseIDPrefix(s string) (idPrefix, error) {
	s = strings.ToLower(s)
	if s == "" || len(s) > 2*crypto.IDSize {
		return idPrefix{}, fmt.Errorf("invalid ID %q: want 1 to %d hex digits", s, 2*crypto.IDSize)
	}
	var p idPrefix
	even := s[:len(s)&^1]
	b, err := hex.DecodeString(even)
	if err != nil {
		return idPrefix{}, fmt.Errorf("invalid ID %q: not hexadecimal", s)
	}
	p.b = b
	if len(s)%2 == 1 {
		nb, err := hex.DecodeString(s[len(s)-1:] + "0")
		if err != nil {
			return idPrefix{}, fmt.Errorf("invalid ID %q: not hexadecimal", s)
		}
		p.odd, p.nib = true, nb[0]
	}
	return p, nil
}

func (p idPrefix) match(id *crypto.ID) bool {
	if string(id[:len(p.b)]) != string(p.b) {
		return false
	}
	return !p.odd || id[len(p.b)]&0xf0 == p.nib
}

// idSet matches ids against full ids and prefixes.
type idSet struct {
	full     map[crypto.ID]struct{}
	prefixes []idPrefix
}

func newIDSet(ids []string) (*idSet, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	s := &idSet{full: map[crypto.ID]struct{}{}}
	for _, x := range ids {
		p, err := parseIDPrefix(x)
		if err != nil {
			return nil, err
		}
		if len(p.b) == crypto.IDSize {
			s.full[crypto.ID(p.b)] = struct{}{}
			continue
		}
		s.prefixes = append(s.prefixes, p)
	}
	return s, nil
}

func (s *idSet) has(id *crypto.ID) bool {
	if s == nil {
		return false
	}
	if _, ok := s.full[*id]; ok {
		return true
	}
	for _, p := range s.prefixes {
		if p.match(id) {
			return true
		}
	}
	return false
}
