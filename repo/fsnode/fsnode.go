// Package fsnode translates between the file system and tree.Node: it
// captures the metadata of a file (Reader.Node) and puts it back on a
// restored one (CreateSpecial, Apply). It is Linux only.
//
// What is captured: type, mode (permission, setuid, setgid and sticky bits),
// owner as numbers and names, access, modification and change times to the
// nanosecond, size, allocated blocks, link count, inode, device, device
// number of device nodes, symlink target, and every extended attribute
// (user.*, trusted.*, security.* and the POSIX ACLs in system.*).
//
// What Apply cannot restore: the change time (ctime), which the kernel sets
// to the current time on every metadata change and which no system call can
// set; inode and device numbers, which belong to the file system.
package fsnode

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/tree"
)

// Bounds for extended attributes (the Linux limits XATTR_LIST_MAX and
// XATTR_SIZE_MAX).
const (
	maxXattrList  = 64 << 10
	maxXattrValue = 64 << 10
)

// Reader captures node metadata. It caches uid and gid to name lookups and
// is safe for concurrent use.
type Reader struct {
	mu     sync.Mutex
	users  map[uint32]string
	groups map[uint32]string
}

// NewReader returns a Reader with empty name caches.
func NewReader() *Reader {
	return &Reader{users: map[uint32]string{}, groups: map[uint32]string{}}
}

// userName returns the name of uid, or "" when it has none.
func (r *Reader) userName(uid uint32) string {
	return r.name(r.users, uid, func(id string) string {
		if u, err := user.LookupId(id); err == nil {
			return u.Username
		}
		return ""
	})
}

// groupName returns the name of gid, or "" when it has none.
func (r *Reader) groupName(gid uint32) string {
	return r.name(r.groups, gid, func(id string) string {
		if g, err := user.LookupGroupId(id); err == nil {
			return g.Name
		}
		return ""
	})
}

// name returns the name of id from cache, or looks it up (lookup gets id
// in decimal and returns "" for an id without a name) and remembers it.
func (r *Reader) name(cache map[uint32]string, id uint32, lookup func(id string) string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := cache[id]; ok {
		return n
	}
	n := lookup(strconv.FormatUint(uint64(id), 10))
	cache[id] = n
	return n
}

func tsTime(ts syscall.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec) }

// Node returns the node for the file at path, which the caller has lstat'ed
// as fi, without Content or Subtree. Its name is filepath.Base(path).
//
// warn reports a problem that leaves the node usable, such as extended
// attributes that could not be read; err means there is no node (the file
// vanished, fi carries no stat data, a symlink could not be read).
func (r *Reader) Node(path string, fi os.FileInfo) (n *tree.Node, warn error, err error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, nil, fmt.Errorf("%s: no stat data", path)
	}
	n = &tree.Node{
		Name:       filepath.Base(path),
		Mode:       fileMode(st.Mode),
		UID:        st.Uid,
		GID:        st.Gid,
		User:       r.userName(st.Uid),
		Group:      r.groupName(st.Gid),
		ModTime:    tsTime(st.Mtim),
		AccessTime: tsTime(st.Atim),
		ChangeTime: tsTime(st.Ctim),
		Blocks:     uint64(st.Blocks),
		Links:      uint64(st.Nlink),
		Inode:      st.Ino,
		DeviceID:   st.Dev,
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		n.Type = tree.File
		n.Size = uint64(st.Size)
	case syscall.S_IFDIR:
		n.Type = tree.Dir
	case syscall.S_IFLNK:
		n.Type = tree.Symlink
		target, err := readlink(path, st.Size)
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
	n.Xattrs, warn = ReadXattrs(path)
	return n, warn, nil
}

// fileMode converts st_mode to an os.FileMode the way package os does.
func fileMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFBLK:
		mode |= os.ModeDevice
	case syscall.S_IFCHR:
		mode |= os.ModeDevice | os.ModeCharDevice
	case syscall.S_IFDIR:
		mode |= os.ModeDir
	case syscall.S_IFIFO:
		mode |= os.ModeNamedPipe
	case syscall.S_IFLNK:
		mode |= os.ModeSymlink
	case syscall.S_IFSOCK:
		mode |= os.ModeSocket
	case syscall.S_IFREG:
	default:
		mode |= os.ModeIrregular
	}
	for _, b := range specialBits {
		if m&b.unix != 0 {
			mode |= b.mode
		}
	}
	return mode
}

// specialBits pairs the setuid, setgid and sticky bits of stat(2) with
// those of a Go file mode.
var specialBits = [...]struct {
	unix uint32
	mode os.FileMode
}{
	{unix.S_ISUID, os.ModeSetuid},
	{unix.S_ISGID, os.ModeSetgid},
	{unix.S_ISVTX, os.ModeSticky},
}

