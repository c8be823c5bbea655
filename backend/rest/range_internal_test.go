package rest

import "testing"

func TestParseRange(t *testing.T) {
	const size = 100
	tests := []struct {
		header           string
		start, end       int64
		partial, satisfy bool
	}{
		{"", 0, size, false, true},
		{"bytes=0-9", 0, 10, true, true},
		{"bytes=10-", 10, size, true, true},
		{"bytes=90-200", 90, size, true, true},
		{"bytes=99-99", 99, 100, true, true},
		{"bytes=-5", 95, size, true, true},
		{"bytes=-500", 0, size, true, true},
		{"bytes=100-", 0, 0, false, false},
		{"bytes=100-200", 0, 0, false, false},
		{"bytes=-0", 0, 0, false, false},
		{"bytes=5-2", 0, size, false, true},     // invalid: ignored
		{"bytes=0-1,5-6", 0, size, false, true}, // several ranges: ignored
		{"items=0-1", 0, size, false, true},
		{"bytes=x-1", 0, size, false, true},
		{"bytes=1-x", 0, size, false, true},
		{"bytes=-1-2", 0, size, false, true},
		{"bytes=5", 0, size, false, true},
	}
	for _, tc := range tests {
		start, end, partial, ok := parseRange(tc.header, size)
		if start != tc.start || end != tc.end || partial != tc.partial || ok != tc.satisfy {
			t.Errorf("parseRange(%q) = %d, %d, %v, %v; want %d, %d, %v, %v", tc.header,
				start, end, partial, ok, tc.start, tc.end, tc.partial, tc.satisfy)
		}
	}
	// An empty file has no satisfiable range.
	if _, _, _, ok := parseRange("bytes=0-", 0); ok {
		t.Errorf("parseRange(bytes=0-) of an empty file is satisfiable")
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                string
		first, last, size int64
		ok                bool
	}{
		{"bytes 0-9/100", 0, 9, 100, true},
		{"bytes 5-5/*", 5, 5, -1, true},
		{"bytes */100", -1, -1, 100, true},
		{"bytes */*", 0, 0, 0, false},
		{"bytes 9-0/100", 0, 0, 0, false},
		{"bytes 0-9", 0, 0, 0, false},
		{"items 0-9/100", 0, 0, 0, false},
		{"bytes -1-9/100", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tc := range tests {
		first, last, size, ok := parseContentRange(tc.in)
		if ok != tc.ok || (ok && (first != tc.first || last != tc.last || size != tc.size)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v", tc.in, first, last, size, ok)
		}
	}
}
