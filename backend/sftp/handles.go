// Pack files kept open across ranged loads.

package sftp

import (
	"container/list"
	"io"
	"io/fs"
	"sync"
)

// packFile is an open file on the server (a *sftp.File).
type packFile interface {
	io.ReaderAt
	io.Closer
	Stat() (fs.FileInfo, error)
}

// maxOpenPacks bounds the pack files one connection keeps open between
// loads. A ranged load of a pack costs an open, a read and a close; with
// the pack already open it costs the read alone, one round trip instead
// of two (a restore of small files, the mount and check load one pack's
// blobs in many small reads). OpenSSH's sftp-server holds a file
// descriptor per open handle.
const maxOpenPacks = 32

// openPacks holds one connection's open pack files, shared by the loads
// that run at once on it; those no load uses are closed least recently
// used first beyond maxOpenPacks. Packs are never changed once written,
// so a handle stays good until the file is removed or replaced, and the
// backend forgets it (forget) before and after it does either.
type openPacks struct {
	mu    sync.Mutex
	files map[string]*openPack
	idle  list.List // of *openPack no load uses, most recently used first
	// closeFile closes a handle the cache let go, without waiting for
	// the answer.
	closeFile func(packFile)
}

// openPack is one pack file, open or being opened.
type openPack struct {
	path  string
	ready chan struct{} // closed when the open has been answered
	f     packFile      // valid after ready, nil when the open failed
	err   error         // the open's error, after ready
	refs  int           // loads using it
	gone  bool          // forgotten: closed when the last load is done
	elem  *list.Element // in idle while refs is 0
}

func newOpenPacks(closeFile func(packFile)) *openPacks {
	return &openPacks{files: map[string]*openPack{}, closeFile: closeFile}
}

// get returns p's open handle, opening it with open when no load has it
// open; loads that ask for a pack while it is being opened wait for that
// open. Every get that returns without an error must be followed by a
// put.
func (o *openPacks) get(p string, open func() (packFile, error)) (*openPack, error) {
	o.mu.Lock()
	h := o.files[p]
	if h != nil {
		h.refs++
		if h.elem != nil {
			o.idle.Remove(h.elem)
			h.elem = nil
		}
		o.mu.Unlock()
		<-h.ready
		if h.err != nil {
			o.put(h)
			return nil, h.err
		}
		return h, nil
	}
	h = &openPack{path: p, ready: make(chan struct{}), refs: 1}
	o.files[p] = h
	o.mu.Unlock()
	h.f, h.err = open()
	if h.err != nil {
		h.f = nil // not a nil *sftp.File in a non-nil interface
		o.mu.Lock()
		if o.files[p] == h {
			delete(o.files, p)
		}
		o.mu.Unlock()
	}
	close(h.ready)
	if h.err != nil {
		o.put(h)
		return nil, h.err
	}
	return h, nil
}

// put ends a load's use of h.
func (o *openPacks) put(h *openPack) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h.refs--
	if h.refs > 0 {
		return
	}
	if h.gone || h.err != nil {
		o.release(h)
		return
	}
	h.elem = o.idle.PushFront(h)
	for len(o.files) > maxOpenPacks && o.idle.Len() > 0 {
		old := o.idle.Remove(o.idle.Back()).(*openPack)
		old.elem = nil
		delete(o.files, old.path)
		o.release(old)
	}
}

// forget drops p: a handle no load uses is closed, one in use is closed
// when its last load is done, and the next load opens p again. It
// reports whether p was open.
func (o *openPacks) forget(p string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	h := o.files[p]
	if h == nil {
		return false
	}
	delete(o.files, p)
	h.gone = true
	if h.refs == 0 {
		if h.elem != nil {
			o.idle.Remove(h.elem)
			h.elem = nil
		}
		o.release(h)
	}
	return true
}

// release closes h's file, if it was opened. o.mu is held.
func (o *openPacks) release(h *openPack) {
	if h.f != nil {
		o.closeFile(h.f)
		h.f = nil
	}
}