// readlink reads a symlink target as raw bytes; size is the lstat size, a
// hint only (some file systems report 0).
func readlink(path string, size int64) (string, error) {
	n := int(size) + 1
	if n < 128 || n > unix.PathMax+1 {
		n = 128
	}
	for {
		buf := make([]byte, n)
		got, err := unix.Readlink(path, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlink", Path: path, Err: err}
		}
		if got < n {
			return string(buf[:got]), nil
		}
		if n > unix.PathMax {
			return "", &os.PathError{Op: "readlink", Path: path, Err: unix.ENAMETOOLONG}
		}
		n *= 2
	}
}

// ReadXattrs returns all extended attributes of path, not following a
// symlink, sorted by name. A file system without xattr support yields none.
// Attributes that cannot be read are left out and reported in the error,
// next to those that could.
func ReadXattrs(path string) ([]tree.Xattr, error) {
	names, err := listXattrs(path)
	if err != nil {
		return nil, err
	}
	var out []tree.Xattr
	var errs []error
	for _, name := range names {
		v, err := getXattr(path, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since it was listed
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("xattr %q: %w", name, err))
			continue
		}
		out = append(out, tree.Xattr{Name: name, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

func unsupported(err error) bool {
	return errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)
}

// listXattrs returns the names of the attributes of path.
func listXattrs(path string) ([]string, error) {
	for try := 0; ; try++ {
		size, err := unix.Llistxattr(path, nil)
		if unsupported(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		if size == 0 {
			return nil, nil
		}
		if size > maxXattrList {
			return nil, fmt.Errorf("list xattrs: %d bytes of names", size)
		}
		buf := make([]byte, size)
		size, err = unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) && try < 3 {
			continue // grew in between
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		return splitNul(buf[:size]), nil
	}
}

// getXattr returns one attribute value.
func getXattr(path, name string) ([]byte, error) {
	for try := 0; ; try++ {
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, err
		}
		if size > maxXattrValue {
			return nil, fmt.Errorf("value of %d bytes", size)
		}
		buf := make([]byte, size)
		if size == 0 {
			return buf, nil
		}
		size, err = unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) && try < 3 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:size], nil
	}
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
	if start < len(b) {
		out = append(out, string(b[start:]))
	}
	return out
}

// CreateSpecial creates the symlink, device node, fifo or socket n at path
// (which must not exist) with mode 0600; Apply sets the real mode later.
// Device nodes and sockets need root.
func CreateSpecial(path string, n *tree.Node) error {
	var err error
	switch n.Type {
	case tree.Symlink:
		err = unix.Symlink(n.LinkTarget, path)
	case tree.Dev:
		err = unix.Mknod(path, unix.S_IFBLK|0o600, int(n.Rdev))
	case tree.CharDev:
		err = unix.Mknod(path, unix.S_IFCHR|0o600, int(n.Rdev))
	case tree.FIFO:
		err = unix.Mkfifo(path, 0o600)
	case tree.Socket:
		err = unix.Mknod(path, unix.S_IFSOCK|0o600, 0)
	default:
		return fmt.Errorf("%s: cannot create a node of type %q", path, n.Type)
	}
	if err != nil {
		return &os.PathError{Op: "create " + string(n.Type), Path: path, Err: err}
	}
	return nil
}

// ApplyOptions select what Apply restores.
type ApplyOptions struct {
	// Owner restores the owner and group (needs root, or CAP_CHOWN).
	Owner bool
	// ByName maps the stored user and group names to this system's ids
	// and uses the stored numbers only for names that do not exist here.
	ByName bool
	// IDs caches name lookups for ByName across calls; nil looks every
	// name up again.
	IDs *IDMap
}

// IDMap caches user and group name to id lookups. The zero value is ready
// to use and it is safe for concurrent use.
type IDMap struct {
	mu     sync.Mutex
	users  map[string]idResult
	groups map[string]idResult
}

type idResult struct {
	id uint32
	ok bool
}

// UID returns the id of the user name on this system.
func (m *IDMap) UID(name string) (uint32, bool) {
	return m.lookup(false, name, func(s string) (string, error) {
		u, err := user.Lookup(s)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	})
}

// GID returns the id of the group name on this system.
func (m *IDMap) GID(name string) (uint32, bool) {
	return m.lookup(true, name, func(s string) (string, error) {
		g, err := user.LookupGroup(s)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	})
}

// lookup finds name with find, through the cache unless m is nil.
func (m *IDMap) lookup(group bool, name string, find func(string) (string, error)) (uint32, bool) {
	if name == "" {
		return 0, false
	}
	var cache *map[string]idResult
	if m != nil {
		cache = &m.users
		if group {
			cache = &m.groups
		}
		m.mu.Lock()
		r, ok := (*cache)[name]
		m.mu.Unlock()
		if ok {
			return r.id, r.ok
		}
	}
	var r idResult
	if s, err := find(name); err == nil {
		if v, err := strconv.ParseUint(s, 10, 32); err == nil {
			r = idResult{uint32(v), true}
		}
	}
	if m != nil {
		m.mu.Lock()
		if *cache == nil {
			*cache = map[string]idResult{}
		}
		(*cache)[name] = r
		m.mu.Unlock()
	}
	return r.id, r.ok
}

