// Package backend defines the storage seam of dj: a Backend stores the
// write-once files of a repository (config, keys, packs, indexes, snapshots,
// locks) and reads them back, whole or by range. Implementations live in the
// sub-packages (local, mem, sftp, s3, rest); nothing here knows about
// encryption or the repository format.
package backend

import (
	"context"
	"fmt"
	"time"
)

// FileType is the kind of a repository file; its value is the directory the
// files of that kind live in.
type FileType string

// The file types of a repository.
const (
	ConfigFile   FileType = "config"
	KeyFile      FileType = "keys"
	PackFile     FileType = "data"
	IndexFile    FileType = "index"
	SnapshotFile FileType = "snapshots"
	LockFile     FileType = "locks"
)

// AllFileTypes lists every file type, in the order a repository is laid out.
var AllFileTypes = []FileType{ConfigFile, KeyFile, PackFile, IndexFile, SnapshotFile, LockFile}

// Handle names one file in a repository. Name is empty for ConfigFile.
type Handle struct {
	Type FileType
	Name string
}

// String returns the handle as a repository-relative path.
func (h Handle) String() string {
	if h.Type == ConfigFile {
		return "config"
	}
	if h.Type == PackFile && len(h.Name) >= 2 {
		return fmt.Sprintf("data/%s/%s", h.Name[:2], h.Name)
	}
	return string(h.Type) + "/" + h.Name
}

// FileInfo describes a stored file.
type FileInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Backend stores and loads repository files. All methods are safe for
// concurrent use.
//
// Errors for a file that does not exist satisfy errors.Is(err,
// fs.ErrNotExist); a Load past the end of a file returns an error that
// satisfies errors.Is(err, io.ErrUnexpectedEOF).
type Backend interface {
	// Location describes where the repository is, for messages.
	Location() string
	// Save stores data under h. The file appears whole or not at all
	// (atomic where the storage allows it) and is durable when Save returns.
	// Saving over an existing file replaces it.
	Save(ctx context.Context, h Handle, data []byte) error
	// Load reads length bytes starting at offset. Length 0 reads to the end.
	Load(ctx context.Context, h Handle, offset int64, length int) ([]byte, error)
	// Stat returns the size and modification time of a file.
	Stat(ctx context.Context, h Handle) (FileInfo, error)
	// List calls fn for every file of type t, in no particular order.
	// An error returned by fn stops the listing and is returned.
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error
	// Remove deletes a file. Removing a missing file is an error that
	// satisfies errors.Is(err, fs.ErrNotExist).
	Remove(ctx context.Context, h Handle) error
	// Close releases connections and other resources.
	Close() error
}
