package restorer

import (
	"path/filepath"
	"strings"
	"testing"

	"dj/repo/tree"
)

// FuzzRestorePath: every name a tree may hold (tree.ValidName, which the
// restorer checks again for each entry) joins to a path directly inside
// the directory it is restored into, however the name is made.
func FuzzRestorePath(f *testing.F) {
	for _, s := range []string{"a", "..", ".", "a/b", "", "a\x00b", "...", "..a", "/etc", `a\b`, "~", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	const dir = "/target/home/ann"
	f.Fuzz(func(t *testing.T, name string) {
		if tree.ValidName(name) != nil {
			return
		}
		p := filepath.Join(dir, name)
		if filepath.Dir(p) != dir || filepath.Base(p) != name {
			t.Fatalf("name %q joins to %q, outside %s", name, p, dir)
		}
	})
}