// Apply sets the metadata of n on the existing file at path, in this
// order: owner (only with opts.Owner), mode (not on symlinks, which have
// none; after chown, which clears setuid and setgid bits), extended
// attributes (after chown, which drops security.capability), and access and
// modification times last with nanosecond precision, since every other
// change touches them. The change time cannot be set by any system call and
// ends up as the time of the restore. A symlink is never followed.
//
// warn collects the extended attributes that could not be set (a target
// file system without xattr support, a trusted.* name as non-root); the
// node is restored otherwise. err reports owner, mode or times that could
// not be set.
func Apply(path string, n *tree.Node, opts ApplyOptions) (warn error, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	isLink := fi.Mode()&os.ModeSymlink != 0
	if isLink != (n.Type == tree.Symlink) {
		return nil, fmt.Errorf("%s: is a %v, the node a %s", path, fi.Mode().Type(), n.Type)
	}
	var errs, warns []error
	uid, gid := n.UID, n.GID
	if opts.Owner && opts.ByName {
		if id, ok := opts.IDs.UID(n.User); ok {
			uid = id
		}
		if id, ok := opts.IDs.GID(n.Group); ok {
			gid = id
		}
	}
	var notes []string
	if opts.Owner {
		if uid == noID || gid == noID {
			// chown(2) reads -1 as "leave unchanged": the file would
			// keep the restoring user (root) as its owner.
			notes = append(notes, fmt.Sprintf("owner %d:%d not set (%d is no id: chown leaves such an id unchanged)", uid, gid, uint32(noID)))
		} else if err := os.Lchown(path, int(uid), int(gid)); err != nil {
			errs = append(errs, err)
		}
	}
	if !isLink {
		mode := unixMode(n.Mode)
		if mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			var note string
			mode, note = ownedSpecialBits(path, mode, uid, gid)
			if note != "" {
				notes = append(notes, note)
			}
		}
		if err := unix.Chmod(path, mode); err != nil {
			errs = append(errs, &os.PathError{Op: "chmod", Path: path, Err: err})
		}
	}
	if len(notes) > 0 {
		warns = append(warns, fmt.Errorf("%s: %s", path, strings.Join(notes, "; ")))
	}
	for _, x := range n.Xattrs {
		if err := unix.Lsetxattr(path, x.Name, x.Value, 0); err != nil {
			warns = append(warns, fmt.Errorf("%s: set xattr %q: %w", path, x.Name, err))
		}
	}
	ts := []unix.Timespec{timespec(n.AccessTime), timespec(n.ModTime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		errs = append(errs, &os.PathError{Op: "utimensat", Path: path, Err: err})
	}
	return errors.Join(warns...), errors.Join(errs...)
}

// noID is (uid_t)-1, which chown(2) reads as "leave unchanged".
const noID = 1<<32 - 1

// ownedSpecialBits returns mode without the setuid bit unless the file at
// path is owned by uid, and without the setgid bit unless its group is
// gid, with a note of what it dropped: a restore must not make a
// set-id file whose owner it could not set as stored (chown failed, was
// skipped as non-root, or was refused for noID), or a root-owned setuid
// file would come out of a snapshot that never had one.
func ownedSpecialBits(path string, mode, uid, gid uint32) (uint32, string) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return mode &^ (unix.S_ISUID | unix.S_ISGID), "setuid and setgid bits dropped (owner unknown)"
	}
	var dropped []string
	if mode&unix.S_ISUID != 0 && st.Uid != uid {
		mode &^= unix.S_ISUID
		dropped = append(dropped, "setuid")
	}
	if mode&unix.S_ISGID != 0 && st.Gid != gid {
		mode &^= unix.S_ISGID
		dropped = append(dropped, "setgid")
	}
	if len(dropped) == 0 {
		return mode, ""
	}
	return mode, fmt.Sprintf("%s dropped: the owner is %d:%d, not %d:%d as stored", strings.Join(dropped, " and "), st.Uid, st.Gid, uid, gid)
}

// timespec converts t without the range limit of UnixNano; the zero time
// is the epoch (that is how trees store it).
func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{}
	}
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// unixMode returns the chmod(2) bits of a Go file mode: permissions,
// setuid, setgid and sticky.
func unixMode(m os.FileMode) uint32 {
	mode := uint32(m.Perm())
	for _, b := range specialBits {
		if m&b.mode != 0 {
			mode |= b.unix
		}
	}
	return mode
}

// UnixMode returns the permission, setuid, setgid and sticky bits of a Go
// file mode in their st_mode (and tar) encoding.
func UnixMode(m os.FileMode) uint32 { return unixMode(m) }

// FileMode converts an st_mode (type bits and chmod bits, as stat(2) and
// tar headers with the type added have them) to a Go file mode.
func FileMode(m uint32) os.FileMode { return fileMode(m) }
