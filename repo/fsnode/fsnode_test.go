package fsnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"dj/repo/tree"
)

// entry describes one file of the round-trip test: how to create it in the
// source directory, which capability it needs, and its content.
type entry struct {
	name    string
	create  func(t *testing.T, p string) error // nil error or a skip reason
	content []byte
	mode    uint32 // chmod bits, 0 to leave alone
	uid     int
	xattrs  []tree.Xattr
}

var errSkip = errors.New("skip")

// aclXattr builds a POSIX ACL xattr value (the kernel's binary layout).
func aclXattr(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

const aclUndefined = 0xffffffff

func writeFile(content []byte) func(*testing.T, string) error {
	return func(t *testing.T, p string) error { return os.WriteFile(p, content, 0o644) }
}

func mknod(mode uint32, dev int) func(*testing.T, string) error {
	return func(t *testing.T, p string) error {
		err := unix.Mknod(p, mode, dev)
		if errors.Is(err, unix.EPERM) {
			return errSkip
		}
		return err
	}
}

func xattrsSupported(t *testing.T, dir string) bool {
	p := filepath.Join(dir, ".xattr-probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	err := unix.Setxattr(p, "user.probe", []byte("x"), 0)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// normalize clears what a restore cannot keep.
func normalize(n *tree.Node) tree.Node {
	c := *n
	c.Inode, c.DeviceID, c.ChangeTime = 0, 0, time.Time{}
	return c
}

func TestRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for chown, device nodes and sockets")
	}
	src, dst := t.TempDir(), t.TempDir()
	xattrs := xattrsSupported(t, src)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	longTarget := strings.Repeat("long/", 100) + "target"
	acl := aclXattr([3]uint32{0x01, 7, aclUndefined}, [3]uint32{0x02, 4, 1000},
		[3]uint32{0x04, 5, aclUndefined}, [3]uint32{0x10, 5, aclUndefined}, [3]uint32{0x20, 4, aclUndefined})
	entries := []entry{
		{name: "file", create: writeFile([]byte("hello\n")), mode: 0o640, uid: 1234},
		{name: "empty", create: writeFile(nil), mode: 0o600},
		{name: "setuid", create: writeFile([]byte("#!/bin/sh\n")), mode: 0o4755 | 0o2000, uid: 1001},
		{name: "dir", create: func(t *testing.T, p string) error { return os.Mkdir(p, 0o755) }, mode: 0o1777, uid: 7},
		{name: "dangling", create: func(t *testing.T, p string) error { return os.Symlink("does/not/exist", p) }, uid: 99},
		{name: "longlink", create: func(t *testing.T, p string) error { return os.Symlink(longTarget, p) }},
		{name: "fifo", create: func(t *testing.T, p string) error { return unix.Mkfifo(p, 0o600) }, mode: 0o620},
		{name: "null", create: mknod(unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))), mode: 0o666},
		{name: "blk", create: mknod(unix.S_IFBLK|0o660, int(unix.Mkdev(7, 200))), mode: 0o660},
		{name: "sock", create: mknod(unix.S_IFSOCK|0o755, 0), mode: 0o755},
		{name: "bad\xff\xfename", create: writeFile(big), mode: 0o644},
	}
	if xattrs {
		entries = append(entries,
			entry{name: "xattrs", create: writeFile(big), mode: 0o644, xattrs: []tree.Xattr{
				{Name: "user.a", Value: []byte("one")},
				{Name: "user.big", Value: bytes.Repeat([]byte{0, 1, 2, 0xff}, 400)},
				{Name: "user.empty", Value: []byte{}},
				{Name: "user.\xffraw", Value: []byte("raw name")},
			}},
			entry{name: "acl", create: func(t *testing.T, p string) error { return os.Mkdir(p, 0o755) }, mode: 0o755,
				xattrs: []tree.Xattr{{Name: "system.posix_acl_access", Value: acl}, {Name: "system.posix_acl_default", Value: acl}}},
		)
	} else {
		t.Log("no user xattrs on this file system; xattr cases skipped")
	}
	times := func(i int) []unix.Timespec {
		return []unix.Timespec{
			{Sec: 1_000_000_000 + int64(i), Nsec: 123_456_789 + int64(i)},
			{Sec: 981_173_106 + int64(i), Nsec: 987_654_321 - int64(i)},
		}
	}
	var made []entry
	for _, e := range entries {
		p := filepath.Join(src, e.name)
		if err := e.create(t, p); err != nil {
			if errors.Is(err, errSkip) {
				t.Logf("%q: mknod not permitted here, skipped", e.name)
				continue
			}
			t.Fatalf("create %q: %v", e.name, err)
		}
		var set []tree.Xattr
		for _, x := range e.xattrs {
			if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
				if strings.HasPrefix(x.Name, "system.") && (errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP)) {
					t.Logf("%q: no ACL support, skipped", e.name)
					continue
				}
				t.Fatalf("setxattr %q on %q: %v", x.Name, e.name, err)
			}
			set = append(set, x)
		}
		e.xattrs = set
		if err := os.Lchown(p, e.uid, e.uid+1); err != nil {
			t.Fatal(err)
		}
		if e.mode != 0 {
			if err := unix.Chmod(p, e.mode); err != nil {
				t.Fatal(err)
			}
		}
		made = append(made, e)
	}
	// Times last, the directory's own after its entries.
	for i, e := range made {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, e.name), times(i), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}

	r := NewReader()
	for i, e := range made {
		t.Run(strings.ToValidUTF8(e.name, "?"), func(t *testing.T) {
			sp, dp := filepath.Join(src, e.name), filepath.Join(dst, e.name)
			fi, err := os.Lstat(sp)
			if err != nil {
				t.Fatal(err)
			}
			n, warn, err := r.Node(sp, fi)
			if err != nil || warn != nil {
				t.Fatalf("Node: warn %v, err %v", warn, err)
			}
			checkCaptured(t, n, e, times(i))

			switch n.Type {
			case tree.File:
				b, err := os.ReadFile(sp)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(dp, b, 0o600); err != nil {
					t.Fatal(err)
				}
			case tree.Dir:
				if err := os.Mkdir(dp, 0o700); err != nil {
					t.Fatal(err)
				}
			default:
				if err := CreateSpecial(dp, n); err != nil {
					t.Fatal(err)
				}
			}
			warn, err = Apply(dp, n, ApplyOptions{Owner: true})
			if err != nil || warn != nil {
				t.Fatalf("Apply: warn %v, err %v", warn, err)
			}
			fi, err = os.Lstat(dp)
			if err != nil {
				t.Fatal(err)
			}
			n2, warn, err := r.Node(dp, fi)
			if err != nil || warn != nil {
				t.Fatalf("Node of restored: warn %v, err %v", warn, err)
			}
			a, b := normalize(n), normalize(n2)
			if !reflect.DeepEqual(a, b) {
				t.Errorf("restored node differs:\n src %+v\n dst %+v", a, b)
			}
		})
	}
}

