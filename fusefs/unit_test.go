//go:build linux

package fusefs

import (
	"errors"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"dj/repo/crypto"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		tmpl    string
		wantErr string
		static  string
		endsT   bool
	}{
		{"snapshots/%T", "", "snapshots", true},
		{"ids/%i", "", "ids", false},
		{"hosts/%h/%T", "", "hosts", true},
		{"%T", "", "", true},
		{"a/b/%u-%t/x/%T", "", "a/b", true},
		{"100%%/%I", "", "100%", false},
		{"x/%Q", "unknown verb %Q", "", false},
		{"x/%", "ends with %", "", false},
		{"static/dir", "names no snapshot", "", false},
		{"../up/%T", ".. is not allowed", "", false},
		{"/abs/%T", "must be relative", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			tp, err := parseTemplate(tt.tmpl)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tp.staticPrefix(); got != tt.static {
				t.Errorf("static prefix %q, want %q", got, tt.static)
			}
			if got := tp.endsWithTime(); got != tt.endsT {
				t.Errorf("endsWithTime %v, want %v", got, tt.endsT)
			}
		})
	}
}

func mustTemplates(t *testing.T, texts ...string) []template {
	t.Helper()
	var out []template
	for _, s := range texts {
		tp, err := parseTemplate(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tp)
	}
	return out
}

func testSnap(id byte, tm time.Time, host string, tags ...string) *snapshot.Snapshot {
	sn := &snapshot.Snapshot{Time: tm, Hostname: host, Username: "ann", Tags: tags}
	sn.ID[0] = id
	sn.ID[1] = 0xab
	sn.Tree[0] = id
	return sn
}

func names(l *layout, dir string) []string {
	if d := l.dirs[dir]; d != nil {
		return d.names
	}
	return nil
}

func TestBuildLayout(t *testing.T) {
	tm := time.Date(2024, 5, 6, 7, 8, 9, 0, time.Local)
	a := testSnap(1, tm, "alpha", "daily")
	b := testSnap(2, tm, "beta", "daily", "weird/tag", "")      // same time as a
	c := testSnap(3, tm.Add(time.Minute), "", "daily", "daily") // no host, duplicate tag
	d := testSnap(4, tm.Add(-time.Hour), "alpha")               // oldest, untagged
	snaps := []*snapshot.Snapshot{d, a, b, c}
	l := buildLayout(snaps, mustTemplates(t, DefaultPathTemplates()...), DefaultTimeTemplate, true, t.Logf)

	ts := func(sn *snapshot.Snapshot) string { return sn.Time.Format(DefaultTimeTemplate) }
	if got, want := names(l, ""), []string{"hosts", "ids", "snapshots", "tags", "versions"}; !slices.Equal(got, want) {
		t.Errorf("root %v, want %v", got, want)
	}
	if got, want := names(l, "snapshots"), []string{ts(d), ts(a), ts(a) + "-1", ts(c), "latest"}; !equalSet(got, want) {
		t.Errorf("snapshots %v, want %v", got, want)
	}
	// a and b collide; a comes first in the sorted input, so b gets -1.
	if e := l.dirs["snapshots"].entries[ts(a)+"-1"]; e.sn != b {
		t.Errorf("%s-1 is %v, want b", ts(a), e.sn)
	}
	if e := l.dirs["snapshots"].entries["latest"]; e.kind != kindLink || e.target != ts(c) || e.sn != c {
		t.Errorf("snapshots/latest = %+v", e)
	}
	if got, want := names(l, "hosts"), []string{"_", "alpha", "beta"}; !slices.Equal(got, want) {
		t.Errorf("hosts %v, want %v", got, want)
	}
	if e := l.dirs["hosts/alpha"].entries["latest"]; e.target != ts(a) {
		t.Errorf("hosts/alpha/latest -> %q", e.target)
	}
	if got, want := names(l, "tags"), []string{"_", "daily", "weird_tag"}; !slices.Equal(got, want) {
		t.Errorf("tags %v, want %v", got, want)
	}
	if got, want := names(l, "tags/daily"), []string{ts(a), ts(a) + "-1", ts(c), "latest"}; !equalSet(got, want) {
		t.Errorf("tags/daily %v, want %v", got, want)
	}
	if got := len(names(l, "ids")); got != 4 {
		t.Errorf("%d ids", got)
	}
	if e := l.dirs["ids"].entries[a.ID.Short()]; e.kind != kindSnapshot || e.sn != a {
		t.Errorf("ids/%s = %+v", a.ID.Short(), e)
	}
	if _, ok := l.dirs["ids"].entries["latest"]; ok {
		t.Error("ids has a latest link")
	}
	// The mtime is the newest snapshot's second; its nanoseconds follow
	// the set of snapshots, so a change of the set changes it.
	if !l.mtime.Truncate(time.Second).Equal(c.Time.Truncate(time.Second)) {
		t.Errorf("mtime %v, want the second of %v", l.mtime, c.Time)
	}
	if l3 := buildLayout(snaps[:len(snaps)-1], nil, DefaultTimeTemplate, true, t.Logf); l3.mtime.Equal(l.mtime) {
		t.Error("mtime does not change with the set of snapshots")
	}
	// The same set gives the same key; another set another.
	if l2 := buildLayout(snaps, nil, DefaultTimeTemplate, true, t.Logf); l2.key != l.key {
		t.Error("key differs for the same snapshots")
	}
	if l3 := buildLayout(snaps[:3], nil, DefaultTimeTemplate, true, t.Logf); l3.key == l.key {
		t.Error("key equal for different snapshots")
	}

	// An empty list still has the static directories.
	e := buildLayout(nil, mustTemplates(t, DefaultPathTemplates()...), DefaultTimeTemplate, true, t.Logf)
	if got, want := names(e, ""), []string{"hosts", "ids", "snapshots", "tags", "versions"}; !slices.Equal(got, want) {
		t.Errorf("empty root %v", got)
	}
}

func equalSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestBuildLayoutNestedTime(t *testing.T) {
	tm := time.Date(2024, 5, 6, 7, 8, 9, 0, time.Local)
	a := testSnap(1, tm, "alpha")
	b := testSnap(2, tm.Add(24*time.Hour), "alpha")
	l := buildLayout([]*snapshot.Snapshot{a, b}, mustTemplates(t, "by-date/%T", "%h/%i"), "2006/01/02/15-04", false, t.Logf)
	if got, want := names(l, "by-date/2024/05"), []string{"06", "07"}; !slices.Equal(got, want) {
		t.Errorf("by-date/2024/05: %v", got)
	}
	if e := l.dirs["by-date"].entries["latest"]; e.target != "2024/05/07/07-08" {
		t.Errorf("latest -> %q", e.target)
	}
	if e, ok := l.lookup("by-date/2024/05/06", "07-08"); !ok || e.sn != a {
		t.Errorf("nested entry: %+v %v", e, ok)
	}
	if got, want := names(l, ""), []string{"alpha", "by-date"}; !slices.Equal(got, want) {
		t.Errorf("root %v (no versions requested)", got)
	}
	if got := names(l, "alpha"); len(got) != 2 {
		t.Errorf("alpha: %v", got)
	}
}

func TestInodes(t *testing.T) {
	var sn1, sn2 crypto.ID
	sn1[0], sn2[0] = 1, 2
	file := &tree.Node{Name: "f", Type: tree.File, Links: 1, Inode: 5, DeviceID: 9}
	hard := &tree.Node{Name: "h", Type: tree.File, Links: 2, Inode: 5, DeviceID: 9}
	hard2 := &tree.Node{Name: "h2", Type: tree.File, Links: 2, Inode: 5, DeviceID: 9}
	dir := &tree.Node{Name: "d", Type: tree.Dir, Links: 3, Inode: 5, DeviceID: 9}
	noIno := &tree.Node{Name: "n", Type: tree.File, Links: 2}
	// Nodes that claim hard's inode with other data are other files.
	other := &tree.Node{Name: "o", Type: tree.File, Links: 2, Inode: 5, DeviceID: 9, Size: 3, Content: []crypto.ID{{7}}}
	symlink := &tree.Node{Name: "s", Type: tree.Symlink, Links: 2, Inode: 5, DeviceID: 9}

	inos := map[string]uint64{
		"file":           nodeIno(sn1, 100, "f", file),
		"file other sn":  nodeIno(sn2, 100, "f", file),
		"file other dir": nodeIno(sn1, 101, "f", file),
		"hard":           nodeIno(sn1, 100, "h", hard),
		"dir":            nodeIno(sn1, 100, "d", dir),
		"noIno":          nodeIno(sn1, 100, "n", noIno),
		"other content":  nodeIno(sn1, 100, "o", other),
		"symlink":        nodeIno(sn1, 100, "s", symlink),
		"meta":           metaIno("snapshots"),
		"versions":       versionsIno(sn1, 100, "f"),
	}
	seen := map[uint64]string{}
	for name, ino := range inos {
		if ino < 2 || ino >= 1<<63 {
			t.Errorf("%s: ino %d out of range", name, ino)
		}
		if other, ok := seen[ino]; ok {
			t.Errorf("%s and %s share ino %d", name, other, ino)
		}
		seen[ino] = name
	}
	if nodeIno(sn1, 200, "h2", hard2) != inos["hard"] {
		t.Error("hard links in different directories differ")
	}
	if nodeIno(sn2, 100, "h", hard) == inos["hard"] {
		t.Error("hard links of different snapshots share an inode")
	}
	// A directory listing numbers its entries as their lookups do.
	c, err := tree.NewCompact(&tree.Tree{Nodes: []*tree.Node{file, hard, other, symlink}})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []*tree.Node{file, hard, other, symlink} {
		_, h := c.Entry(i)
		if got, want := compactIno(sn1, 100, n.Name, c, i, &h), nodeIno(sn1, 100, n.Name, n); got != want {
			t.Errorf("%s: listed as ino %d, looked up as %d", n.Name, got, want)
		}
	}
	if metaIno("") != fuse.FUSE_ROOT_ID {
		t.Error("root is not inode 1")
	}
	if nodeIno(sn1, 100, "f", file) != inos["file"] {
		t.Error("not deterministic")
	}
}

