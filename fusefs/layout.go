//go:build linux

package fusefs

import (
	"context"
	"encoding/binary"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"dj/repo/crypto"
	"dj/repo/snapshot"
)

// entryKind is the kind of an entry in a snapshot-list directory.
type entryKind uint8

const (
	kindDir      entryKind = iota // a directory of the layout
	kindSnapshot                  // a snapshot's root directory
	kindLink                      // a "latest" symlink
	kindVersions                  // the versions view
)

// metaEntry is one name in a snapshot-list directory.
type metaEntry struct {
	kind   entryKind
	sn     *snapshot.Snapshot // kindSnapshot, kindLink (the snapshot linked to)
	target string             // kindLink
}

// metaDir is one directory of the layout.
type metaDir struct {
	names   []string // sorted
	entries map[string]metaEntry
}

// layout is the directory structure built from one snapshot list. It is
// immutable once built.
type layout struct {
	key   crypto.ID            // identifies the snapshot set
	snaps []*snapshot.Snapshot // oldest first
	dirs  map[string]*metaDir  // by slash-separated path; "" is the root
	mtime time.Time            // time of the newest snapshot
}

// versionsName is the root directory of the versions view.
const versionsName = "versions"

// template is one parsed path template.
type template struct {
	text  string
	parts []tmplPart
}

// tmplPart is literal text (verb 0) or a verb.
type tmplPart struct {
	verb byte
	text string
}

// parseTemplate parses a path template: literal text with the verbs %i %I
// %h %u %t %T and %% for a literal percent sign.
func parseTemplate(s string) (template, error) {
	t := template{text: s}
	var lit strings.Builder
	hasVerb := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			continue
		}
		if i+1 == len(s) {
			return t, fmt.Errorf("invalid path template %q: ends with %%", s)
		}
		i++
		switch v := s[i]; v {
		case '%':
			lit.WriteByte('%')
		case 'i', 'I', 'h', 'u', 't', 'T':
			if lit.Len() > 0 {
				t.parts = append(t.parts, tmplPart{text: lit.String()})
				lit.Reset()
			}
			t.parts = append(t.parts, tmplPart{verb: v})
			hasVerb = true
		default:
			return t, fmt.Errorf("invalid path template %q: unknown verb %%%c (use %%i %%I %%h %%u %%t %%T)", s, v)
		}
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, tmplPart{text: lit.String()})
	}
	if !hasVerb {
		return t, fmt.Errorf("invalid path template %q: it names no snapshot (use %%i, %%I or %%T)", s)
	}
	for _, p := range t.parts {
		if p.verb != 0 {
			continue
		}
		for _, elem := range strings.Split(p.text, "/") {
			if elem == ".." {
				return t, fmt.Errorf("invalid path template %q: .. is not allowed", s)
			}
		}
	}
	if strings.HasPrefix(s, "/") {
		return t, fmt.Errorf("invalid path template %q: must be relative", s)
	}
	return t, nil
}

// endsWithTime reports whether the template's last part is %T, in which case
// its directory gets a "latest" link.
func (t template) endsWithTime() bool {
	return len(t.parts) > 0 && t.parts[len(t.parts)-1].verb == 'T'
}

// staticPrefix returns the directory path before the template's first verb,
// which exists even when no snapshot uses the template.
func (t template) staticPrefix() string {
	if len(t.parts) == 0 || t.parts[0].verb != 0 {
		return ""
	}
	p := t.parts[0].text
	i := strings.LastIndex(p, "/")
	if i < 0 {
		return ""
	}
	return cleanPath(p[:i])
}

// expansion is one path a template gives a snapshot: dir is where a
// "latest" link goes (the path before a final %T) and suffix the rest, or
// dir is the whole path and suffix empty.
type expansion struct {
	dir    string
	suffix string
}

// expand returns the paths of sn under the template, one per tag for %t
// (none when sn has no tags).
func (t template) expand(sn *snapshot.Snapshot, timeTemplate string) []expansion {
	outs := []string{""}
	appendAll := func(s string) {
		for i := range outs {
			outs[i] += s
		}
	}
	timeStr := sn.Time.Local().Format(timeTemplate)
	last := len(t.parts) - 1
	for i, p := range t.parts {
		switch p.verb {
		case 0:
			appendAll(p.text)
		case 'i':
			appendAll(sn.ID.Short())
		case 'I':
			appendAll(sn.ID.String())
		case 'h':
			appendAll(sanitize(sn.Hostname))
		case 'u':
			appendAll(sanitize(sn.Username))
		case 't':
			tags := uniqueStrings(sn.Tags)
			if len(tags) == 0 {
				return nil
			}
			var next []string
			for _, tag := range tags {
				for _, o := range outs {
					next = append(next, o+sanitize(tag))
				}
			}
			outs = next
		case 'T':
			if i == last {
				res := make([]expansion, 0, len(outs))
				for _, o := range outs {
					res = append(res, expansion{dir: cleanPath(o), suffix: cleanPath(timeStr)})
				}
				return res
			}
			appendAll(timeStr)
		}
	}
	res := make([]expansion, 0, len(outs))
	for _, o := range outs {
		res = append(res, expansion{dir: cleanPath(o)})
	}
	return res
}

