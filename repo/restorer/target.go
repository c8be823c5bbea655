// What a restore does with what the target holds already: the entries the
// snapshot does not have (Options.Delete) and the files it has that are
// there already (Options.Overwrite).

package restorer

import (
	"fmt"
	"os"
	"path"
	"path/filepath"

	"dj/repo/tree"
	"dj/repo/walk"
)

// Overwrite says what a restore does with a file (or symlink, or special
// file) of the snapshot whose path in the target is taken already
// (restic's --overwrite).
type Overwrite int

// The overwrite modes, restic's.
const (
	// OverwriteAlways replaces what is there (the default).
	OverwriteAlways Overwrite = iota
	// OverwriteIfChanged keeps a regular file of the snapshot's size and
	// modification time, setting only its metadata, and replaces the rest.
	OverwriteIfChanged
	// OverwriteIfNewer replaces what is there only when the snapshot's
	// entry has a later modification time.
	OverwriteIfNewer
	// OverwriteNever keeps whatever is there.
	OverwriteNever
)

var overwriteNames = [...]string{"always", "if-changed", "if-newer", "never"}

// String is the mode's name on the command line.
func (o Overwrite) String() string {
	if o < 0 || int(o) >= len(overwriteNames) {
		return fmt.Sprintf("Overwrite(%d)", int(o))
	}
	return overwriteNames[o]
}

// ParseOverwrite reads a mode's name: always, if-changed, if-newer or
// never.
func ParseOverwrite(s string) (Overwrite, error) {
	for i, name := range overwriteNames {
		if s == name {
			return Overwrite(i), nil
		}
	}
	return 0, fmt.Errorf("invalid --overwrite %q: want always, if-changed, if-newer or never", s)
}

// keepExisting reports whether the entry the target has at fsPath stays
// in place of node n (Options.Overwrite), counting it as skipped.
func (r *restorer) keepExisting(fsPath, rel string, n *tree.Node) bool {
	if r.opts.Overwrite == OverwriteAlways {
		return false
	}
	fi, err := os.Lstat(fsPath)
	if err != nil {
		return false // nothing there, or clearPath says what is wrong
	}
	switch r.opts.Overwrite {
	case OverwriteIfNewer:
		if n.ModTime.After(fi.ModTime()) {
			return false
		}
	case OverwriteIfChanged:
		if n.Type != tree.File || !fi.Mode().IsRegular() || uint64(fi.Size()) != n.Size || !fi.ModTime().Equal(n.ModTime) {
			return false
		}
		if !r.opts.DryRun {
			r.applyMeta(fsPath, rel, n, true)
		}
	}
	r.skipped.Add(1)
	if n.Type == tree.File {
		r.skippedBytes.Add(n.Size)
	}
	return true
}

// deleteExtra removes the entries of directory d in the target that its
// tree t does not hold, when the patterns select them (Options.Delete),
// each with all it holds; a symlink goes, never what it points to. It does
// nothing when t is not known whole: a node that could not be read, or a
// tree kept in files that could not be read back.
func (r *restorer) deleteExtra(d *dirState, t walk.List) {
	if t.Err() != nil || d.planned {
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
		if !r.opts.DryRun {
			if err := os.RemoveAll(filepath.Join(d.path, name)); err != nil {
				r.fail(rel, fmt.Errorf("delete: %w", err))
				continue
			}
		}
		r.deleted.Add(1)
		if r.opts.Deleted != nil {
			r.opts.Deleted(rel)
		}
	}
}

// countDry counts what restoring n would write (Options.DryRun): a file
// with its size (a hard link's bytes once), or another entry.
func (r *restorer) countDry(n *tree.Node) {
	if n.Type != tree.File {
		r.others.Add(1)
		return
	}
	r.files.Add(1)
	if n.IsHardLink() {
		key := n.LinkKey()
		if _, ok := r.links[key]; ok {
			return
		}
		r.links[key] = ""
	}
	r.bytes.Add(n.Size)
}
