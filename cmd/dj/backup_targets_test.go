package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestReadListFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(data string) string {
		f, err := os.CreateTemp(dir, "list")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(data)
		f.Close()
		return f.Name()
	}
	lines := []struct {
		data string
		want []string
	}{
		{"", nil},
		{"a\nb\n", []string{"a", "b"}},
		{"a\r\nb", []string{"a", "b"}},
		{"\xef\xbb\xbf a \n\n#c\n", []string{" a ", "", "#c"}},
	}
	for _, tc := range lines {
		got, err := readListLines(write(tc.data))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("readListLines(%q) = %q, %v; want %q", tc.data, got, err, tc.want)
		}
	}
	raw := []struct {
		data    string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{"a\x00b\nc\x00", []string{"a", "b\nc"}, false},
		{"a\x00b", nil, true},
		{"a\x00\x00", nil, true},
	}
	for _, tc := range raw {
		got, err := readListRaw(write(tc.data))
		if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("readListRaw(%q) = %q, %v; want %q (error %v)", tc.data, got, err, tc.want, tc.wantErr)
		}
	}
	if _, err := readListLines(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing list file is no error")
	}
}
