// Importing tar streams (borg's import-tar): a container dump of Proxmox
// VE, or any tar on standard input, stored as a tree of files, so that
// daily dumps deduplicate file by file; dj dump writes the tar back.

package archiver

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/fsnode"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// tarEntry is one member of an imported tar, or a directory it implies.
type tarEntry struct {
	node     *tree.Node
	children map[string]*tarEntry
	order    int // of the member in the stream
}

// ImportTar backs up the tar stream r as a directory named name at the
// root of a new snapshot, with every member as the file, directory, link
// or special file it describes (owners, modes, times, extended attributes,
// hard links). A member whose name climbs out of the archive (../x) is
// skipped with a warning naming it; an absolute name is stored relative,
// as tar itself does. finish is called once the stream is read whole (see
// BackupReader). A stream that is not tar, or cut short, fails the backup
// and writes no snapshot.
func ImportTar(ctx context.Context, repo Repository, r io.Reader, name string, finish func() error, opts Options) (*snapshot.Snapshot, error) {
	name = strings.Trim(name, "/")
	if err := tree.ValidName(name); err != nil {
		return nil, fmt.Errorf("archive name: %w", err)
	}
	s := NewStream(ctx, repo, opts)
	defer s.Close()
	now := time.Now()
	root := &tarEntry{node: &tree.Node{Name: name, Type: tree.Dir, Mode: 0o755 | os.ModeDir}, children: map[string]*tarEntry{}}
	NodeMeta(root.node, now)
	byPath := map[string]*tarEntry{"": root}
	links := map[string][]*tree.Node{} // hard link groups by their first member's path
	tr := tar.NewReader(r)
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		p, warn := cleanTarName(hdr.Name)
		if warn != nil {
			s.Warn(hdr.Name, warn)
			continue
		}
		n, err := tarNode(hdr)
		if err != nil {
			s.Warn(hdr.Name, err)
			continue
		}
		n.Name = path.Base(p)
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			ids, size, err := s.SaveFile(tr, 0)
			if err != nil {
				return nil, fmt.Errorf("read tar member %s: %w", hdr.Name, err)
			}
			if size != uint64(hdr.Size) {
				return nil, fmt.Errorf("tar member %s: %d bytes, its header says %d", hdr.Name, size, hdr.Size)
			}
			n.Content = ids
		case tar.TypeLink:
			target, warn := cleanTarName(hdr.Linkname)
			t := byPath[target]
			if warn != nil || t == nil || t.node.Type != tree.File {
				s.Warn(hdr.Name, fmt.Errorf("hard link to %q, which is not a file earlier in the archive; skipped", hdr.Linkname))
				continue
			}
			c := *t.node
			c.Name = n.Name
			n = &c
			if len(links[target]) == 0 {
				links[target] = []*tree.Node{t.node}
			}
			links[target] = append(links[target], n)
		}
		if p == "" {
			if n.Type != tree.Dir {
				s.Warn(hdr.Name, errors.New("the archive's root is not a directory; skipped"))
				continue
			}
			n.Name = name
			root.node = n
			continue
		}
		parent := tarParent(byPath, path.Dir(p), hdr.ModTime)
		if parent.node.Type != tree.Dir {
			s.Warn(hdr.Name, fmt.Errorf("%s is not a directory in the archive; skipped", path.Dir(p)))
			continue
		}
		e := &tarEntry{node: n, order: i}
		if old := parent.children[n.Name]; old != nil && old.node.Type == tree.Dir && n.Type == tree.Dir {
			e.children = old.children // a directory named again keeps its members
		}
		if n.Type == tree.Dir && e.children == nil {
			e.children = map[string]*tarEntry{}
		}
		parent.children[n.Name] = e
		byPath[p] = e
		if n.Type == tree.File {
			s.FileDone("/"+name+"/"+p, n)
		}
	}
	// Hard links: one inode number per group (numbered in the order of
	// their first members, so the same tar makes the same trees), the
	// group's size its link count.
	firsts := make([]string, 0, len(links))
	for p := range links {
		firsts = append(firsts, p)
	}
	sort.Slice(firsts, func(i, j int) bool { return byPath[firsts[i]].order < byPath[firsts[j]].order })
	for i, p := range firsts {
		for _, n := range links[p] {
			n.Inode, n.DeviceID, n.Links = uint64(i+1), 1, uint64(len(links[p]))
		}
	}
	if finish != nil {
		if err := finish(); err != nil {
			return nil, err
		}
	}
	if err := saveTarDir(s, root); err != nil {
		return nil, err
	}
	id, err := s.SaveTree(&tree.Tree{Nodes: []*tree.Node{root.node}})
	if err != nil {
		return nil, err
	}
	return s.Finish([]string{"/" + name}, id)
}

