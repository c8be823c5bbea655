package archiver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// How the given paths become the snapshot's tree (restic's rules):
//
//   - Every given path is stored under its absolute path. The directories on
//     the way to it are stored as directories, with the metadata of the
//     directory each one resolves to, even where the way runs through a
//     symlink (a/link/file stores "link" as a directory holding "file").
//   - A given path itself is stored as what it is: a symlink stays a symlink.
//   - A given path that is also on the way to another given path is a
//     directory holding all of its entries, each backed up whole: given
//     both "link" and "link/file", "link" is the directory the symlink
//     points to, with everything in it.
//   - Excludes apply to the given paths too; the directories on the way are
//     never excluded.

// CleanPaths makes paths absolute and clean, sorted and without
// duplicates. Each must exist (lstat).
func CleanPaths(paths []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		ap, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if _, err := os.Lstat(ap); err != nil {
			return nil, fmt.Errorf("cannot back up %s: %w", p, err)
		}
		if !seen[ap] {
			seen[ap] = true
			out = append(out, ap)
		}
	}
	sort.Strings(out)
	return out, nil
}

// outermost drops the paths that lie inside another one of the sorted,
// clean paths.
func outermost(paths []string) []string {
	var res []string
	for _, p := range paths {
		if len(res) > 0 {
			last := res[len(res)-1]
			if last == "/" || strings.HasPrefix(p, last+"/") {
				continue
			}
		}
		res = append(res, p)
	}
	return res
}

// virtual is a directory on the way to the given paths, or a given path.
type virtual struct {
	children map[string]*virtual
	// real is set for a given path (and for the entries of a given path
	// that is also on the way to another): back it up whole. With
	// children too, it is a directory that holds them and all its other
	// entries.
	real string
	// listed marks an entry that comes from reading a directory rather
	// than from the command line: --one-file-system applies to it.
	listed bool
}

// buildVirtual makes the tree of the clean absolute paths; its root is "/".
func buildVirtual(paths []string) *virtual {
	root := &virtual{children: map[string]*virtual{}}
	for _, p := range paths {
		cur := root
		if p != "/" {
			for _, el := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
				next, ok := cur.children[el]
				if !ok {
					next = &virtual{children: map[string]*virtual{}}
					cur.children[el] = next
				}
				cur = next
			}
		}
		cur.real = p
	}
	return root
}

// unroll turns a given path that is also on the way to other given paths
// into a directory holding all its entries (read through a symlink). The
// entries the other paths lead through stay virtual when they were not
// given themselves.
func (a *archiver) unroll(path string, v *virtual) {
	names, err := readDirNames(path)
	if err != nil {
		a.warn(path, err)
	}
	for _, name := range names {
		c, ok := v.children[name]
		if !ok {
			c = &virtual{children: map[string]*virtual{}, listed: true}
			v.children[name] = c
		}
		if c.real == "" {
			c.real = filepath.Join(path, name)
		}
	}
	v.real = ""
}

// readDirNames lists a directory (following a symlink to it), sorted.
func readDirNames(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	sort.Strings(names)
	return names, err
}

// saveRoot saves the tree of the given paths and returns the root's future.
func (a *archiver) saveRoot(ctx context.Context, root *virtual, prevID *crypto.ID) *future {
	if root.real == "/" && len(root.children) == 0 {
		// "/" itself: a normal directory backup.
		fi, err := os.Lstat("/")
		if err != nil {
			f := doneFuture(nil)
			f.err = err
			return f
		}
		var prev *tree.Node
		if prevID != nil {
			prev = &tree.Node{Type: tree.Dir, Subtree: prevID}
		}
		return a.saveEntry(ctx, "/", fi, prev)
	}
	return a.saveVirtual(ctx, "/", root, prevID)
}

// saveVirtual saves a directory that leads to the given paths. Its
// metadata comes from the directory path resolves to.
func (a *archiver) saveVirtual(ctx context.Context, path string, v *virtual, prevID *crypto.ID) *future {
	if v.real != "" {
		a.unroll(path, v)
	}
	fail := func(err error) *future {
		f := doneFuture(nil)
		f.err = err
		return f
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", path, err))
	}
	if !fi.IsDir() {
		return fail(fmt.Errorf("%s: not a directory", path))
	}
	resolved := path
	if r, err := filepath.EvalSymlinks(path); err == nil {
		resolved = r
	}
	node, warn, err := a.node(resolved, fi)
	if err != nil {
		return fail(err)
	}
	if warn != nil {
		a.warn(path, warn)
	}
	node.Name = filepath.Base(path)
	prev := a.loadPrev(ctx, prevID)
	names := make([]string, 0, len(v.children))
	for name := range v.children {
		names = append(names, name)
	}
	sort.Strings(names)
	var futs []*future
	for _, name := range names {
		child := v.children[name]
		cpath := filepath.Join(path, name)
		pc := prevChild(prev, name)
		if child.real != "" && len(child.children) == 0 {
			futs = append(futs, a.saveLeaf(ctx, child, pc))
			continue
		}
		futs = append(futs, a.saveVirtual(ctx, cpath, child, subtreeOf(pc)))
	}
	return a.finishDir(ctx, path, node, futs, prev != nil, prevID)
}

// saveLeaf starts saving a given path (or an entry of an unrolled one).
func (a *archiver) saveLeaf(ctx context.Context, v *virtual, prev *tree.Node) *future {
	fi, err := os.Lstat(v.real)
	if err != nil {
		a.warn(v.real, err)
		return doneFuture(nil)
	}
	if a.excludedLeaf(v.real, fi) {
		return doneFuture(nil)
	}
	if v.listed && fi.IsDir() && a.opts.OneFileSystem {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && !a.devices[st.Dev] {
			return doneFuture(nil)
		}
	}
	return a.saveEntry(ctx, v.real, fi, prev)
}