// checkCaptured checks what Node read against what the test created.
func checkCaptured(t *testing.T, n *tree.Node, e entry, ts []unix.Timespec) {
	t.Helper()
	if n.Name != e.name {
		t.Errorf("name %q, want %q", n.Name, e.name)
	}
	if n.UID != uint32(e.uid) || n.GID != uint32(e.uid+1) {
		t.Errorf("owner %d:%d, want %d:%d", n.UID, n.GID, e.uid, e.uid+1)
	}
	if e.uid == 0 && (n.User != "root" || n.Group == "") {
		t.Errorf("names %q:%q, want root and a group", n.User, n.Group)
	}
	if e.mode != 0 && unixMode(n.Mode) != e.mode&0o7777 {
		t.Errorf("mode %o (%v), want %o", unixMode(n.Mode), n.Mode, e.mode&0o7777)
	}
	if got := n.AccessTime; !got.Equal(time.Unix(ts[0].Sec, ts[0].Nsec)) {
		t.Errorf("atime %v", got)
	}
	if got := n.ModTime; !got.Equal(time.Unix(ts[1].Sec, ts[1].Nsec)) {
		t.Errorf("mtime %v", got)
	}
	if n.ChangeTime.IsZero() || n.Inode == 0 || n.Links == 0 {
		t.Errorf("ctime %v, inode %d, links %d", n.ChangeTime, n.Inode, n.Links)
	}
	switch n.Type {
	case tree.File:
		if n.Size != uint64(len(readAll(t, e))) {
			t.Errorf("size %d", n.Size)
		}
	case tree.Symlink:
		if n.LinkTarget == "" || n.Mode&os.ModeSymlink == 0 {
			t.Errorf("symlink target %q mode %v", n.LinkTarget, n.Mode)
		}
	case tree.CharDev, tree.Dev:
		if n.Rdev == 0 {
			t.Errorf("no rdev")
		}
	}
	// ACL values change with chmod (the mask entry); compare their names.
	// Labels a security module puts on every file are not ours to check.
	var got []tree.Xattr
	for _, x := range n.Xattrs {
		if !strings.HasPrefix(x.Name, "security.") {
			got = append(got, x)
		}
	}
	want := sortedXattrs(append([]tree.Xattr(nil), e.xattrs...))
	if len(got) != len(want) {
		t.Fatalf("xattrs %q, want %q", got, want)
	}
	for i, x := range got {
		if x.Name != want[i].Name || (!strings.HasPrefix(x.Name, "system.") && !bytes.Equal(x.Value, want[i].Value)) {
			t.Errorf("xattr %q = %q, want %q = %q", x.Name, x.Value, want[i].Name, want[i].Value)
		}
	}
}

