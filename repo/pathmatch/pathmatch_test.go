package pathmatch

import "testing"

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, path string
		fold, want    bool
	}{
		{"*.go", "/src/a/main.go", false, true},
		{"*.go", "/src/a/main.c", false, false},
		{"*.GO", "/src/a/main.go", true, true},
		{"*.GO", "/src/a/main.go", false, false},
		{"cache", "/home/ann/cache/x/y", false, true},
		{"/home/ann", "/home/ann/docs/a", false, true},
		{"/home/ann", "/x/home/ann", false, false},
		{"/home/*/docs", "/home/bob/docs/a.txt", false, true},
		{"/home/**/a.txt", "/home/bob/docs/a.txt", false, true},
		{"/home/**/a.txt", "/home/a.txt", false, true},
		{"docs/*.txt", "/home/bob/docs/a.txt", false, true},
		{"docs/*.txt", "/home/bob/docs/a.md", false, false},
		{"/", "/anything", false, true},
	}
	for _, c := range cases {
		p, err := Compile(c.pattern, c.fold)
		if err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		if got := p.Match(c.path); got != c.want {
			t.Errorf("%q on %q: got %v, want %v", c.pattern, c.path, got, c.want)
		}
	}
}

func TestMatchChildren(t *testing.T) {
	p, _ := Compile("/home/ann/docs", false)
	for path, want := range map[string]bool{"/": true, "/home": true, "/home/ann": true, "/home/bob": false, "/etc": false, "/home/ann/docs/x": true} {
		if got := p.MatchChildren(path); got != want {
			t.Errorf("%q: got %v want %v", path, got, want)
		}
	}
	if _, err := Compile("[", false); err == nil {
		t.Error("bad pattern accepted")
	}
}
