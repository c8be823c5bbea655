package fusefs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// The kernel keeps every entry it has looked up (its dentry and inode) until
// memory pressure evicts it, and go-fuse keeps an inode for each as long as
// the kernel does: about 1 KiB of this process a file (go-fuse's inode, the
// node, its tree.Node). A walk that stats every file of a big snapshot
// (rsync, find -ls, ls -laR, du) grew the mount by a gigabyte a million
// files, whatever --cache-size said. entryBudget bounds that: past its
// limit, the oldest looked-up entries are invalidated
// (FUSE_NOTIFY_INVAL_ENTRY), the kernel drops those no process holds and
// forgets their inodes, and a later access looks them up again (the
// snapshot never changes, so nothing is lost but one LOOKUP).
//
// Only files, symlinks and special files are counted: a directory's inode
// stays while the kernel wants it (a process's working directory, a
// directory being listed), and directories are few beside their entries.

// Bounds of the entry budget: inodeCost is about what one looked-up entry
// costs this process; the budget is an eighth of the cache size in entries,
// and at least minEntries.
const (
	inodeCost  = 1 << 10
	minEntries = 1 << 14
)

// entriesFor returns the entry budget for a mount of cache size cacheSize.
func entriesFor(cacheSize int64) int {
	return max(int(cacheSize/8/inodeCost), minEntries)
}

// entryRef names one looked-up entry: the directory inode it is in and its
// name there.
type entryRef struct {
	parent *fs.Inode
	name   string
}

// entryBudget remembers the looked-up entries in the order they came and
// invalidates the oldest past its limit, from a goroutine of its own: a
// notification must not be written from a request handler (the kernel
// takes the directory's lock for it, which a LOOKUP in flight there holds).
type entryBudget struct {
	limit int
	// invalidate tells the kernel to drop an entry; parent.NotifyEntry,
	// replaced by tests.
	invalidate func(e entryRef) syscall.Errno

	mu      sync.Mutex
	queue   []entryRef // oldest first, from head
	head    int
	dropped uint64 // entries invalidated
	wake    chan struct{}
}

func newEntryBudget(limit int) *entryBudget {
	return &entryBudget{
		limit:      limit,
		invalidate: func(e entryRef) syscall.Errno { return e.parent.NotifyEntry(e.name) },
		wake:       make(chan struct{}, 1),
	}
}

// add records that the kernel was given the entry name in parent. It never
// blocks on the kernel.
func (b *entryBudget) add(parent *fs.Inode, name string) {
	b.mu.Lock()
	b.queue = append(b.queue, entryRef{parent, name})
	over := len(b.queue)-b.head > b.limit
	b.mu.Unlock()
	if over {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// run invalidates the entries past the limit, oldest first, until ctx ends.
func (b *entryBudget) run(ctx context.Context) {
	var batch []entryRef
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		for {
			batch = b.takeOldest(batch[:0], 256)
			if len(batch) == 0 {
				break
			}
			for _, e := range batch {
				if ctx.Err() != nil {
					return
				}
				// An entry the kernel no longer has, or a directory it
				// forgot meanwhile, answers ENOENT: nothing to drop.
				_ = b.invalidate(e)
			}
			clear(batch) // the names and inodes are not kept alive here
		}
	}
}

// takeOldest appends to batch up to n of the entries past the limit and
// removes them from the queue.
func (b *entryBudget) takeOldest(batch []entryRef, n int) []entryRef {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := min(len(b.queue)-b.head-b.limit, n)
	if k <= 0 {
		return batch
	}
	batch = append(batch, b.queue[b.head:b.head+k]...)
	clear(b.queue[b.head : b.head+k])
	b.head += k
	b.dropped += uint64(k)
	// Reuse the front of the slice once half of it is spent.
	if b.head > len(b.queue)/2 {
		n := copy(b.queue, b.queue[b.head:])
		clear(b.queue[n:])
		b.queue, b.head = b.queue[:n], 0
	}
	return batch
}

// stats returns the entries remembered and those invalidated so far.
func (b *entryBudget) stats() (held int, dropped uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue) - b.head, b.dropped
}
