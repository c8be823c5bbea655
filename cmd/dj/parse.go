package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"dj/maint"
)

// Parsers of command-line values that more than one command takes.

// parseSize parses a byte size like 100, 10K, 5M, 1G or 2T (binary units;
// a trailing B or iB is allowed), as the command line takes them.
func parseSize(s string) (int64, error) {
	given := s
	s = strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q", given)
	}
	return n * mult, nil
}

// parseSubset parses --read-data-subset: "n/m", "x%" or a size with an optional K, M, G or T
// suffix (binary units).
func parseSubset(s string) (*maint.Subset, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.Contains(s, "/"):
		a, b, _ := strings.Cut(s, "/")
		n, err1 := strconv.Atoi(a)
		m, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil || m < 1 || m > 256 || n < 1 || n > m {
			return nil, fmt.Errorf("invalid subset %q: want n/m with 1 <= n <= m <= 256", s)
		}
		return &maint.Subset{N: n, M: m}, nil
	case strings.HasSuffix(s, "%"):
		f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || !(f > 0 && f <= 100) {
			return nil, fmt.Errorf("invalid subset %q: want a percentage above 0 and at most 100", s)
		}
		return &maint.Subset{Fraction: f / 100}, nil
	}
	n, err := parseSize(s)
	if err != nil || n <= 0 {
		return nil, fmt.Errorf("invalid subset %q: want n/m, x%% or a size like 5G", s)
	}
	return &maint.Subset{Bytes: n}, nil
}
