package pve

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"dj/pve/vma"
	"dj/repo/crypto"
	"dj/repo/tree"
)

// Loader is what writing a VMA stream needs from a repository.
type Loader interface {
	LoadTree(ctx context.Context, id crypto.ID) (*tree.Tree, error)
	LoadBlob(ctx context.Context, id crypto.ID, buf []byte) ([]byte, error)
}

// ErrNotVMA is returned by WriteVMA for a directory that is not a stored
// VMA archive.
var ErrNotVMA = errors.New("not a stored VMA archive")

// IsVMADir reports whether n looks like a directory BackupVMA made: its
// name ends in .vma. (WriteVMA checks its content.)
func IsVMADir(n *tree.Node) bool {
	return n.Type == tree.Dir && n.Subtree != nil && strings.HasSuffix(n.Name, ".vma")
}

// WriteVMA writes the stored archive dir (a directory node BackupVMA
// made) to w as a VMA stream: a new UUID, the backup's time, the same
// configuration files, and disks with identical contents, so that
// `dj dump ... | qmrestore - VMID` restores the guest. The disks are
// numbered in the order of their names.
func WriteVMA(ctx context.Context, l Loader, dir *tree.Node, w io.Writer) error {
	if dir.Type != tree.Dir || dir.Subtree == nil {
		return fmt.Errorf("%s: %w: not a directory", dir.Name, ErrNotVMA)
	}
	t, err := l.LoadTree(ctx, *dir.Subtree)
	if err != nil {
		return err
	}
	h := vma.Header{CTime: dir.ModTime.Unix()}
	if _, err := rand.Read(h.UUID[:]); err != nil {
		return err
	}
	var disks []*tree.Node
	for _, n := range t.Nodes {
		if n.Type != tree.File {
			return fmt.Errorf("%s/%s: %w: it holds a %s", dir.Name, n.Name, ErrNotVMA, n.Type)
		}
		if name, ok := strings.CutSuffix(n.Name, DiskSuffix); ok {
			disks = append(disks, n)
			h.Devices = append(h.Devices, vma.Device{Name: name, Size: n.Size})
			continue
		}
		data, err := readAll(ctx, l, n, 1<<16)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", dir.Name, n.Name, err)
		}
		h.Configs = append(h.Configs, vma.Config{Name: n.Name, Data: data})
	}
	if len(disks) == 0 {
		return fmt.Errorf("%s: %w: it holds no disk image (*%s)", dir.Name, ErrNotVMA, DiskSuffix)
	}
	if len(disks) > vma.MaxDevices-1 {
		return fmt.Errorf("%s: %d disks, a VMA holds at most %d", dir.Name, len(disks), vma.MaxDevices-1)
	}
	order := make([]int, len(disks))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return h.Devices[order[a]].Name < h.Devices[order[b]].Name })
	for id, i := range order {
		h.Devices[i].ID = uint8(id + 1)
	}
	vw, err := vma.NewWriter(w, h)
	if err != nil {
		return err
	}
	var buf []byte
	for _, i := range order {
		n, dev := disks[i], h.Devices[i]
		var off uint64
		for _, id := range n.Content {
			b, err := l.LoadBlob(ctx, id, buf)
			if err != nil {
				return fmt.Errorf("%s/%s at offset %d: %w", dir.Name, n.Name, off, err)
			}
			buf = b
			if off+uint64(len(b)) > n.Size || (off%vma.ClusterSize != 0) {
				return fmt.Errorf("%s/%s: its chunks do not match its size %d", dir.Name, n.Name, n.Size)
			}
			for p := 0; p < len(b); p += vma.ClusterSize {
				c := b[p:min(len(b), p+vma.ClusterSize)]
				if err := vw.WriteCluster(dev.ID, uint32((off+uint64(p))/vma.ClusterSize), c); err != nil {
					return err
				}
			}
			off += uint64(len(b))
		}
		if off != n.Size {
			return fmt.Errorf("%s/%s: its chunks hold %d bytes, its size is %d", dir.Name, n.Name, off, n.Size)
		}
	}
	return vw.Close()
}

// readAll reads a small file whole, refusing one larger than limit.
func readAll(ctx context.Context, l Loader, n *tree.Node, limit uint64) ([]byte, error) {
	if n.Size > limit {
		return nil, fmt.Errorf("%d bytes, a VMA configuration holds at most %d", n.Size, limit)
	}
	var out []byte
	for _, id := range n.Content {
		b, err := l.LoadBlob(ctx, id, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
		if uint64(len(out)) > limit {
			return nil, fmt.Errorf("content over %d bytes", limit)
		}
	}
	if uint64(len(out)) != n.Size {
		return nil, fmt.Errorf("content is %d bytes, the snapshot says %d", len(out), n.Size)
	}
	return out, nil
}