// sanitize turns a host, user or tag into one valid path element.
func sanitize(s string) string {
	switch s {
	case "", ".":
		return "_"
	case "..":
		return "__"
	}
	return strings.NewReplacer("/", "_", "\x00", "_").Replace(s)
}

func uniqueStrings(list []string) []string {
	seen := make(map[string]bool, len(list))
	var out []string
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// cleanPath cleans a slash-separated relative path; the root is "".
func cleanPath(p string) string {
	p = strings.Trim(path.Clean("/"+p), "/")
	return p
}

// validPath reports whether every element of p is a valid file name.
func validPath(p string) bool {
	if p == "" {
		return true
	}
	for _, elem := range strings.Split(p, "/") {
		if !showable(elem) {
			return false
		}
	}
	return true
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// layoutBuilder assembles a layout.
type layoutBuilder struct {
	l    *layout
	logf func(string, ...any)
}

// mkdirs makes p and its parents directories; it fails when a part of p is
// already something else.
func (b *layoutBuilder) mkdirs(p string) bool {
	if _, ok := b.l.dirs[p]; ok {
		return true
	}
	parent, name := "", p
	if i := strings.LastIndex(p, "/"); i >= 0 {
		parent, name = p[:i], p[i+1:]
	}
	if !b.mkdirs(parent) {
		return false
	}
	pd := b.l.dirs[parent]
	if e, ok := pd.entries[name]; ok && e.kind != kindDir {
		return false
	}
	pd.entries[name] = metaEntry{kind: kindDir}
	b.l.dirs[p] = &metaDir{entries: make(map[string]metaEntry)}
	return true
}

// exists reports whether something is at path p.
func (b *layoutBuilder) exists(p string) bool {
	if _, ok := b.l.dirs[p]; ok {
		return true
	}
	parent, name := "", p
	if i := strings.LastIndex(p, "/"); i >= 0 {
		parent, name = p[:i], p[i+1:]
	}
	d, ok := b.l.dirs[parent]
	if !ok {
		return false
	}
	_, ok = d.entries[name]
	return ok
}

// add puts entry e at path p, which must not exist yet.
func (b *layoutBuilder) add(p string, e metaEntry) bool {
	parent, name := "", p
	if i := strings.LastIndex(p, "/"); i >= 0 {
		parent, name = p[:i], p[i+1:]
	}
	if !b.mkdirs(parent) {
		return false
	}
	b.l.dirs[parent].entries[name] = e
	return true
}

// buildLayout lays out snaps (sorted oldest first) with the templates.
func buildLayout(snaps []*snapshot.Snapshot, templates []template, timeTemplate string, versions bool, logf func(string, ...any)) *layout {
	l := &layout{
		snaps: snaps,
		dirs:  map[string]*metaDir{"": {entries: make(map[string]metaEntry)}},
		key:   snapshotSetKey(snaps),
	}
	b := &layoutBuilder{l: l, logf: logf}
	for _, t := range templates {
		if p := t.staticPrefix(); p != "" && validPath(p) {
			b.mkdirs(p)
		}
	}
	type latest struct {
		sn     *snapshot.Snapshot
		target string
	}
	latests := make(map[string]latest)
	var latestOrder []string
	for _, sn := range snaps {
		if sn.Time.After(l.mtime) {
			l.mtime = sn.Time
		}
		for _, t := range templates {
			for _, x := range t.expand(sn, timeTemplate) {
				full := x.dir
				if x.suffix != "" {
					full = joinPath(x.dir, x.suffix)
				}
				if full == "" || !validPath(full) {
					logf("dj mount: snapshot %s: template %q gives the unusable path %q; skipped", sn.ID.Short(), t.text, full)
					continue
				}
				unique := full
				for i := 1; b.exists(unique); i++ {
					unique = full + "-" + strconv.Itoa(i)
				}
				if !b.add(unique, metaEntry{kind: kindSnapshot, sn: sn}) {
					logf("dj mount: snapshot %s: path %q collides with a directory of the layout; skipped", sn.ID.Short(), unique)
					continue
				}
				if x.suffix != "" {
					if _, ok := latests[x.dir]; !ok {
						latestOrder = append(latestOrder, x.dir)
					}
					// Snapshots come oldest first, so the last one wins.
					latests[x.dir] = latest{sn: sn, target: strings.TrimPrefix(unique, joinPath(x.dir, ""))}
				}
			}
		}
	}
	for _, dir := range latestOrder {
		lt := latests[dir]
		p := joinPath(dir, "latest")
		if b.exists(p) {
			continue
		}
		b.add(p, metaEntry{kind: kindLink, sn: lt.sn, target: lt.target})
	}
	if versions {
		if root := l.dirs[""]; root != nil {
			if _, ok := root.entries[versionsName]; !ok {
				root.entries[versionsName] = metaEntry{kind: kindVersions}
			}
		}
	}
	for _, d := range l.dirs {
		d.names = make([]string, 0, len(d.entries))
		for name := range d.entries {
			d.names = append(d.names, name)
		}
		sort.Strings(d.names)
	}
	if l.mtime.IsZero() {
		l.mtime = time.Now()
	}
	// The nanoseconds of the layout directories' mtime come from the set
	// of snapshots, so that any change of the set changes the mtime: the
	// kernel keeps directory listings (no opendir, see noOpendirFS) and
	// drops them when it sees the mtime change.
	l.mtime = l.mtime.Truncate(time.Second).Add(time.Duration(binary.BigEndian.Uint32(l.key[:4]) % 1e9))
	return l
}

// snapshotSetKey identifies a set of snapshots (in the given order).
func snapshotSetKey(snaps []*snapshot.Snapshot) crypto.ID {
	b := make([]byte, 0, len(snaps)*crypto.IDSize)
	for _, sn := range snaps {
		b = append(b, sn.ID[:]...)
	}
	return crypto.Hash(b)
}

// snapshotList holds the current layout and re-reads the snapshot list when
// it is older than Refresh, or (rate-limited) when a name is missing.
type snapshotList struct {
	m         *mountFS
	templates []template

	cur      atomic.Pointer[layout]
	lastRead atomic.Int64 // UnixNano of the last attempt to read the list

	mu sync.Mutex // serialises reads of the list
}

// missRefreshInterval rate-limits the re-reads caused by unknown names.
const missRefreshInterval = time.Second

// refreshTimeout bounds one read of the snapshot list.
const refreshTimeout = 5 * time.Minute

func newSnapshotList(ctx context.Context, m *mountFS) (*snapshotList, error) {
	s := &snapshotList{m: m}
	for _, text := range m.opts.PathTemplates {
		t, err := parseTemplate(text)
		if err != nil {
			return nil, err
		}
		s.templates = append(s.templates, t)
	}
	if _, err := s.read(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// read reads the snapshot list and installs a new layout when the set of
// snapshots changed. s.mu must be held, or s not yet shared.
func (s *snapshotList) read(ctx context.Context) (*layout, error) {
	s.lastRead.Store(time.Now().UnixNano())
	list, err := s.m.repo.Snapshots(ctx)
	if err != nil {
		return s.cur.Load(), fmt.Errorf("list snapshots: %w", err)
	}
	list = s.m.opts.Filter.Apply(list)
	sorted := make([]*snapshot.Snapshot, 0, len(list))
	for _, sn := range list {
		if sn != nil {
			sorted = append(sorted, sn)
		}
	}
	snapshot.SortByTime(sorted)
	old := s.cur.Load()
	if old != nil && old.key == snapshotSetKey(sorted) {
		return old, nil
	}
	if rl, ok := s.m.repo.(IndexReloader); ok && old != nil && hasNew(old.snaps, sorted) {
		if err := rl.ReloadIndex(ctx); err != nil {
			return old, fmt.Errorf("new snapshots: reload the index: %w", err)
		}
	}
	l := buildLayout(sorted, s.templates, s.m.opts.TimeTemplate, true, s.m.opts.Logf)
	s.cur.Store(l)
	return l, nil
}

// hasNew reports whether list holds a snapshot that old does not.
func hasNew(old, list []*snapshot.Snapshot) bool {
	known := make(map[crypto.ID]bool, len(old))
	for _, sn := range old {
		known[sn.ID] = true
	}
	for _, sn := range list {
		if !known[sn.ID] {
			return true
		}
	}
	return false
}

// refresh re-reads the list unless it was read less than minAge ago.
func (s *snapshotList) refresh(minAge time.Duration) *layout {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(time.Unix(0, s.lastRead.Load())) < minAge {
		return s.cur.Load()
	}
	ctx, cancel := context.WithTimeout(s.m.bgctx, refreshTimeout)
	defer cancel()
	l, err := s.read(ctx)
	if err != nil && s.m.bgctx.Err() == nil {
		s.m.opts.Logf("dj mount: %v (keeping the previous snapshot list)", err)
	}
	return l
}

// get returns the current layout, re-reading the snapshot list first when
// it is older than Refresh.
func (s *snapshotList) get() *layout {
	if time.Since(time.Unix(0, s.lastRead.Load())) < s.m.opts.Refresh {
		return s.cur.Load()
	}
	return s.refresh(s.m.opts.Refresh)
}

// missed re-reads the snapshot list after a lookup of an unknown name,
// at most once every missRefreshInterval.
func (s *snapshotList) missed() *layout {
	return s.refresh(missRefreshInterval)
}
