package main

import (
	"fmt"
	"io/fs"

	"path"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dj/repo"
	"dj/repo/tree"
	"dj/repo/walk"
)

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list files in a snapshot",
		UsageText: "dj ls [-l] [--recursive] [--json] SNAPSHOT [PATH...]",
		Description: `Lists the files of a snapshot. Without PATH the whole snapshot is listed; with
PATH only the entries of those directories (add --recursive for everything
below them). SNAPSHOT is an ID, a unique ID prefix, or "latest".

Examples:
   dj ls latest
   dj ls -l 1a2b3c4d /home/ann/docs`,
		Flags: append(filterFlags(),
			&cli.BoolFlag{Name: "long", Aliases: []string{"l"}, Usage: "long listing: mode, owner, size, time"},
			&cli.BoolFlag{Name: "recursive", Usage: "with PATH, list everything below it"},
		),
		Action: runLs,
	}
}

// nodeJSON is restic's JSON shape of a listed node.
type nodeJSON struct {
	Name        string      `json:"name"`
	Type        string      `json:"type"`
	Path        string      `json:"path"`
	UID         uint32      `json:"uid"`
	GID         uint32      `json:"gid"`
	Size        *uint64     `json:"size,omitempty"`
	Mode        fs.FileMode `json:"mode,omitempty"`
	Permissions string      `json:"permissions,omitempty"`
	ModTime     time.Time   `json:"mtime,omitempty"`
	AccessTime  time.Time   `json:"atime,omitempty"`
	ChangeTime  time.Time   `json:"ctime,omitempty"`
	Inode       uint64      `json:"inode,omitempty"`
	LinkTarget  string      `json:"link_target,omitempty"`
	StructType  string      `json:"struct_type"`
}

func runLs(c *cli.Context) error {
	e := newEnv(c)
	if c.NArg() < 1 {
		return usageError("ls needs a snapshot ID")
	}
	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeRepo()
	sn, err := findSnapshot(e.ctx, r, c.Args().First(), filterFromFlags(c))
	if err != nil {
		return err
	}
	if e.json {
		j := struct {
			snapshotJSON
			StructType string `json:"struct_type"`
		}{toJSON(sn), "snapshot"}
		if err := printJSONLine(e, j); err != nil {
			return err
		}
	} else {
		e.printf("snapshot %s of %v at %s:\n", sn.ID.Short(), sn.Paths, sn.Time.Local().Format("2006-01-02 15:04:05"))
	}
	emit := func(p string, n *tree.Node) error {
		if e.json {
			return printJSONLine(e, toNodeJSON(p, n))
		}
		if c.Bool("long") {
			e.printf("%s\n", longLine(p, n))
		} else {
			e.printf("%s\n", p)
		}
		return nil
	}
	dirs := c.Args().Slice()[1:]
	if len(dirs) == 0 {
		return walk.Nodes(e.ctx, r, sn.Tree, "/", -1, emit)
	}
	for _, d := range dirs {
		d = path.Clean("/" + d)
		n, err := r.FindNode(e.ctx, sn.Tree, d)
		if err != nil {
			return err
		}
		if n.Type != tree.Dir {
			if err := emit(d, n); err != nil {
				return err
			}
			continue
		}
		depth := 1
		if c.Bool("recursive") {
			depth = -1
		}
		if err := walk.Nodes(e.ctx, r, *n.Subtree, d, depth, emit); err != nil {
			return err
		}
	}
	return nil
}

func printJSONLine(e *env, v any) error {
	enc := jsonEncoder(e.stdout)
	return enc.Encode(v)
}

func toNodeJSON(p string, n *tree.Node) nodeJSON {
	j := nodeJSON{Name: n.Name, Type: string(n.Type), Path: p, UID: n.UID, GID: n.GID, Mode: n.Mode,
		Permissions: n.Mode.String(), ModTime: n.ModTime, AccessTime: n.AccessTime, ChangeTime: n.ChangeTime,
		Inode: n.Inode, LinkTarget: n.LinkTarget, StructType: "node"}
	if n.Type == tree.File {
		size := n.Size
		j.Size = &size
	}
	return j
}

func longLine(p string, n *tree.Node) string {
	owner := n.User
	if owner == "" {
		owner = fmt.Sprint(n.UID)
	}
	group := n.Group
	if group == "" {
		group = fmt.Sprint(n.GID)
	}
	s := fmt.Sprintf("%s %8s %8s %12d %s %s", n.Mode.String(), owner, group, n.Size, n.ModTime.Local().Format("2006-01-02 15:04:05"), p)
	if n.Type == tree.Symlink {
		s += " -> " + n.LinkTarget
	}
	return strings.TrimRight(s, " ")
}
