//go:build bench

package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"dj/backend"
	"dj/backend/local"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/chunker"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// verifyCeiling measures the decrypt-and-hash speed of the machine's cores
// on a dj repository: the work `check --read-data` must do per stored byte
// (open each blob's seal, decompress it, hash the plaintext with keyed
// BLAKE3 and compare with its id), on copies of up to limit bytes of its
// packs held in memory, by one goroutine per core. No storage, no parsing of
// trees, no scheduling beyond handing out packs: the speed no check can
// beat on this machine. It returns stored MB/s, the median of runs.
func verifyCeiling(ctx context.Context, repoDir, pwFile string, limit int64, runs int) (float64, error) {
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		return 0, err
	}
	be, err := local.Open(ctx, repoDir)
	if err != nil {
		return 0, err
	}
	r, err := repo.Open(ctx, be, strings.TrimRight(string(pw), "\r\n"), repo.Options{})
	if err != nil {
		return 0, err
	}
	defer r.Close()

	type loaded struct {
		id    crypto.ID
		data  []byte
		blobs []pack.Blob
	}
	var packs []loaded
	var total int64
	var infos []backend.FileInfo
	if err := be.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		infos = append(infos, fi)
		return nil
	}); err != nil {
		return 0, err
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, fi := range infos {
		if total >= limit {
			break
		}
		id, err := crypto.ParseID(fi.Name)
		if err != nil {
			continue
		}
		data, err := be.Load(ctx, backend.Handle{Type: backend.PackFile, Name: fi.Name}, 0, 0)
		if err != nil {
			return 0, err
		}
		blobs, err := pack.ParseTail(r.Key(), data, int64(len(data)))
		if err != nil {
			return 0, fmt.Errorf("pack %s: %w", id.Short(), err)
		}
		packs = append(packs, loaded{id: id, data: data, blobs: blobs})
		total += int64(len(data))
	}
	if total == 0 {
		return 0, fmt.Errorf("no packs in %s", repoDir)
	}
	workers := runtime.GOMAXPROCS(0)
	var speeds []float64
	for run := 0; run < runs; run++ {
		var next int
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var buf []byte
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= len(packs) {
						return
					}
					p := packs[i]
					for _, b := range p.blobs {
						var err error
						buf, err = r.OpenPacked(index.PackedBlob{Blob: b, PackID: p.id}, p.data[b.Offset:b.Offset+b.Length], buf)
						if err != nil {
							mu.Lock()
							if firstErr == nil {
								firstErr = err
							}
							mu.Unlock()
						}
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start).Seconds()
		if firstErr != nil {
			return 0, firstErr
		}
		speeds = append(speeds, float64(total)/1e6/el)
	}
	sort.Float64s(speeds)
	return speeds[len(speeds)/2], nil
}

// backupCeiling measures the CPU work of an initial backup of root with no
// I/O: every regular file under it is read into memory first, then, timed,
// chunked (FastCDC with a repository's keyed gear table), hashed (keyed
// BLAKE3), deduplicated, compressed (zstd at the default level) and sealed
// (XChaCha20-Poly1305) with dj's own code (repo/chunker, Repository.BlobID
// and Repository.SealedForm, the function SaveBlob uses), one chunker and
// one blob worker per core; with verify, each compressed blob is also
// decompressed and compared before it is sealed, as SaveBlob does. Nothing
// is written, packed or walked: no backup of root can be faster on this
// machine. It returns the median wall time in seconds of runs, and the
// bytes of the files.
func backupCeiling(ctx context.Context, root string, runs int, verify bool) (float64, int64, error) {
	r, err := repo.Init(ctx, mem.New(), "ceiling", repo.Options{KDF: &crypto.TestKDF})
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	var files [][]byte
	var total int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, b)
		total += int64(len(b))
		return ctx.Err()
	})
	if err != nil {
		return 0, 0, err
	}
	// The big files first, so that no core is left chunking one alone at
	// the end.
	sort.SliceStable(files, func(i, j int) bool { return len(files[i]) > len(files[j]) })
	minSize, avgSize, maxSize := r.ChunkerSizes()
	workers := runtime.GOMAXPROCS(0)
	var times []float64
	for run := 0; run < runs && ctx.Err() == nil; run++ {
		start := time.Now()
		next := make(chan []byte)
		chunks := make(chan []byte, workers)
		bufs := make(chan []byte, 3*workers)
		for i := 0; i < cap(bufs); i++ {
			bufs <- make([]byte, 0, 2*avgSize)
		}
		var seen sync.Map
		var errOnce sync.Once
		var sealErr error
		var cwg, bwg sync.WaitGroup
		for w := 0; w < workers; w++ {
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				ch := chunker.NewWithSizes(nil, r.Gear(), minSize, avgSize, maxSize)
				for data := range next {
					ch.Reset(bytes.NewReader(data))
					for {
						buf := <-bufs
						c, err := ch.Next(buf)
						if err != nil { // io.EOF: a reader in memory fails in no other way
							bufs <- buf[:0]
							break
						}
						chunks <- c
					}
				}
			}()
			bwg.Add(1)
			go func() {
				defer bwg.Done()
				for c := range chunks {
					id := r.BlobID(c)
					if _, dup := seen.LoadOrStore(id, struct{}{}); !dup {
						sealed, _, err := r.SealedForm(pack.DataBlob, id, c, verify)
						if err != nil {
							errOnce.Do(func() { sealErr = err })
						} else {
							r.ReleaseSealed(sealed)
						}
					}
					bufs <- c[:0]
				}
			}()
		}
		for _, f := range files {
			next <- f
		}
		close(next)
		cwg.Wait()
		close(chunks)
		bwg.Wait()
		if sealErr != nil {
			return 0, total, sealErr
		}
		times = append(times, time.Since(start).Seconds())
	}
	if len(times) == 0 {
		return 0, total, ctx.Err()
	}
	sort.Float64s(times)
	return times[len(times)/2], total, nil
}
