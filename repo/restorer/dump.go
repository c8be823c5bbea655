package restorer

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// readAheadBlobs is how many blobs WriteFile loads ahead of the writer.
const readAheadBlobs = 4

// WriteFile writes the content of file node n to w, loading the next blobs
// while the current one is written.
func WriteFile(ctx context.Context, l Loader, n *tree.Node, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		b   []byte
		err error
	}
	results := make([]chan result, len(n.Content))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	sem := make(chan struct{}, readAheadBlobs)
	go func() {
		for i, id := range n.Content {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func(i int, id crypto.ID) {
				b, err := l.LoadBlob(ctx, id, nil)
				results[i] <- result{b, err}
			}(i, id)
		}
	}()
	var written uint64
	for i := range n.Content {
		var r result
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-sem
		if r.err != nil {
			return fmt.Errorf("%s: chunk %d: %w", n.Name, i, r.err)
		}
		if _, err := w.Write(r.b); err != nil {
			return err
		}
		written += uint64(len(r.b))
	}
	if written != n.Size {
		return fmt.Errorf("%s: content is %d bytes, the snapshot says %d", n.Name, written, n.Size)
	}
	return nil
}

// WriteTar writes the tree as a tar stream with PAX headers (nanosecond
// times, xattrs, owner names, hard links, devices), every path prefixed
// with prefix.
func WriteTar(ctx context.Context, l Loader, root crypto.ID, prefix string, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	if err := writeTarTree(ctx, l, tw, root, strings.Trim(prefix, "/"), links); err != nil {
		return err
	}
	return tw.Close()
}

func writeTarTree(ctx context.Context, l Loader, tw *tar.Writer, id crypto.ID, prefix string, links map[[2]uint64]string) error {
	t, err := l.LoadTree(ctx, id)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		if err := tree.ValidName(n.Name); err != nil {
			return err
		}
		name := n.Name
		if prefix != "" {
			name = path.Join(prefix, n.Name)
		}
		hdr := &tar.Header{
			Name: name, Mode: int64(unixMode(n.Mode).Perm()) | modeBits(n), Uid: int(n.UID), Gid: int(n.GID),
			Uname: n.User, Gname: n.Group, ModTime: n.ModTime, AccessTime: n.AccessTime, ChangeTime: n.ChangeTime,
			Format: tar.FormatPAX,
		}
		for _, x := range n.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
		}
		switch n.Type {
		case tree.Dir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case tree.File:
			key := [2]uint64{n.DeviceID, n.Inode}
			if first, ok := links[key]; ok && n.Links > 1 {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			} else {
				if n.Links > 1 {
					links[key] = name
				}
				hdr.Typeflag, hdr.Size = tar.TypeReg, int64(n.Size)
			}
		case tree.Symlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, n.LinkTarget
		case tree.CharDev, tree.Dev:
			hdr.Typeflag = tar.TypeChar
			if n.Type == tree.Dev {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(devMajor(n.Rdev)), int64(devMinor(n.Rdev))
		case tree.FIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			continue // sockets and irregular files have no tar form
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := WriteFile(ctx, l, n, tw); err != nil {
				return err
			}
		}
		if n.Type == tree.Dir && n.Subtree != nil {
			if err := writeTarTree(ctx, l, tw, *n.Subtree, name, links); err != nil {
				return err
			}
		}
	}
	return nil
}

func modeBits(n *tree.Node) int64 {
	var m int64
	if n.Mode&os.ModeSetuid != 0 {
		m |= 0o4000
	}
	if n.Mode&os.ModeSetgid != 0 {
		m |= 0o2000
	}
	if n.Mode&os.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

func devMajor(dev uint64) uint32 { return uint32((dev>>32)&0xfffff000) | uint32((dev>>8)&0xfff) }
func devMinor(dev uint64) uint32 { return uint32((dev>>12)&0xffffff00) | uint32(dev&0xff) }
