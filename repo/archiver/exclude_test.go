package archiver

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseTagFile(t *testing.T) {
	cases := []struct {
		spec    string
		want    TagFile
		wantErr bool
	}{
		{".nobackup", TagFile{Name: ".nobackup"}, false},
		{"CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55", CacheDirTag, false},
		{"tag:a:b", TagFile{Name: "tag", Header: "a:b"}, false},
		{"tag:", TagFile{Name: "tag"}, false},
		{"", TagFile{}, true},
		{":header", TagFile{}, true},
		{"dir/tag", TagFile{}, true},
	}
	for _, tc := range cases {
		got, err := ParseTagFile(tc.spec)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseTagFile(%q) = %+v, %v; want %+v, error %v", tc.spec, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestTagFilePresent(t *testing.T) {
	dir := t.TempDir()
	mk := func(name, data string) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if data != "-" {
			if err := os.WriteFile(filepath.Join(d, "TAG"), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	good := mk("good", "HEADER and more")
	exact := mk("exact", "HEADER")
	short := mk("short", "HEAD")
	other := mk("other", "header")
	empty := mk("empty", "")
	none := mk("none", "-")
	withHeader := TagFile{Name: "TAG", Header: "HEADER"}
	anyTag := TagFile{Name: "TAG"}
	cases := []struct {
		tf   TagFile
		dir  string
		want bool
	}{
		{withHeader, good, true},
		{withHeader, exact, true},
		{withHeader, short, false},
		{withHeader, other, false},
		{withHeader, empty, false},
		{withHeader, none, false},
		{anyTag, empty, true},
		{anyTag, other, true},
		{anyTag, none, false},
	}
	for _, tc := range cases {
		if got := tc.tf.present(tc.dir); got != tc.want {
			t.Errorf("%+v in %s: present %v, want %v", tc.tf, filepath.Base(tc.dir), got, tc.want)
		}
	}
	if !excludedByTag([]string{"TAG"}, "data") || excludedByTag([]string{"TAG"}, "TAG") || excludedByTag(nil, "data") {
		t.Error("excludedByTag: only the tag file of a tagged directory stays")
	}
	if !excludedByTag([]string{"A", "B"}, "A") {
		t.Error("excludedByTag: one tag file leaves out the other")
	}
}
