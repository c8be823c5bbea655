package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dj/maint"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

func findFilesCommand() *cli.Command {
	return &cli.Command{
		Name:      "find",
		Usage:     "find files and directories in snapshots",
		UsageText: "dj find [-i] [-l] [--oldest TIME] [--newest TIME] [-s SNAPSHOT]... [--host HOST] [--tag TAG] [--path PATH] [--json] PATTERN...\n   dj find --blob|--tree|--pack [--show-pack-id] ID...",
		Description: `Searches every snapshot (or those given with --snapshot, or those that pass
the filters) for entries whose path matches one of the patterns, with restic's
rules: a pattern is matched against the full path ("/home/ann/a.txt"), its
'/'-separated parts are globs ('*', '?', '[a-z]'), "**" matches any number of
directories, a pattern that starts with '/' must match from the root, any
other may match at any depth, and a matching directory matches everything
below it. Subtrees shared by several snapshots are searched once.

With --blob, --tree or --pack the arguments are IDs or ID prefixes: --blob
finds the files that contain a data blob, --tree the directories that are a
tree, --pack the files that contain data of a pack file.

--oldest and --newest bound the modification time of a match; TIME is
"YYYY-MM-DD", "YYYY-MM-DD HH:MM" or "YYYY-MM-DD HH:MM:SS" (local time, or
followed by a zone such as "+0100" or "UTC").

Examples:
   dj find '*.go'
   dj find -i --newest 2024-06-01 'report*.pdf'
   dj find -l -s latest /home/ann/docs
   dj find --json 'dir/*.txt'
   dj find --blob 420f620f
   dj find --show-pack-id --tree 577c2bc9`,
		Flags: append(filterFlags(),
			&cli.StringSliceFlag{Name: "snapshot", Aliases: []string{"s"}, Usage: "search only snapshot `ID` (repeatable; \"latest\" respects the filters)"},
			&cli.BoolFlag{Name: "ignore-case", Aliases: []string{"i"}, Usage: "ignore case in patterns"},
			&cli.BoolFlag{Name: "long", Aliases: []string{"l"}, Usage: "long listing: mode, owner, size, time"},
			&cli.StringFlag{Name: "oldest", Aliases: []string{"O"}, Usage: "only matches modified at or after `TIME`"},
			&cli.StringFlag{Name: "newest", Aliases: []string{"N"}, Usage: "only matches modified at or before `TIME`"},
			&cli.BoolFlag{Name: "blob", Usage: "the arguments are data blob IDs"},
			&cli.BoolFlag{Name: "tree", Usage: "the arguments are tree IDs"},
			&cli.BoolFlag{Name: "pack", Usage: "the arguments are pack IDs"},
			&cli.BoolFlag{Name: "show-pack-id", Usage: "with --blob, --tree or --pack: also show the pack of each object found (text output)"},
		),
		Action: runFind,
	}
}

// findTimeLayouts are the forms restic's find accepts for --oldest and
// --newest.
var findTimeLayouts = []string{
	"2006-01-02 15:04:05 -0700",
	"2006-01-02 15:04:05 MST",
	"2006-01-02 15:04:05",
	"2006-01-02 15:04",
	"2006-01-02",
}