func TestFillAttr(t *testing.T) {
	mtime := time.Date(1960, 1, 1, 0, 0, 0, 5, time.UTC) // before the epoch
	tests := []struct {
		name      string
		node      tree.Node
		ownerRoot bool
		mode      uint32
		size      uint64
		nlink     uint32
		uid       uint32
	}{
		{"file", tree.Node{Type: tree.File, Mode: 0o640, Size: 10, Links: 1, UID: 5}, false, syscall.S_IFREG | 0o640, 10, 1, 5},
		{"owner root", tree.Node{Type: tree.File, Mode: 0o640, Size: 10, UID: 5}, true, syscall.S_IFREG | 0o640, 10, 1, 0},
		{"setuid sticky", tree.Node{Type: tree.File, Mode: 0o755 | os.ModeSetuid | os.ModeSetgid | os.ModeSticky}, false, syscall.S_IFREG | 0o7755, 0, 1, 0},
		{"dir", tree.Node{Type: tree.Dir, Mode: os.ModeDir | 0o700}, false, syscall.S_IFDIR | 0o700, 0, 2, 0},
		{"symlink", tree.Node{Type: tree.Symlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "../x"}, false, syscall.S_IFLNK | 0o777, 4, 1, 0},
		{"fifo", tree.Node{Type: tree.FIFO, Mode: os.ModeNamedPipe | 0o600}, false, syscall.S_IFIFO | 0o600, 0, 1, 0},
		{"socket", tree.Node{Type: tree.Socket, Mode: os.ModeSocket | 0o600}, false, syscall.S_IFSOCK | 0o600, 0, 1, 0},
		{"irregular", tree.Node{Type: tree.Irregular, Size: 99}, false, syscall.S_IFREG, 0, 1, 0},
		{"many links", tree.Node{Type: tree.File, Links: 7}, false, syscall.S_IFREG, 0, 7, 0},
		// Set-id bits go with an owner not shown as stored.
		{"owner root setid", tree.Node{Type: tree.File, Mode: 0o755 | os.ModeSetuid | os.ModeSetgid | os.ModeSticky, UID: 5}, true, syscall.S_IFREG | 0o1755, 0, 1, 0},
		{"uid -1 setid", tree.Node{Type: tree.File, Mode: 0o777 | os.ModeSetuid | os.ModeSetgid | os.ModeSticky, UID: 1<<32 - 1, GID: 1<<32 - 1}, false, syscall.S_IFREG | 0o1777, 0, 1, 1<<32 - 1},
		{"gid -1 setid", tree.Node{Type: tree.File, Mode: 0o777 | os.ModeSetuid | os.ModeSetgid, UID: 5, GID: 1<<32 - 1}, false, syscall.S_IFREG | 0o4777, 0, 1, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a fuse.Attr
			tt.node.ModTime = mtime
			fillAttr(&a, &tt.node, tt.ownerRoot)
			if a.Mode != tt.mode || a.Size != tt.size || a.Nlink != tt.nlink || a.Uid != tt.uid {
				t.Errorf("mode %o size %d nlink %d uid %d", a.Mode, a.Size, a.Nlink, a.Uid)
			}
			if got := time.Unix(int64(a.Mtime), int64(a.Mtimensec)); !got.Equal(mtime) {
				t.Errorf("mtime %v", got)
			}
			if a.Atime != 0 || a.Blksize != 4096 {
				t.Errorf("atime %d blksize %d", a.Atime, a.Blksize)
			}
		})
	}
}

