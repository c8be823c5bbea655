//go:build linux

package fusefs

import (
	"context"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Which entries of a READDIRPLUS reply carry attributes.
//
// An entry with attributes becomes an inode in the kernel and in this
// process: on a cold `find` of the bench's Go tree (16,703 entries) that
// work, about 11 µs an entry on both sides of the request, was two thirds
// of the time. A walker that never stats what it lists (find, ls -f, fd)
// needs only names and types; one that stats everything (ls -l, du, tar,
// cp -a, rsync) would instead pay a LOOKUP round trip per entry for what
// the reply left out. The kernel cannot tell them apart when it asks (it
// asks READDIRPLUS for the first entries of every directory), so the mount
// learns it per calling thread, from what the thread does:
//
//   - A thread not yet known gets attributes for every entry but one file,
//     the probe, which goes out with its name and type alone (node id 0).
//   - A thread that looks up a file (anything but a directory) stats what
//     it lists: from then on its listings carry every entry's attributes.
//     A stat-ing walker looks up the probe of the first directory whose
//     files it stats, so it pays one round trip more, once.
//   - A thread that has listed probeDirs directories with probes without
//     looking up a single file lists names only: its listings leave out the
//     attributes of files (directories keep theirs: a walker descends into
//     them, and each would otherwise cost a LOOKUP). Should it look up a
//     file after all, it counts as stat-ing again.
//
// Directories larger than plusEntries are listed with names alone whoever
// asks (dir.go). Wrong guesses cost only round trips, never results: an
// entry without attributes is looked up when it is used.
type listingPolicy struct {
	mu      sync.Mutex
	callers map[uint32]*caller
}

// probeDirs is how many directories a thread lists, each with a probe no
// one looked up, before its listings carry names alone.
const probeDirs = 4

// maxCallers bounds the threads remembered; past it the memory starts
// afresh (a forgotten thread is simply unknown again).
const maxCallers = 4096

// listMode is what a thread's listings carry.
type listMode uint8

const (
	listUnknown listMode = iota // every entry's attributes but a probe's
	listStats                   // every entry's attributes
	listNames                   // directories' attributes, files' names only
)

type caller struct {
	mode listMode
	// probed counts the directories listed with a probe since the thread
	// last looked up a file; lastDir is the last of them (the kernel lists
	// a large directory in several requests, each with a probe).
	probed  int
	lastDir uint64
}

func newListingPolicy() *listingPolicy {
	return &listingPolicy{callers: map[uint32]*caller{}}
}

// callerPid returns the thread a request came from, or 0.
func callerPid(ctx context.Context) uint32 {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Pid
	}
	return 0
}

// mode returns what a listing for pid carries. Requests without a thread
// (pid 0) get every entry's attributes.
func (p *listingPolicy) mode(pid uint32) listMode {
	if pid == 0 {
		return listStats
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.callers[pid]; c != nil {
		return c.mode
	}
	return listUnknown
}

// probe records that a listing of directory dir for pid left out the
// attributes of one file.
func (p *listingPolicy) probe(pid uint32, dir uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.get(pid)
	if c.mode != listUnknown || c.lastDir == dir {
		return
	}
	c.lastDir = dir
	c.probed++
	if c.probed >= probeDirs {
		c.mode = listNames
	}
}

// lookedUp records that pid looked up a file: it stats what it lists.
func (p *listingPolicy) lookedUp(pid uint32) {
	if pid == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.get(pid)
	c.mode, c.probed, c.lastDir = listStats, 0, 0
}

// get returns pid's record, made if need be; p.mu is held.
func (p *listingPolicy) get(pid uint32) *caller {
	c := p.callers[pid]
	if c == nil {
		if len(p.callers) >= maxCallers {
			clear(p.callers)
		}
		c = &caller{}
		p.callers[pid] = c
	}
	return c
}
