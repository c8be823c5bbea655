package index

import (
	"crypto/rand"
	"testing"

	"dj/repo/crypto"
	"dj/repo/pack"
)

// benchFiles returns index files of n random data blobs, 1000 a pack, 100
// packs a file.
func benchFiles(n int) []*File {
	var files []*File
	f := &File{}
	for p := 0; p < n/1000; p++ {
		var pid crypto.ID
		rand.Read(pid[:])
		pk := FilePack{ID: pid}
		for b := 0; b < 1000; b++ {
			var id crypto.ID
			rand.Read(id[:])
			pk.Blobs = append(pk.Blobs, pack.Blob{ID: id, Type: pack.DataBlob, Offset: uint32(b), Length: 100})
		}
		f.Packs = append(f.Packs, pk)
		if len(f.Packs) == 100 {
			files = append(files, f)
			f = &File{}
		}
	}
	return files
}

// BenchmarkLoadIndexOneByOne and BenchmarkLoadIndexAtOnce load the index of
// a repository of 1M blobs: file by file through AddFile (the pending map),
// and through AddFiles (as repo.LoadIndex does).
func BenchmarkLoadIndexOneByOne(b *testing.B) {
	files := benchFiles(1 << 20)
	for b.Loop() {
		x := New()
		for _, f := range files {
			x.AddFile(f)
		}
		x.Compact()
	}
}

func BenchmarkLoadIndexAtOnce(b *testing.B) {
	files := benchFiles(1 << 20)
	for b.Loop() {
		x := New()
		x.AddFiles(files)
	}
}