func TestEncodeDev(t *testing.T) {
	for _, d := range []struct{ major, minor uint32 }{{1, 3}, {8, 1}, {259, 5}, {4095, 1048575}, {300, 70000}} {
		rdev := unix.Mkdev(d.major, d.minor)
		k := encodeDev(rdev)
		// The kernel's new_decode_dev.
		major := (k & 0xfff00) >> 8
		minor := (k & 0xff) | ((k >> 12) & 0xfff00)
		if major != d.major || minor != d.minor {
			t.Errorf("%d:%d encoded as %#x decodes to %d:%d", d.major, d.minor, k, major, minor)
		}
	}
}

func TestXattrContract(t *testing.T) {
	xs := []tree.Xattr{{Name: "user.a", Value: []byte("12345")}, {Name: "user.b", Value: nil}}
	if n, e := getxattr(xs, "user.a", make([]byte, 2)); e != syscall.ERANGE || n != 5 {
		t.Errorf("small: %d %v", n, e)
	}
	buf := make([]byte, 10)
	if n, e := getxattr(xs, "user.a", buf); e != 0 || string(buf[:n]) != "12345" {
		t.Errorf("get: %d %v", n, e)
	}
	if _, e := getxattr(xs, "user.c", buf); e != syscall.ENODATA {
		t.Errorf("missing: %v", e)
	}
	if n, e := listxattr(xs, nil); e != syscall.ERANGE || n != 14 {
		t.Errorf("list probe: %d %v", n, e)
	}
	buf = make([]byte, 20)
	if n, e := listxattr(xs, buf); e != 0 || string(buf[:n]) != "user.a\x00user.b\x00" {
		t.Errorf("list: %q %v", buf[:n], e)
	}
	if n, e := listxattr(nil, nil); e != 0 || n != 0 {
		t.Errorf("empty list: %d %v", n, e)
	}
}

func TestFuseOptions(t *testing.T) {
	o := fuseOptions(Options{FsName: "dj:1234"}.withDefaults(), false)
	if o.EntryTimeout == nil || o.AttrTimeout == nil || o.NegativeTimeout == nil || *o.EntryTimeout != time.Hour {
		t.Error("timeouts must be set (nil switches kernel caching off)")
	}
	mo := o.MountOptions
	if mo.MaxWrite != 1<<20 || mo.MaxBackground != 64 || mo.FsName != "dj:1234" || mo.Name != "dj" ||
		!mo.EnableSymlinkCaching || !o.NullPermissions || mo.SyncRead || mo.AllowOther {
		t.Errorf("options %+v", mo)
	}
	for _, opt := range []string{"ro", "noatime", "default_permissions", "nosuid", "nodev"} {
		if !slices.Contains(mo.Options, opt) {
			t.Errorf("options %v lack %s", mo.Options, opt)
		}
	}
	o = fuseOptions(Options{AllowOther: true, NoDefaultPermissions: true}.withDefaults(), true)
	if !o.AllowOther || slices.Contains(o.Options, "default_permissions") || slices.Contains(o.Options, "noatime") {
		t.Errorf("allow other / direct: %+v", o.MountOptions)
	}
	if !o.DirectMountStrict || o.DirectMountFlags&syscall.MS_NOATIME == 0 || o.DirectMountFlags&syscall.MS_RDONLY == 0 {
		t.Errorf("direct mount flags %#x", o.DirectMountFlags)
	}
}

func TestCheckFUSE(t *testing.T) {
	err := checkFUSE("/nonexistent/fuse", false)
	if !errors.Is(err, ErrNoFUSE) || !strings.Contains(err.Error(), "modprobe fuse") {
		t.Errorf("missing device: %v", err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/tmp/a\040b\011c\134d`); got != "/tmp/a b\tc\\d" {
		t.Errorf("got %q", got)
	}
	if got := unescapeMountinfo("/plain"); got != "/plain" {
		t.Errorf("got %q", got)
	}
}

func TestSameVersion(t *testing.T) {
	var id1, id2 crypto.ID
	id2[0] = 1
	base := tree.Node{Type: tree.File, Mode: 0o644, Size: 3, ModTime: time.Unix(5, 0), Content: []crypto.ID{id1},
		AccessTime: time.Unix(1, 0), Inode: 1}
	same := base
	same.AccessTime = time.Unix(99, 0) // reading a file is not a new version
	same.Inode = 2
	content := base
	content.Content = []crypto.ID{id2}
	mode := base
	mode.Mode = 0o600
	xattr := base
	xattr.Xattrs = []tree.Xattr{{Name: "user.x", Value: []byte("v")}}
	if !sameVersion(&base, &same) {
		t.Error("atime/inode change is a new version")
	}
	for name, n := range map[string]tree.Node{"content": content, "mode": mode, "xattr": xattr} {
		if sameVersion(&base, &n) {
			t.Errorf("%s change is not a new version", name)
		}
	}
}
