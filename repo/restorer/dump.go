package restorer

import (
	"archive/tar"
	"archive/zip"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/flate"
	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/fsnode"
	"dj/repo/tree"
	"dj/repo/walk"
)

// readAheadBlobs is how many blobs WriteFile loads ahead of the writer.
const readAheadBlobs = 4

// WriteFile writes the content of file node n to w. Blobs are loaded in
// order, a few ahead of the writer, so a remote repository's latency is
// hidden; at most readAheadBlobs+2 blobs are held at once.
func WriteFile(ctx context.Context, l Loader, n *tree.Node, w io.Writer) error {
	if n.Type != tree.File {
		return fmt.Errorf("%q is a %s, not a file", n.Name, n.Type)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		b   []byte
		err error
	}
	queue := make(chan chan result, readAheadBlobs)
	go func() {
		defer close(queue)
		for _, id := range n.Content {
			ch := make(chan result, 1)
			go func() {
				b, err := l.LoadBlob(ctx, id, nil)
				ch <- result{b, err}
			}()
			select {
			case queue <- ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	var written uint64
	i := 0
	for ch := range queue {
		res := <-ch
		if res.err != nil {
			return fmt.Errorf("%q: chunk %d at offset %d: %w", n.Name, i, written, res.err)
		}
		if _, err := w.Write(res.b); err != nil {
			return err
		}
		written += uint64(len(res.b))
		i++
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if written != n.Size {
		return fmt.Errorf("%q: content is %d bytes, the snapshot says %d", n.Name, written, n.Size)
	}
	return nil
}

// WriteTar writes the tree root as a tar stream in PAX format, every path
// prefixed with prefix (such as "home/ann/docs"; empty for none): times to
// the nanosecond, owner ids and names, extended attributes as
// SCHILY.xattr records, symlinks, device nodes, fifos, and hard links as
// links to the first copy. Sockets have no tar form and are left out. An
// invalid name or a directory that contains itself ends the stream with an
// error, as does a blob that cannot be loaded: a tar stream cannot skip
// part of a file.
func WriteTar(ctx context.Context, l Loader, root crypto.ID, prefix string, w io.Writer) error {
	tw := tar.NewWriter(w)
	d := &tarDumper{l: l, tw: tw, links: map[tree.LinkKey]string{}, ancestors: map[crypto.ID]bool{}}
	if err := d.tree(ctx, root, strings.Trim(prefix, "/")); err != nil {
		return err
	}
	return tw.Close()
}

type tarDumper struct {
	l         Loader
	tw        *tar.Writer
	links     map[tree.LinkKey]string
	ancestors map[crypto.ID]bool
}

// tarMode returns the mode of n for a tar header, without the setuid
// (setgid) bit when the owner (group) is (uid_t)-1: tar run as root would
// chown the file to -1, which leaves it root's, and make a root-owned
// set-id file the snapshot never had (restore drops the bits too).
func tarMode(n *tree.Node) uint32 {
	mode := fsnode.UnixMode(n.Mode)
	if n.UID == 1<<32-1 {
		mode &^= 0o4000
	}
	if n.GID == 1<<32-1 {
		mode &^= 0o2000
	}
	return mode
}

func (d *tarDumper) tree(ctx context.Context, id crypto.ID, prefix string) error {
	return dumpTree(ctx, d.l, d.ancestors, id, prefix, d.node)
}

// dumpTree calls node for each entry of the tree id in order, with its
// path below prefix, after checking its name; node descends into
// directories by calling dumpTree again. ancestors holds the trees being
// dumped, so a tree that contains itself is an error, not a loop.
func dumpTree(ctx context.Context, l Loader, ancestors map[crypto.ID]bool, id crypto.ID, prefix string,
	node func(ctx context.Context, n *tree.Node, name string) error) error {
	if ancestors[id] {
		return fmt.Errorf("%s: %w", prefix, ErrTreeCycle)
	}
	t, err := walk.Load(ctx, l, id)
	if err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	ancestors[id] = true
	defer delete(ancestors, id)
	for i := range t.Len() {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := t.Node(i)
		if n == nil {
			return fmt.Errorf("%s: tree has a null node", prefix)
		}
		if err := tree.ValidName(n.Name); err != nil {
			return fmt.Errorf("%s: %w", prefix, err)
		}
		name := n.Name
		if prefix != "" {
			name = prefix + "/" + n.Name
		}
		if err := node(ctx, n, name); err != nil {
			return err
		}
	}
	if err := t.Err(); err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	return nil
}

func (d *tarDumper) node(ctx context.Context, n *tree.Node, name string) error {
	hdr := &tar.Header{
		Name: name, Mode: int64(tarMode(n)),
		Uid: int(n.UID), Gid: int(n.GID), Uname: n.User, Gname: n.Group,
		ModTime: n.ModTime, AccessTime: n.AccessTime, ChangeTime: n.ChangeTime,
		Format: tar.FormatPAX,
	}
	for _, x := range n.Xattrs {
		// PAX keys cannot hold '=' or NUL; such names are left out.
		if strings.ContainsAny(x.Name, "=\x00") || x.Name == "" {
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
	}
	if n.IsHardLink() {
		// Only nodes with the same data are links to one file.
		key := n.LinkKey()
		if first, ok := d.links[key]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return d.tw.WriteHeader(hdr)
		}
		d.links[key] = name
	}
	switch n.Type {
	case tree.Dir:
		if n.Subtree == nil {
			return fmt.Errorf("%s: directory without a subtree", name)
		}
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
	case tree.File:
		if n.Size > 1<<62 {
			return fmt.Errorf("%s: size %d out of range", name, n.Size)
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(n.Size)
	case tree.Symlink:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, n.LinkTarget
	case tree.CharDev, tree.Dev:
		hdr.Typeflag = tar.TypeChar
		if n.Type == tree.Dev {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(n.Rdev)), int64(unix.Minor(n.Rdev))
	case tree.FIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil // sockets and irregular files have no tar form
	}
	if err := d.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	switch n.Type {
	case tree.File:
		return WriteFile(ctx, d.l, n, d.tw)
	case tree.Dir:
		return d.tree(ctx, *n.Subtree, name)
	}
	return nil
}

// zipLevel is the deflate level of WriteZip: a dump is for moving data,
// so speed comes before size.
const zipLevel = flate.BestSpeed

// WriteZip writes the tree root as a zip archive, every path prefixed with
// prefix as in WriteTar: directories, files with their content
// (deflated), and symlinks with their target as content (as Info-ZIP
// stores them), each with its Unix mode and modification time (to the
// second, the resolution of zip). Zip has no hard links, owners, extended
// attributes or special files: hard-linked files are stored once per
// name; owners and extended attributes are left out, and so are device
// nodes, fifos and sockets (use tar for those). Errors end the archive as
// in WriteTar.
func WriteZip(ctx context.Context, l Loader, root crypto.ID, prefix string, w io.Writer) error {
	zw := zip.NewWriter(w)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, zipLevel)
	})
	d := &zipDumper{l: l, zw: zw, ancestors: map[crypto.ID]bool{}}
	if err := d.tree(ctx, root, strings.Trim(prefix, "/")); err != nil {
		return err
	}
	return zw.Close()
}

type zipDumper struct {
	l         Loader
	zw        *zip.Writer
	ancestors map[crypto.ID]bool
}

func (d *zipDumper) tree(ctx context.Context, id crypto.ID, prefix string) error {
	return dumpTree(ctx, d.l, d.ancestors, id, prefix, d.node)
}

func (d *zipDumper) node(ctx context.Context, n *tree.Node, name string) error {
	hdr := &zip.FileHeader{Name: name, Modified: n.ModTime}
	switch n.Type {
	case tree.Dir:
		if n.Subtree == nil {
			return fmt.Errorf("%s: directory without a subtree", name)
		}
		hdr.Name += "/"
		hdr.SetMode(n.Mode | os.ModeDir)
	case tree.File:
		hdr.Method = zip.Deflate
		hdr.SetMode(n.Mode & ^os.ModeType)
	case tree.Symlink:
		hdr.SetMode(n.Mode | os.ModeSymlink)
	default:
		return nil // devices, fifos and sockets have no zip form
	}
	fw, err := d.zw.CreateHeader(hdr)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	switch n.Type {
	case tree.File:
		return WriteFile(ctx, d.l, n, fw)
	case tree.Symlink:
		_, err = io.WriteString(fw, n.LinkTarget)
		return err
	case tree.Dir:
		return d.tree(ctx, *n.Subtree, name)
	}
	return nil
}
