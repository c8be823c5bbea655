package backend

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// The optional capabilities of a backend. The Backend interface is what
// every storage can do; these small interfaces are what only some can, and
// the layers above use them as fast paths when they are there. They are
// declared here, once, and found with As, never with a type assertion on
// the backend a caller holds: that backend may be a decorator (retry, limit,
// fault, disk cache) around the one that has the capability.

// Unwrapper is implemented by every decorator: a Backend that wraps
// another returns it, so that As can find a capability through any chain of
// decorators.
type Unwrapper interface {
	Unwrap() Backend
}

// As returns the first backend in the chain be, be.Unwrap(),
// be.Unwrap().Unwrap(), ... that implements T. A decorator that must see
// the calls of a capability (to count, limit or fail them) implements T
// itself, and As finds it first.
func As[T any](be Backend) (T, bool) {
	for be != nil {
		if c, ok := be.(T); ok {
			return c, true
		}
		u, ok := be.(Unwrapper)
		if !ok {
			break
		}
		be = u.Unwrap()
	}
	var zero T
	return zero, false
}

// Stager is implemented by backends on local disk: a file is written to a
// temporary file inside the repository (CreateTemp) and published by a
// rename (SaveTemp), so its bytes are written once and never copied.
type Stager interface {
	// CreateTemp creates an empty temporary file for a file of type t.
	CreateTemp(ctx context.Context, t FileType) (*os.File, error)
	// SaveTemp syncs f, publishes it under h and closes it; f is gone
	// afterwards whatever happens.
	SaveTemp(ctx context.Context, h Handle, f *os.File) error
}

// ConcurrentSaver is implemented by backends that want more files saved at
// once than a backup's packer saves by default: a single save of theirs
// is slow against the link (rclone relaying each file to cloud storage),
// so only several in flight keep it busy.
type ConcurrentSaver interface {
	// SaveConcurrency is how many saves should run at once (at least 1).
	SaveConcurrency() int
}

// RangeLoader is implemented by backends that read a range into a caller's
// buffer, or, for a read around the page cache that needs alignment, into a
// part of it: the returned slice holds the range and lies inside buf when
// buf has RangeSlack bytes of room beyond length.
type RangeLoader interface {
	LoadRange(ctx context.Context, h Handle, offset int64, length int, buf []byte) ([]byte, error)
}

// RangeSlack is the room a buffer for LoadRange needs beyond the range: a
// read around the page cache widens it to 4096-byte boundaries.
const RangeSlack = 2 * 4096

// IntoLoader is implemented by backends that read exactly len(buf) bytes at
// offset into buf without allocating.
type IntoLoader interface {
	LoadInto(ctx context.Context, h Handle, offset int64, buf []byte) error
}

// Prefetcher is implemented by backends that can start reading a whole file
// in the background (on local disk: a hint to the kernel's page cache), so
// that later loads of its parts find it in memory.
type Prefetcher interface {
	Prefetch(ctx context.Context, h Handle)
}

// UncachedLoader is implemented by backends that can read a whole file
// around the operating system's cache, into buf's storage where it fits:
// a check of stored data must see what the disk holds.
type UncachedLoader interface {
	LoadUncached(ctx context.Context, h Handle, buf []byte) ([]byte, error)
}

// TempCleaner is implemented by backends that keep temporary files of
// uploads in progress; RemoveStaleTemp removes those older than age (left
// by a killed process) and returns how many it removed.
type TempCleaner interface {
	RemoveStaleTemp(ctx context.Context, age time.Duration) (int, error)
}

// TempMarker is part of the name of every temporary file a backend keeps
// beside the repository's files; no repository file has it in its name.
const TempMarker = "-tmp-"

// Validate refuses handles that do not name a file of the repository
// layout: an unknown type, a config handle with a name, or a name that is
// empty, too long, hidden, holds a path separator, NUL, URL syntax or the
// temporary-file marker. Backends call it before they turn a handle into a
// path, a URL or a key, so a hostile name never reaches the storage.
func (h Handle) Validate() error {
	if !h.Type.Valid() {
		return fmt.Errorf("invalid file type %q: %w", h.Type, fs.ErrInvalid)
	}
	if h.Type == ConfigFile {
		if h.Name != "" {
			return fmt.Errorf("invalid handle %q: config has no name: %w", h.Name, fs.ErrInvalid)
		}
		return nil
	}
	if !ValidName(h.Name) || (h.Type == PackFile && len(h.Name) < 2) {
		return fmt.Errorf("invalid %s file name %q: %w", h.Type, h.Name, fs.ErrInvalid)
	}
	return nil
}

// ValidName reports whether name may be the name of a repository file: a
// single visible path element without NUL, URL syntax (?, #, %) or the
// temporary-file marker.
func ValidName(name string) bool {
	return name != "" && len(name) <= 255 && !strings.HasPrefix(name, ".") &&
		!strings.ContainsAny(name, "/\\\x00?#%") && !strings.Contains(name, TempMarker)
}

// Valid reports whether t is one of the file types of a repository.
func (t FileType) Valid() bool {
	for _, v := range AllFileTypes {
		if t == v {
			return true
		}
	}
	return false
}

// Local is a backend with every capability of a local disk.
type Local interface {
	Backend
	Stager
	RangeLoader
	IntoLoader
	Prefetcher
	UncachedLoader
	TempCleaner
}

// LocalCapabilities are a local disk's capabilities as found beneath a
// backend with As. A decorator that keeps them while it wraps the calls
// that move data (a connection limit, a rate limit) embeds them and
// overrides those calls.
type LocalCapabilities struct {
	Stager   Stager
	Ranger   RangeLoader
	Into     IntoLoader
	Pre      Prefetcher
	Uncached UncachedLoader
	Cleaner  TempCleaner
}

// FindLocalCapabilities returns the capabilities beneath be; complete
// reports whether be has every one of them.
func FindLocalCapabilities(be Backend) (c LocalCapabilities, complete bool) {
	var ok [6]bool
	c.Stager, ok[0] = As[Stager](be)
	c.Ranger, ok[1] = As[RangeLoader](be)
	c.Into, ok[2] = As[IntoLoader](be)
	c.Pre, ok[3] = As[Prefetcher](be)
	c.Uncached, ok[4] = As[UncachedLoader](be)
	c.Cleaner, ok[5] = As[TempCleaner](be)
	return c, ok == [6]bool{true, true, true, true, true, true}
}

// TreePackLoader is implemented by the on-disk cache of a remote
// repository: it reads a range of a pack that holds trees from its local
// copy of the whole pack, fetching the pack once.
type TreePackLoader interface {
	LoadTreePack(ctx context.Context, h Handle, offset int64, length int) ([]byte, error)
}

// IDReceiver is implemented by decorators that need the repository's id,
// which only the encrypted config holds (the on-disk cache keeps its files
// in a directory named by it); the repository announces it once opened.
type IDReceiver interface {
	SetRepositoryID(id string)
}
