package archiver

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/tree"
)

// metaReader captures node metadata from the file system; it caches
// uid/gid to name lookups.
type metaReader struct {
	mu     sync.Mutex
	users  map[uint32]string
	groups map[uint32]string
}

func newMetaReader() *metaReader {
	return &metaReader{users: map[uint32]string{}, groups: map[uint32]string{}}
}

func (m *metaReader) userName(uid uint32) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n, ok := m.users[uid]; ok {
		return n
	}
	n := ""
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		n = u.Username
	}
	m.users[uid] = n
	return n
}

func (m *metaReader) groupName(gid uint32) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n, ok := m.groups[gid]; ok {
		return n
	}
	n := ""
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		n = g.Name
	}
	m.groups[gid] = n
	return n
}

func tsTime(ts syscall.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec) }

// Node returns the node for path (lstat'ed as fi) without content. warn is
// a problem that leaves the node usable (xattrs that could not be read).
func (m *metaReader) Node(path string, fi os.FileInfo) (*tree.Node, error, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, nil, fmt.Errorf("%s: no stat data", path)
	}
	n := &tree.Node{
		Name: filepath.Base(path), Mode: fi.Mode(), UID: st.Uid, GID: st.Gid,
		User: m.userName(st.Uid), Group: m.groupName(st.Gid),
		ModTime: tsTime(st.Mtim), AccessTime: tsTime(st.Atim), ChangeTime: tsTime(st.Ctim),
		Blocks: uint64(st.Blocks), Links: uint64(st.Nlink), Inode: st.Ino, DeviceID: st.Dev,
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		n.Type = tree.File
		n.Size = uint64(st.Size)
	case syscall.S_IFDIR:
		n.Type = tree.Dir
	case syscall.S_IFLNK:
		n.Type = tree.Symlink
		target, err := os.Readlink(path)
		if err != nil {
			return nil, nil, err
		}
		n.LinkTarget = target
	case syscall.S_IFBLK:
		n.Type = tree.Dev
		n.Rdev = st.Rdev
	case syscall.S_IFCHR:
		n.Type = tree.CharDev
		n.Rdev = st.Rdev
	case syscall.S_IFIFO:
		n.Type = tree.FIFO
	case syscall.S_IFSOCK:
		n.Type = tree.Socket
	default:
		n.Type = tree.Irregular
	}
	xs, warn := readXattrs(path)
	n.Xattrs = xs
	return n, warn, nil
}

// readXattrs reads all extended attributes of path without following a
// symlink, sorted by name.
func readXattrs(path string) ([]tree.Xattr, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
			return nil, nil
		}
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	var out []tree.Xattr
	var firstErr error
	for _, name := range splitNul(buf[:size]) {
		v, err := getXattr(path, name)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("xattr %s: %w", name, err)
			}
			continue
		}
		out = append(out, tree.Xattr{Name: name, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, firstErr
}

func getXattr(path, name string) ([]byte, error) {
	for size := 256; size <= 64<<10*16; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.E2BIG
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
