package repo

import (
	"context"
	"encoding/json"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo/pack"
	"dj/repo/snapshot"
)

// FuzzFileBodies feeds the decoders of whole files the plaintext a key
// opened: the encoding byte and zstd (bombs end at the decoder's limit),
// then the config, snapshot and lock decoders. None may panic, and a
// decoded body is never larger than a blob may be.
func FuzzFileBodies(f *testing.F) {
	r := TestRepository(f, mem.New())
	ctx := context.Background()
	for _, t := range []backend.FileType{backend.ConfigFile, backend.SnapshotFile, backend.IndexFile} {
		names, _ := r.ListFiles(ctx, t)
		for _, id := range names {
			b, err := r.be.Load(ctx, backend.Handle{Type: t, Name: id.String()}, 0, 0)
			if err == nil {
				if plain, err := r.key.Open(nil, b[1:], fileAD(t)); err == nil {
					f.Add(plain)
				}
			}
		}
	}
	cfg, _ := json.Marshal(r.Config())
	f.Add(append([]byte{encodingRaw}, cfg...))
	f.Add(append([]byte{encodingZstd}, r.enc.EncodeAll([]byte(`{"time":"2026-12-04T10:00:00Z","tree":"00","paths":["/x"]}`), nil)...))
	f.Add(append([]byte{encodingRaw}, `{"time":"2026-12-04T10:00:00Z","exclusive":true,"hostname":"h","pid":1}`...))
	f.Fuzz(func(t *testing.T, plain []byte) {
		body, err := r.fileBody(plain)
		if err != nil {
			return
		}
		if len(body) > pack.MaxBlobSize {
			t.Fatalf("a body of %d bytes came out", len(body))
		}
		_, _ = parseConfig(body)
		var sn snapshot.Snapshot
		_ = json.Unmarshal(body, &sn)
		var li LockInfo
		if json.Unmarshal(body, &li) == nil {
			_ = li.String()
		}
	})
}

// FuzzDecompress: a blob's stored content decompresses to at most the
// decoder's limit, whatever the index claims, and never panics.
func FuzzDecompress(f *testing.F) {
	r := TestRepository(f, mem.New())
	f.Add(r.enc.EncodeAll([]byte("hello hello hello hello"), nil), uint32(23))
	f.Add(r.enc.EncodeAll(make([]byte, 1<<16), nil), uint32(1<<16))
	f.Fuzz(func(t *testing.T, content []byte, plain uint32) {
		plain %= 1 << 20
		out, err := r.decompress(content, make([]byte, 0, plain), int(plain))
		if err == nil && len(out) > pack.MaxBlobSize {
			t.Fatalf("%d bytes out", len(out))
		}
	})
}
