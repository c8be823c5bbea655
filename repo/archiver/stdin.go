package archiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"dj/repo/chunker"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// BackupReader backs up the stream r as one file named name at the root of
// a new snapshot (for `dj backup --stdin` and --stdin-from-command). When
// finish is not nil it is called after r is drained and before anything is
// written to the snapshot list; an error from it aborts the backup, so a
// failed dump never becomes a snapshot.
func BackupReader(ctx context.Context, repo Repository, r io.Reader, name string, finish func() error, opts Options) (*snapshot.Snapshot, error) {
	name = strings.Trim(name, "/")
	if err := tree.ValidName(name); err != nil {
		return nil, fmt.Errorf("stdin file name: %w", err)
	}
	a := newArchiver(repo, opts)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := a.startWorkers(ctx)
	stopProgress := a.startProgress()
	ch := chunker.NewWithSizes(nil, repo.Gear(), a.minSize, a.avgSize, a.maxSize)
	ids, size, err := a.chunkStream(ctx, ch, r)
	stop()
	stopProgress()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if finish != nil {
		if err := finish(); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	file := &tree.Node{Name: name, Type: tree.File, Mode: 0o644, UID: uid, GID: gid,
		ModTime: now, AccessTime: now, ChangeTime: now, Size: size, Blocks: (size + 511) / 512, Links: 1, Content: ids}
	a.files.Add(1)
	a.filesNew.Add(1)
	if opts.ItemDone != nil {
		opts.ItemDone(Item{Path: "/" + name, Action: ItemNew, Duration: time.Since(a.start), DataAdded: a.claimAdded(ids)})
	}
	root := &tree.Tree{Nodes: []*tree.Node{file}}
	id, err := a.saveTree(ctx, root)
	if err != nil {
		return nil, err
	}
	sn, err := a.finish(ctx, []string{"/" + name}, id)
	if err != nil && !errors.Is(err, ErrIncomplete) {
		return nil, err
	}
	return sn, err
}
