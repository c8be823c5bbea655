// Package pathmatch matches slash-separated paths against exclude and
// include patterns with restic's rules: a pattern is a sequence of
// filepath.Match globs separated by '/', "**" matches any number of path
// elements, a pattern that does not start with '/' may match at any depth,
// and a pattern that matches a directory matches everything below it.
package pathmatch

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Pattern is one compiled pattern.
type Pattern struct {
	text     string
	parts    []string
	anchored bool
	fold     bool
}

// Compile parses a pattern. With fold set, matching ignores case.
func Compile(p string, fold bool) (Pattern, error) {
	orig := p
	p = filepath.ToSlash(strings.TrimSpace(p))
	if p == "" {
		return Pattern{}, fmt.Errorf("empty pattern")
	}
	if fold {
		p = strings.ToLower(p)
	}
	anchored := strings.HasPrefix(p, "/")
	p = strings.Trim(p, "/")
	var parts []string
	for _, s := range strings.Split(p, "/") {
		if s == "" {
			continue
		}
		if _, err := filepath.Match(s, ""); err != nil {
			return Pattern{}, fmt.Errorf("invalid pattern %q: %w", orig, err)
		}
		parts = append(parts, s)
	}
	if !anchored {
		parts = append([]string{"**"}, parts...)
	}
	return Pattern{text: orig, parts: parts, anchored: anchored, fold: fold}, nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.text }

func split(path string) []string {
	var out []string
	for _, s := range strings.Split(filepath.ToSlash(path), "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Match reports whether the pattern matches path or one of its parents.
func (p Pattern) Match(path string) bool {
	if p.fold {
		path = strings.ToLower(path)
	}
	return matchParts(p.parts, split(path), true)
}

// MatchChildren reports whether the pattern could match path or something
// below it (used to decide whether to descend into a directory when
// including).
func (p Pattern) MatchChildren(path string) bool {
	if p.fold {
		path = strings.ToLower(path)
	}
	els := split(path)
	return matchPrefix(p.parts, els)
}

// matchParts matches the pattern against a prefix of els (prefix allowed
// when prefixOK: a match of a parent directory counts).
func matchParts(parts, els []string, prefixOK bool) bool {
	if len(parts) == 0 {
		return len(els) == 0 || prefixOK
	}
	if parts[0] == "**" {
		for i := 0; i <= len(els); i++ {
			if matchParts(parts[1:], els[i:], prefixOK) {
				return true
			}
		}
		return false
	}
	if len(els) == 0 {
		return false
	}
	if ok, _ := filepath.Match(parts[0], els[0]); !ok {
		return false
	}
	return matchParts(parts[1:], els[1:], prefixOK)
}

// matchPrefix reports whether els could be extended to match parts.
func matchPrefix(parts, els []string) bool {
	if len(els) == 0 || len(parts) == 0 {
		return true
	}
	if parts[0] == "**" {
		return true
	}
	if ok, _ := filepath.Match(parts[0], els[0]); !ok {
		return false
	}
	return matchPrefix(parts[1:], els[1:])
}

// List is a set of patterns; it matches when any pattern does.
type List []Pattern

// CompileList compiles patterns.
func CompileList(patterns []string, fold bool) (List, error) {
	var l List
	for _, s := range patterns {
		p, err := Compile(s, fold)
		if err != nil {
			return nil, err
		}
		l = append(l, p)
	}
	return l, nil
}

// Match reports whether any pattern matches path or a parent of it.
func (l List) Match(path string) bool {
	for _, p := range l {
		if p.Match(path) {
			return true
		}
	}
	return false
}

// MatchChildren reports whether any pattern could match path or below.
func (l List) MatchChildren(path string) bool {
	for _, p := range l {
		if p.MatchChildren(path) {
			return true
		}
	}
	return false
}
