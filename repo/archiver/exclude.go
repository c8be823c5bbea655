package archiver

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// TagFile names a file whose presence marks a directory whose content is
// left out of a backup (restic's --exclude-if-present). The directory itself
// and the tag file are kept; everything else in it is not.
type TagFile struct {
	// Name is the tag file's name inside the directory.
	Name string
	// Header, when not empty, is what the tag file must start with; a tag
	// file with other content does not mark the directory.
	Header string
}

// CacheDirTag is the tag of the Cache Directory Tagging specification
// (https://bford.info/cachedir/), used by --exclude-caches.
var CacheDirTag = TagFile{Name: "CACHEDIR.TAG", Header: "Signature: 8a477f597d28d172789f06886806bc55"}

// ParseTagFile parses restic's FILE[:HEADER] form of --exclude-if-present.
// Everything after the first colon is the header.
func ParseTagFile(spec string) (TagFile, error) {
	name, header, _ := strings.Cut(spec, ":")
	if name == "" {
		return TagFile{}, fmt.Errorf("%q names no tag file (want FILE or FILE:HEADER)", spec)
	}
	if strings.Contains(name, "/") {
		return TagFile{}, fmt.Errorf("%q: the tag file is a name, not a path", spec)
	}
	return TagFile{Name: name, Header: header}, nil
}

// present reports whether dir holds the tag file (starting with the
// header, when one is set). A tag file that cannot be read marks nothing.
func (tf TagFile) present(dir string) bool {
	p := filepath.Join(dir, tf.Name)
	if _, err := os.Lstat(p); err != nil {
		return false
	}
	if tf.Header == "" {
		return true
	}
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, len(tf.Header))
	if _, err := io.ReadFull(f, buf); err != nil {
		return false
	}
	return bytes.Equal(buf, []byte(tf.Header))
}

// taggedBy returns the names of the tag files that mark dir, or nil.
func (a *archiver) taggedBy(dir string) []string {
	var names []string
	for _, tf := range a.opts.ExcludeIfPresent {
		if tf.present(dir) {
			names = append(names, tf.Name)
		}
	}
	return names
}

// excludedByTag reports whether an entry called name in a directory marked
// by the tag files tags is left out: every entry is, but the tag file.
func excludedByTag(tags []string, name string) bool {
	for _, t := range tags {
		if t != name {
			return true
		}
	}
	return false
}

// excludedLeaf reports whether a path given to Backup is left out, by the
// Exclude predicate or by a tag file in its directory (restic applies its
// excludes to the given paths too).
func (a *archiver) excludedLeaf(path string, fi os.FileInfo) bool {
	if path == "/" {
		return false
	}
	if excludedByTag(a.taggedBy(filepath.Dir(path)), filepath.Base(path)) {
		return true
	}
	return a.opts.Exclude != nil && a.opts.Exclude(path, fi)
}