func parseFindTime(s string) (time.Time, error) {
	for _, layout := range findTimeLayouts {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unable to parse time: %q", s)
}

func runFind(c *cli.Context) error {
	e := newEnv(c)
	args := c.Args().Slice()
	if len(args) == 0 {
		return usageError("find needs at least one pattern (or ID with --blob, --tree, --pack)")
	}
	var opts maint.FindOptions
	kinds := 0
	for _, k := range []string{"blob", "tree", "pack"} {
		if c.Bool(k) {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		return usageError("--blob, --tree and --pack exclude each other")
	case c.Bool("blob"), c.Bool("pack"):
		// --pack: the IDs are resolved to blobs below; checked here.
		opts.Blobs = args
	case c.Bool("tree"):
		opts.Trees = args
	default:
		opts.Patterns = args
		if c.Bool("show-pack-id") {
			return usageError("--show-pack-id needs --blob, --tree or --pack")
		}
	}
	opts.IgnoreCase = c.Bool("ignore-case")
	// Plain paths need no node metadata: the search then keeps none.
	opts.PathsOnly = !e.json && !c.Bool("long")
	for _, b := range []struct {
		flag string
		t    *time.Time
	}{{"oldest", &opts.Oldest}, {"newest", &opts.Newest}} {
		if s := c.String(b.flag); s != "" {
			t, err := parseFindTime(s)
			if err != nil {
				return usageError("--%s: %v", b.flag, err)
			}
			*b.t = t
		}
	}
	if err := opts.Validate(); err != nil {
		return usageError("%v", err)
	}

	r, closeRepo, err := e.openLocked(repo.LockRead, true, loadIndexSnapshots)
	if err != nil {
		return err
	}
	defer closeRepo()
	snaps, err := findSelectSnapshots(e, r, c)
	if err != nil {
		return err
	}
	if c.Bool("pack") {
		if opts.Blobs, err = maint.PackBlobs(r.Index(), args); err != nil {
			return err
		}
		if len(opts.Blobs) == 0 {
			// Packs of trees: no file holds their blobs.
			snaps = nil
		}
	}
	opts.TreeError = func(id crypto.ID, path string, err error) {
		e.warnf("dj: tree %s at %s cannot be loaded: %s\n", id.Short(), path, oneLine(err))
	}

	w := bufio.NewWriterSize(e.stdout, 64<<10)
	defer w.Flush()
	var out findOutput
	if opts.Patterns != nil {
		out = &findPathOutput{w: w, json: e.json, quiet: e.quiet, long: c.Bool("long")}
	} else {
		out = &findObjectOutput{w: w, json: e.json}
	}
	stats := &maint.FindStats{}
	if len(snaps) > 0 {
		if stats, err = maint.Find(e.ctx, r, snaps, opts, out.hit); err != nil {
			return err
		}
	}
	if err := out.finish(); err != nil {
		return err
	}
	if oo, ok := out.(*findObjectOutput); ok && c.Bool("show-pack-id") && !e.json {
		oo.showPacks(r, opts)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if stats.TreeErrors > 0 {
		return fmt.Errorf("%d tree(s) could not be loaded, the results are incomplete: %w", stats.TreeErrors, repo.ErrCorrupt)
	}
	return nil
}

// findSelectSnapshots returns the snapshots given with --snapshot (in that
// order; IDs that match nothing are skipped with a warning, as restic does,
// and the filters apply only to "latest"), or else every snapshot that
// passes the filters, oldest first.
func findSelectSnapshots(e *env, r *repo.Repository, c *cli.Context) ([]*snapshot.Snapshot, error) {
	all, err := e.snapshots(r)
	if err != nil {
		return nil, err
	}
	refs := c.StringSlice("snapshot")
	if len(refs) == 0 {
		return filterFromFlags(c).Apply(all), nil
	}
	var out []*snapshot.Snapshot
	seen := map[crypto.ID]bool{}
	for _, ref := range refs {
		list := all
		if ref == "latest" {
			list = filterFromFlags(c).Apply(all)
		}
		sn, err := snapshot.Find(list, ref)
		if err != nil {
			e.warnf("Ignoring %q: %v\n", ref, err)
			continue
		}
		if !seen[sn.ID] {
			seen[sn.ID] = true
			out = append(out, sn)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("none of the snapshots %q was found: %w", refs, snapshot.ErrNotFound)
	}
	return out, nil
}

// findOutput prints the hits of a search.
type findOutput interface {
	hit(sn *snapshot.Snapshot, h *maint.FindHit) error
	finish() error
}

// findPathOutput prints the hits of a pattern search as restic does: per
// snapshot a header and the paths, or one JSON list of
// {"matches":[...],"hits":N,"snapshot":ID} objects.
type findPathOutput struct {
	w                 *bufio.Writer
	json, quiet, long bool
	cur               *snapshot.Snapshot
	hits              int
	started           bool
}

func (o *findPathOutput) hit(sn *snapshot.Snapshot, h *maint.FindHit) error {
	if o.json {
		return o.hitJSON(sn, h)
	}
	if sn != o.cur {
		if !o.quiet {
			if o.cur != nil {
				o.w.WriteByte('\n')
			}
			fmt.Fprintf(o.w, "Found matching entries in snapshot %s from %s\n", sn.ID.Short(), sn.Time.Local().Format("2006-01-02 15:04:05"))
		}
		o.cur = sn
	}
	if o.long {
		o.w.WriteString(findLongLine(h.Path, h.Node))
	} else {
		o.w.WriteString(h.Path)
	}
	return o.w.WriteByte('\n')
}

func (o *findPathOutput) hitJSON(sn *snapshot.Snapshot, h *maint.FindHit) error {
	if !o.started {
		o.w.WriteByte('[')
		o.started = true
	}
	if sn != o.cur {
		if o.cur != nil {
			fmt.Fprintf(o.w, `],"hits":%d,"snapshot":"%s"},`, o.hits, o.cur.ID)
		}
		o.w.WriteString(`{"matches":[`)
		o.cur, o.hits = sn, 0
	}
	if o.hits > 0 {
		o.w.WriteByte(',')
	}
	b, err := json.Marshal(toFindNodeJSON(h.Path, h.Node))
	if err != nil {
		return err
	}
	o.hits++
	_, err = o.w.Write(b)
	return err
}

func (o *findPathOutput) finish() error {
	if !o.json {
		return nil
	}
	if o.cur != nil {
		fmt.Fprintf(o.w, `],"hits":%d,"snapshot":"%s"}`, o.hits, o.cur.ID)
	}
	if o.started {
		_, err := o.w.WriteString("]\n")
		return err
	}
	_, err := o.w.WriteString("[]\n")
	return err
}

// findLongLine is restic's long format of a match: mode, uid, gid, size,
// modification time, path (and a symlink's target).
func findLongLine(p string, n *tree.Node) string {
	target := ""
	if n.Type == tree.Symlink {
		target = " -> " + n.LinkTarget
	}
	return fmt.Sprintf("%s %5d %5d %6d %s %s%s", n.Mode, n.UID, n.GID, n.Size,
		n.ModTime.Local().Format("2006-01-02 15:04:05"), p, target)
}

// findNodeJSON is restic's JSON shape of a match: the node's fields
// without name, inode, content, subtree and extended attributes, with its
// path and permissions in front.
type findNodeJSON struct {
	Path        string      `json:"path,omitempty"`
	Permissions string      `json:"permissions,omitempty"`
	Type        string      `json:"type"`
	Mode        fs.FileMode `json:"mode,omitempty"`
	ModTime     time.Time   `json:"mtime,omitempty"`
	AccessTime  time.Time   `json:"atime,omitempty"`
	ChangeTime  time.Time   `json:"ctime,omitempty"`
	UID         uint32      `json:"uid"`
	GID         uint32      `json:"gid"`
	User        string      `json:"user,omitempty"`
	Group       string      `json:"group,omitempty"`
	DeviceID    uint64      `json:"device_id,omitempty"`
	Size        uint64      `json:"size,omitempty"`
	Links       uint64      `json:"links,omitempty"`
	LinkTarget  string      `json:"linktarget,omitempty"`
}

func toFindNodeJSON(p string, n *tree.Node) findNodeJSON {
	j := findNodeJSON{Path: p, Permissions: n.Mode.String(), Type: string(n.Type), Mode: n.Mode,
		ModTime: n.ModTime, AccessTime: n.AccessTime, ChangeTime: n.ChangeTime, UID: n.UID, GID: n.GID,
		User: n.User, Group: n.Group, DeviceID: n.DeviceID, Size: n.Size, Links: n.Links, LinkTarget: n.LinkTarget}
	if n.Type == tree.Dir {
		// restic records neither size nor link count for directories.
		j.Size, j.Links = 0, 0
	}
	return j
}

// findObjectOutput prints the hits of a --blob, --tree or --pack search as
// restic does.
type findObjectOutput struct {
	w       *bufio.Writer
	json    bool
	started bool
	found   []maint.FindHit // one per distinct object, for --show-pack-id
	seen    map[crypto.ID]bool
}

// findObjectJSON is restic's JSON shape of a found blob or tree.
type findObjectJSON struct {
	ObjectType string    `json:"object_type"`
	ID         string    `json:"id"`
	Path       string    `json:"path"`
	ParentTree string    `json:"parent_tree,omitempty"`
	Snapshot   string    `json:"snapshot"`
	Time       time.Time `json:"time,omitempty"`
}

func (o *findObjectOutput) hit(sn *snapshot.Snapshot, h *maint.FindHit) error {
	if o.seen == nil {
		o.seen = map[crypto.ID]bool{}
	}
	if !o.seen[h.ID] {
		o.seen[h.ID] = true
		o.found = append(o.found, *h)
	}
	if o.json {
		j := findObjectJSON{ObjectType: h.ObjectType, ID: h.ID.String(), Path: h.Path, Snapshot: sn.ID.String(), Time: sn.Time}
		if h.ObjectType == "blob" {
			j.ParentTree = h.ParentTree.String()
		}
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		if o.started {
			o.w.WriteByte(',')
		} else {
			o.w.WriteByte('[')
			o.started = true
		}
		_, err = o.w.Write(b)
		return err
	}
	fmt.Fprintf(o.w, "Found %s %s\n", h.ObjectType, h.ID)
	if h.ObjectType == "blob" {
		fmt.Fprintf(o.w, " ... in file %s\n     (tree %s)\n", h.Path, h.ParentTree)
	} else {
		fmt.Fprintf(o.w, " ... path %s\n", h.Path)
	}
	_, err := fmt.Fprintf(o.w, " ... in snapshot %s (%s)\n", sn.ID.Short(), sn.Time.Local().Format("2006-01-02 15:04:05"))
	return err
}

func (o *findObjectOutput) finish() error {
	if !o.json {
		return nil
	}
	if o.started {
		_, err := o.w.WriteString("]\n")
		return err
	}
	_, err := o.w.WriteString("[]\n")
	return err
}

// showPacks prints the pack of every object found, and of every full ID
// asked for that no snapshot holds (restic's --show-pack-id).
func (o *findObjectOutput) showPacks(r *repo.Repository, opts maint.FindOptions) {
	type obj struct {
		t  pack.BlobType
		id crypto.ID
	}
	var objs []obj
	for _, h := range o.found {
		t := pack.DataBlob
		if h.ObjectType == "tree" {
			t = pack.TreeBlob
		}
		objs = append(objs, obj{t, h.ID})
	}
	for _, l := range []struct {
		t   pack.BlobType
		ids []string
	}{{pack.DataBlob, opts.Blobs}, {pack.TreeBlob, opts.Trees}} {
		for _, s := range l.ids {
			if id, err := crypto.ParseID(strings.ToLower(s)); err == nil && !o.seen[id] {
				objs = append(objs, obj{l.t, id})
			}
		}
	}
	for _, x := range objs {
		pbs := r.Index().Lookup(x.t, x.id)
		if len(pbs) == 0 {
			fmt.Fprintf(o.w, "Object %s not found in the index\n", x.id.Short())
			continue
		}
		pb := pbs[0]
		fmt.Fprintf(o.w, "Object belongs to pack %s\n ... Pack %s: <Blob (%s) %s, offset %d, length %d, uncompressed length %d>\n",
			pb.PackID, pb.PackID.Short(), pb.Type, pb.ID.Short(), pb.Offset, pb.Length, pb.PlainLength)
	}
}
