// What a restore does with what the target holds already: the entries the
// snapshot does not have (Options.Delete) and the files it has that are
// there already (Options.Overwrite).

package restorer

import (
	"fmt"
	"os"
	"path"
	"path/filepath"

	"dj/repo/walk"
)

// deleteExtra removes the entries of directory d in the target that its
// tree t does not hold, when the patterns select them (Options.Delete),
// each with all it holds; a symlink goes, never what it points to. It does
// nothing when t is not known whole: a node that could not be read, or a
// tree kept in files that could not be read back.
func (r *restorer) deleteExtra(d *dirState, t walk.List) {
	if t.Err() != nil {
		return
	}
	names := make(map[string]struct{}, t.Len())
	for i := range t.Len() {
		n := t.Node(i)
		if n == nil {
			return
		}
		names[n.Name] = struct{}{}
	}
	f, err := os.Open(d.path)
	if err != nil {
		r.fail(d.rel, fmt.Errorf("list for --delete: %w", err))
		return
	}
	have, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		r.fail(d.rel, fmt.Errorf("list for --delete: %w", err))
		return
	}
	for _, name := range have {
		if _, ok := names[name]; ok {
			continue
		}
		rel := path.Join(d.rel, name)
		if !r.selected(rel) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.path, name)); err != nil {
			r.fail(rel, fmt.Errorf("delete: %w", err))
			continue
		}
		r.deleted.Add(1)
		if r.opts.Deleted != nil {
			r.opts.Deleted(rel)
		}
	}
}