func readAll(t *testing.T, e entry) []byte {
	if e.content != nil {
		return e.content
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := e.create(t, p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sortedXattrs(xs []tree.Xattr) []tree.Xattr {
	for i := range xs {
		for j := i + 1; j < len(xs); j++ {
			if xs[j].Name < xs[i].Name {
				xs[i], xs[j] = xs[j], xs[i]
			}
		}
	}
	return xs
}

func TestNodeTypes(t *testing.T) {
	dir := t.TempDir()
	r := NewReader()
	tests := []struct {
		name   string
		create func(p string) error
		typ    tree.NodeType
		mode   os.FileMode
	}{
		{"f", func(p string) error { return os.WriteFile(p, []byte("abc"), 0o644) }, tree.File, 0},
		{"d", func(p string) error { return os.Mkdir(p, 0o755) }, tree.Dir, os.ModeDir},
		{"l", func(p string) error { return os.Symlink("f", p) }, tree.Symlink, os.ModeSymlink},
		{"p", func(p string) error { return unix.Mkfifo(p, 0o644) }, tree.FIFO, os.ModeNamedPipe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			if err := tt.create(p); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			n, warn, err := r.Node(p, fi)
			if err != nil || warn != nil {
				t.Fatal(warn, err)
			}
			if n.Type != tt.typ || n.Mode.Type() != tt.mode || n.Mode != fi.Mode() {
				t.Errorf("type %s mode %v, want %s %v (os says %v)", n.Type, n.Mode, tt.typ, tt.mode, fi.Mode())
			}
			if (n.Type == tree.File) != (n.Size == 3) {
				t.Errorf("size %d", n.Size)
			}
		})
	}
}

func TestNodeVanished(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "l")
	if err := os.Symlink("x", p); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(p)
	if _, _, err := NewReader().Node(p, fi); err == nil {
		t.Fatal("no error for a vanished symlink")
	}
}

func TestApplySymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1000, 5)
	if err := os.Chtimes(target, old, old); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	n := &tree.Node{Name: "link", Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "target",
		ModTime: time.Unix(2000, 7), AccessTime: time.Unix(3000, 9)}
	if err := CreateSpecial(link, n); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(link, n, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || !fi.ModTime().Equal(old) {
		t.Errorf("symlink target changed: %v %v", fi.Mode(), fi.ModTime())
	}
	li, err := os.Lstat(link)
	if err != nil {
		t.Fatal(err)
	}
	if !li.ModTime().Equal(n.ModTime) {
		t.Errorf("symlink mtime %v, want %v", li.ModTime(), n.ModTime)
	}

	// A file node is never applied through a symlink.
	fn := &tree.Node{Name: "link", Type: tree.File, Mode: 0o777}
	if _, err := Apply(link, fn, ApplyOptions{}); err == nil {
		t.Error("Apply of a file node to a symlink succeeded")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("target mode changed to %v", fi.Mode())
	}
}