// tarParent returns the directory entry at p, made (mode 0755, the time
// t of the member that implies it) when the archive has not named it yet.
func tarParent(byPath map[string]*tarEntry, p string, t time.Time) *tarEntry {
	if p == "." {
		p = ""
	}
	if e := byPath[p]; e != nil {
		return e
	}
	parent := tarParent(byPath, path.Dir(p), t)
	n := &tree.Node{Name: path.Base(p), Type: tree.Dir, Mode: 0o755 | os.ModeDir}
	NodeMeta(n, t)
	e := &tarEntry{node: n, children: map[string]*tarEntry{}}
	if parent.children != nil {
		parent.children[n.Name] = e
	}
	byPath[p] = e
	return e
}

// saveTarDir saves the trees below e, deepest first, and sets e's subtree.
func saveTarDir(s *Stream, e *tarEntry) error {
	t := &tree.Tree{}
	for _, c := range e.children {
		if c.node.Type == tree.Dir {
			if err := saveTarDir(s, c); err != nil {
				return err
			}
		}
		t.Nodes = append(t.Nodes, c.node)
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
	id, err := s.SaveTree(t)
	if err != nil {
		return err
	}
	e.node.Subtree = &id
	return nil
}

// cleanTarName returns a member's path relative to the archive's root
// ("" for the root itself), or a warning for one that climbs out of it or
// holds a name no tree may hold.
func cleanTarName(name string) (string, error) {
	p := path.Clean("/" + name)[1:] // absolute names are stored relative
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("member %q climbs out of the archive; skipped", name)
		}
	}
	if p == "" {
		return "", nil
	}
	for _, el := range strings.Split(p, "/") {
		if err := tree.ValidName(el); err != nil {
			return "", fmt.Errorf("member %q: %w; skipped", name, err)
		}
	}
	return p, nil
}

// tarNode makes the node a tar header describes (without content).
func tarNode(hdr *tar.Header) (*tree.Node, error) {
	var typ tree.NodeType
	var ifmt uint32
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeLink:
		typ, ifmt = tree.File, syscall.S_IFREG
	case tar.TypeDir:
		typ, ifmt = tree.Dir, syscall.S_IFDIR
	case tar.TypeSymlink:
		typ, ifmt = tree.Symlink, syscall.S_IFLNK
	case tar.TypeChar:
		typ, ifmt = tree.CharDev, syscall.S_IFCHR
	case tar.TypeBlock:
		typ, ifmt = tree.Dev, syscall.S_IFBLK
	case tar.TypeFifo:
		typ, ifmt = tree.FIFO, syscall.S_IFIFO
	default:
		return nil, fmt.Errorf("tar member of type %q is not supported; skipped", hdr.Typeflag)
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > 1<<32-2 || int64(hdr.Gid) > 1<<32-2 {
		return nil, fmt.Errorf("owner %d:%d is out of range; skipped", hdr.Uid, hdr.Gid)
	}
	n := &tree.Node{
		Type: typ, Mode: fsnode.FileMode(ifmt | uint32(hdr.Mode)&0o7777),
		UID: uint32(hdr.Uid), GID: uint32(hdr.Gid), User: hdr.Uname, Group: hdr.Gname,
		ModTime: hdr.ModTime, AccessTime: hdr.AccessTime, ChangeTime: hdr.ChangeTime, Links: 1,
	}
	if n.AccessTime.IsZero() {
		n.AccessTime = n.ModTime
	}
	if n.ChangeTime.IsZero() {
		n.ChangeTime = n.ModTime
	}
	switch typ {
	case tree.File:
		n.Size = uint64(hdr.Size)
		n.Blocks = (n.Size + 511) / 512
	case tree.Symlink:
		n.LinkTarget = hdr.Linkname
	case tree.CharDev, tree.Dev:
		n.Rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	}
	var keys []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		n.Xattrs = append(n.Xattrs, tree.Xattr{Name: strings.TrimPrefix(k, "SCHILY.xattr."), Value: []byte(hdr.PAXRecords[k])})
	}
	return n, nil
}
