// Check's hard-link step: nodes of one snapshot that claim the same inode
// but hold different data.

package maint

import (
	"context"
	"fmt"

	"dj/repo/crypto"
	"dj/repo/tree"
)

// linkInode is the inode a hard-linked node claims.
type linkInode struct {
	dev, ino uint64
	typ      tree.NodeType
}

// linkNode is a hard-linked node of a tree, for the summary.
type linkNode struct {
	inode linkInode
	data  crypto.ID // tree.Node.LinkData
}

// noteLinks records the hard-linked nodes of a tree: the first data seen
// for each inode, and the inodes that are claimed with different data
// somewhere in the repository (which is normal across snapshots: a linked
// file that changed between backups).
func (c *checker) noteLinks(links []linkNode) {
	if len(links) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.linkData == nil {
		c.linkData = map[linkInode]crypto.ID{}
		c.linkSuspect = map[linkInode]bool{}
	}
	for _, l := range links {
		first, ok := c.linkData[l.inode]
		switch {
		case !ok:
			c.linkData[l.inode] = l.data
		case first != l.data:
			c.linkSuspect[l.inode] = true
		}
	}
}

// checkHardLinks warns about nodes of one snapshot that claim the same
// device and inode but hold different data (a hostile or damaged tree, or
// an inode reused while the backup ran): restore, dump and the mount keep
// them apart as separate files (tree.LinkKey), but they are not the hard
// links their tree says. It walks only when some inode is claimed with
// different data somewhere, and loads each tree once.
func (c *checker) checkHardLinks(ctx context.Context) error {
	suspect := c.linkSuspect
	c.linkData, c.linkSuspect = nil, nil
	if len(suspect) == 0 {
		return nil
	}
	w := &linkWalk{c: c, suspect: suspect, memo: map[crypto.ID][]linkHit{}}
	for _, sn := range c.snaps {
		hits, err := w.hits(ctx, sn.Tree)
		if err != nil {
			return err
		}
		type seen struct {
			data   crypto.ID
			path   string
			warned bool
		}
		first := map[linkInode]*seen{}
		for _, h := range hits {
			s := first[h.inode]
			if s == nil {
				first[h.inode] = &seen{data: h.data, path: "/" + h.path}
				continue
			}
			if s.data == h.data || s.warned {
				continue
			}
			s.warned = true
			c.add(&Problem{Severity: SeverityWarning, Kind: KindHardLinkConflict, Snapshot: idPtr(sn.ID),
				Message: fmt.Sprintf("snapshot %s: %q and %q claim the same inode (device %d, inode %d) with different contents; they are restored as separate files",
					sn.ID.Short(), s.path, "/"+h.path, h.inode.dev, h.inode.ino)})
		}
	}
	return nil
}

// linkHit is a node below a tree that claims a suspect inode.
type linkHit struct {
	path string // relative to the tree
	linkNode
}

// linkWalk finds the nodes below a tree that claim suspect inodes, loading
// each tree once.
type linkWalk struct {
	c       *checker
	suspect map[linkInode]bool
	memo    map[crypto.ID][]linkHit
}

func (w *linkWalk) hits(ctx context.Context, id crypto.ID) ([]linkHit, error) {
	if hits, ok := w.memo[id]; ok {
		return hits, nil
	}
	w.memo[id] = nil
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := w.c.r.LoadTree(ctx, id)
	if err != nil {
		return nil, nil // reported by the tree walk
	}
	var hits []linkHit
	for _, n := range t.Nodes {
		switch {
		case n.Type == tree.Dir && n.Subtree != nil:
			sub, err := w.hits(ctx, *n.Subtree)
			if err != nil {
				return nil, err
			}
			for _, h := range sub {
				hits = append(hits, linkHit{n.Name + "/" + h.path, h.linkNode})
			}
		case n.IsHardLink():
			l := nodeLink(n)
			if w.suspect[l.inode] {
				hits = append(hits, linkHit{n.Name, l})
			}
		}
	}
	w.memo[id] = hits
	return hits, nil
}

// nodeLink returns the linkNode of a hard-linked node.
func nodeLink(n *tree.Node) linkNode {
	return linkNode{linkInode{n.DeviceID, n.Inode, n.Type}, n.LinkData()}
}