func TestApplyTimes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		atime, mtime time.Time
		wantA, wantM time.Time
	}{
		{"ns", time.Unix(1, 999_999_999), time.Unix(1_700_000_000, 1), time.Unix(1, 999_999_999), time.Unix(1_700_000_000, 1)},
		{"zero is the epoch", time.Time{}, time.Time{}, time.Unix(0, 0), time.Unix(0, 0)},
		{"before 1970", time.Unix(-86400, 5), time.Unix(-1, 0), time.Unix(-86400, 5), time.Unix(-1, 0)},
		{"after 2262", time.Date(2300, 1, 1, 0, 0, 0, 42, time.UTC), time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Date(2300, 1, 1, 0, 0, 0, 42, time.UTC), time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &tree.Node{Type: tree.File, Mode: 0o644, AccessTime: tt.atime, ModTime: tt.mtime}
			if _, err := Apply(p, n, ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			a, m := time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())
			if !a.Equal(tt.wantA) || !m.Equal(tt.wantM) {
				t.Errorf("atime %v mtime %v, want %v %v", a, m, tt.wantA, tt.wantM)
			}
		})
	}
}

func TestApplyOwnerByName(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ids := &IDMap{}
	tests := []struct {
		name             string
		opts             ApplyOptions
		node             tree.Node
		wantUID, wantGID uint32
	}{
		{"numbers", ApplyOptions{Owner: true}, tree.Node{UID: 4242, GID: 4343, User: "root", Group: "root"}, 4242, 4343},
		{"by name", ApplyOptions{Owner: true, ByName: true, IDs: ids}, tree.Node{UID: 4242, GID: 4343, User: "root", Group: "root"}, 0, 0},
		{"by name cached", ApplyOptions{Owner: true, ByName: true, IDs: ids}, tree.Node{UID: 4242, GID: 4343, User: "root", Group: "root"}, 0, 0},
		{"unknown name", ApplyOptions{Owner: true, ByName: true}, tree.Node{UID: 4242, GID: 4343, User: "no-such-user-dj", Group: "no-such-group-dj"}, 4242, 4343},
		{"owner off", ApplyOptions{}, tree.Node{UID: 1, GID: 1}, 4242, 4343},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "owner off" {
				if err := os.Chown(p, 4242, 4343); err != nil {
					t.Fatal(err)
				}
			}
			n := tt.node
			n.Type, n.Mode = tree.File, 0o600
			if _, err := Apply(p, &n, tt.opts); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != tt.wantUID || st.Gid != tt.wantGID {
				t.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, tt.wantUID, tt.wantGID)
			}
		})
	}
}

func TestApplyXattrWarning(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A name in no namespace is refused by every file system.
	n := &tree.Node{Type: tree.File, Mode: 0o640, ModTime: time.Unix(5, 6), Xattrs: []tree.Xattr{{Name: "nonamespace", Value: []byte("x")}}}
	warn, err := Apply(p, n, ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if warn == nil || !strings.Contains(warn.Error(), "nonamespace") {
		t.Errorf("warn = %v, want the refused xattr", warn)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(time.Unix(5, 6)) {
		t.Errorf("mode %v mtime %v not applied after the xattr failure", fi.Mode(), fi.ModTime())
	}
}

func TestCreateSpecialRefusesOthers(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []tree.NodeType{tree.File, tree.Dir, tree.Irregular, "bogus"} {
		if err := CreateSpecial(filepath.Join(dir, "x"), &tree.Node{Type: typ}); err == nil {
			t.Errorf("%s: no error", typ)
		}
	}
	// An existing path is not replaced.
	p := filepath.Join(dir, "exists")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CreateSpecial(p, &tree.Node{Type: tree.FIFO}); !errors.Is(err, os.ErrExist) {
		t.Errorf("err = %v, want ErrExist", err)
	}
}

func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	for _, m := range []uint32{0o644, 0o4755, 0o2710, 0o1777, 0o7000, 0} {
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if got := fileMode(st.Mode); got != fi.Mode() {
			t.Errorf("%o: fileMode %v, os %v", m, got, fi.Mode())
		}
		if got := unixMode(fi.Mode()); got != m {
			t.Errorf("unixMode(%v) = %o, want %o", fi.Mode(), got, m)
		}
		os.Remove(p)
	}
}

func TestSplitNul(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a\x00", []string{"a"}},
		{"a\x00bc\x00", []string{"a", "bc"}},
		{"a\x00\x00b", []string{"a", "b"}},
	}
	for _, tt := range tests {
		if got := splitNul([]byte(tt.in)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitNul(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
