package main

import (
	"testing"

	"dj/maint"
)

func TestParseSubset(t *testing.T) {
	tests := []struct {
		in   string
		want maint.Subset
		err  bool
	}{
		{"1/5", maint.Subset{N: 1, M: 5}, false},
		{"5/5", maint.Subset{N: 5, M: 5}, false},
		{"0/5", maint.Subset{}, true},
		{"6/5", maint.Subset{}, true},
		{"1/257", maint.Subset{}, true},
		{"10%", maint.Subset{Fraction: 0.1}, false},
		{"0%", maint.Subset{}, true},
		{"101%", maint.Subset{}, true},
		{"5G", maint.Subset{Bytes: 5 << 30}, false},
		{"100M", maint.Subset{Bytes: 100 << 20}, false},
		{"1024", maint.Subset{Bytes: 1024}, false},
		{"x", maint.Subset{}, true},
		{"", maint.Subset{}, true},
	}
	for _, tt := range tests {
		got, err := parseSubset(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: err %v", tt.in, err)
			continue
		}
		if err == nil && *got != tt.want {
			t.Errorf("%q: %+v, want %+v", tt.in, *got, tt.want)
		}
	}
}
