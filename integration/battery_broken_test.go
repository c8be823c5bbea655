package integration

// The broken-storage battery (issue 12): packs truncated and bit-flipped at
// many offsets, pack headers whose lengths are zero, run past the file or
// overlap, index entries that point at missing packs, past their pack or
// claim 2^63 bytes, a huge index, key files that ask argon2 for huge
// memory, and garbage in every folder of the repository. check, restore,
// the mount and prune must answer each with a clear error or a named
// warning: no panic, no hang, no memory blow-up, never wrong bytes, and
// prune never deletes good data because of garbage.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"dj/backend"
	"dj/repo/index"
	"dj/repo/pack"
)

// brokenCase is one way to break a repository.
type brokenCase struct {
	name string
	// damage breaks the repository of e. For garbage (files added
	// beside good ones) it returns a function that removes them again.
	damage func(t *testing.T, e *env) (undo func())
	// checkFails: check must report the damage (exit code not 0).
	checkFails bool
	// noData: the case is about opening the repository; restore, the
	// mount and prune are not run.
	noData bool
	// indexEntries: the index is huge (this many entries), and so may
	// be the memory that holds it.
	indexEntries int
}

// brokenMaxRSS is the peak memory a run on the (small) broken repository
// may reach, unless its index is huge.
const brokenMaxRSS = 256 << 20

// indexEntryRSS is the peak memory a huge index may cost per entry beyond
// boundedMaxRSS. An index is held in memory: about 52 bytes an entry, and
// about 130 at the peak of its loading (the decoded index files and the
// index at once); check and prune add their view of the packs. Measured at
// 10^7 entries in missing packs (2026-12-06): restore 1,272 MiB, the mount
// 1,225, check --read-data 1,686, prune 1,993.
const indexEntryRSS = 200

func (c brokenCase) maxRSS() int64 {
	if c.indexEntries > 0 {
		return boundedMaxRSS + int64(c.indexEntries)*indexEntryRSS
	}
	return brokenMaxRSS
}

// sourceHashes maps the path of every regular file below root (relative
// to it) to its SHA-256.
func sourceHashes(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		m[rel] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// repoFiles lists the files of a repository folder (data is two levels
// deep), sorted.
func repoFiles(t *testing.T, repoDir, folder string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(repoDir, folder), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// largestPack is the biggest pack of the repository (a data pack).
func largestPack(t *testing.T, repoDir string) string {
	t.Helper()
	var best string
	var size int64 = -1
	for _, p := range repoFiles(t, repoDir, "data") {
		if fi, err := os.Stat(p); err == nil && fi.Size() > size {
			best, size = p, fi.Size()
		}
	}
	if best == "" {
		t.Fatal("no pack")
	}
	return best
}

func truncateAt(off func(size int64) int64) func(t *testing.T, e *env) func() {
	return func(t *testing.T, e *env) func() {
		p := largestPack(t, e.repo)
		fi, _ := os.Stat(p)
		if err := os.Truncate(p, off(fi.Size())); err != nil {
			t.Fatal(err)
		}
		return nil
	}
}

func flipAt(off func(size int64) int64) func(t *testing.T, e *env) func() {
	return func(t *testing.T, e *env) func() {
		p := largestPack(t, e.repo)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[off(int64(len(b)))] ^= 0x10
		writeRepoFile(t, p, b)
		return nil
	}
}

func writeRepoFile(t *testing.T, p string, b []byte) {
	t.Helper()
	os.Chmod(p, 0o600)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// setHeaderLength writes n as the length of the largest pack's header.
func setHeaderLength(n func(size int64) uint32) func(t *testing.T, e *env) func() {
	return func(t *testing.T, e *env) func() {
		p := largestPack(t, e.repo)
		b, _ := os.ReadFile(p)
		binary.LittleEndian.PutUint32(b[len(b)-4:], n(int64(len(b))))
		writeRepoFile(t, p, b)
		return nil
	}
}

// packHeaderAD is the associated data of a sealed pack header (package
// pack's headerAD).
const packHeaderAD = "dj pack header v1"

// rewriteHeader replaces the header of the largest pack with its entries
// changed by edit, sealed with the repository's key: a header that opens
// but lies.
func rewriteHeader(edit func(entries []pack.Blob)) func(t *testing.T, e *env) func() {
	return func(t *testing.T, e *env) func() {
		p := largestPack(t, e.repo)
		b, _ := os.ReadFile(p)
		hl := int(binary.LittleEndian.Uint32(b[len(b)-4:]))
		rr := e.openRaw()
		defer rr.done()
		entries, err := pack.ParseTail(rr.r.Key(), b, int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		edit(entries)
		var hdr []byte
		for _, en := range entries {
			flags := byte(0)
			if en.Compressed {
				flags = 1
			}
			hdr = append(hdr, byte(en.Type), flags)
			hdr = append(hdr, en.ID[:]...)
			hdr = binary.LittleEndian.AppendUint32(hdr, en.Length)
			hdr = binary.LittleEndian.AppendUint32(hdr, en.PlainLength)
		}
		out := append([]byte(nil), b[:len(b)-4-hl]...)
		start := len(out)
		out = rr.r.Key().Seal(out, hdr, []byte(packHeaderAD))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(out)-start))
		writeRepoFile(t, p, out)
		return nil
	}
}

// rewriteIndex replaces every index file by one whose content is body(f),
// f being the union of the old ones; body returns the plaintext of the new
// index file.
func rewriteIndex(body func(t *testing.T, f *index.File) []byte) func(t *testing.T, e *env) func() {
	return func(t *testing.T, e *env) func() {
		rr := e.openRaw()
		f := &index.File{}
		for id := range rr.r.IndexFiles() {
			x, err := rr.r.LoadIndexFile(rr.ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			f.Packs = append(f.Packs, x.Packs...)
		}
		sort.Slice(f.Packs, func(i, j int) bool { return bytes.Compare(f.Packs[i].ID[:], f.Packs[j].ID[:]) < 0 })
		old := repoFiles(t, e.repo, "index")
		if _, err := rr.r.SaveFile(rr.ctx, backend.IndexFile, body(t, f)); err != nil {
			t.Fatal(err)
		}
		rr.done()
		for _, p := range old {
			os.Remove(p)
		}
		return nil
	}
}

// editIndex is rewriteIndex for a change to the decoded index.
func editIndex(edit func(f *index.File)) func(t *testing.T, e *env) func() {
	return rewriteIndex(func(t *testing.T, f *index.File) []byte {
		edit(f)
		return f.Encode()
	})
}

// firstDataPack is the index entry of the data pack with the most blobs.
func firstDataPack(f *index.File) *index.FilePack {
	var best *index.FilePack
	for i := range f.Packs {
		if len(f.Packs[i].Blobs) > 0 && f.Packs[i].Blobs[0].Type == pack.DataBlob && (best == nil || len(f.Packs[i].Blobs) > len(best.Blobs)) {
			best = &f.Packs[i]
		}
	}
	return best
}

// hugeIndex adds an index of n entries of random blobs in packs that do not
// exist (in files of at most 100,000 entries, as dj writes them).
func hugeIndex(n int) func(t *testing.T, e *env) func() {
	return func(t *testing.T, e *env) func() {
		rr := e.openRaw()
		defer rr.done()
		var packs []index.FilePack
		for left := n; left > 0; {
			var p index.FilePack
			rand.Read(p.ID[:])
			k := min(left, 1000)
			p.Blobs = make([]pack.Blob, k)
			for i := range p.Blobs {
				b := &p.Blobs[i]
				rand.Read(b.ID[:])
				b.Type, b.Offset, b.Length, b.PlainLength = pack.DataBlob, uint32(i*100), 100, 60
			}
			packs = append(packs, p)
			left -= k
		}
		if _, err := rr.r.WriteIndex(rr.ctx, packs, nil, nil); err != nil {
			t.Fatal(err)
		}
		return nil
	}
}

// keyFile adds (or, with only, replaces every key by) a key file that
// opens with the password but asks argon2 for mem KiB and time passes.
func keyFile(mem, passes uint32, only bool) func(t *testing.T, e *env) func() {
	return func(t *testing.T, e *env) func() {
		kf := map[string]any{"created": time.Now(), "kdf": "argon2id", "time": passes, "memory": mem, "threads": 4,
			"salt": make([]byte, 16), "data": make([]byte, 48)}
		b, _ := json.Marshal(kf)
		if only {
			for _, p := range repoFiles(t, e.repo, "keys") {
				os.Remove(p)
			}
		}
		// Named 000… so it is tried first.
		p := filepath.Join(e.repo, "keys", "0000"+fmt.Sprintf("%x", sha256.Sum256(b))[4:])
		writeRepoFile(t, p, b)
		return func() { os.Remove(p) }
	}
}

// garbage adds files of random bytes to folder (data: in a subfolder):
// one under a valid file name, one under an invalid one, one empty.
func garbage(folder string) func(t *testing.T, e *env) func() {
	return func(t *testing.T, e *env) func() {
		dir := filepath.Join(e.repo, folder)
		if folder == "data" {
			dir = filepath.Join(dir, "ab")
		}
		os.MkdirAll(dir, 0o700)
		junk := make([]byte, 5000)
		rand.Read(junk)
		var added []string
		for _, name := range []string{"ab" + fmt.Sprintf("%x", sha256.Sum256(junk))[2:], "not-an-id", "ab" + strings.Repeat("0", 62)} {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err == nil {
				continue
			}
			content := junk
			if strings.HasSuffix(name, "000") {
				content = nil
			}
			writeRepoFile(t, p, content)
			added = append(added, p)
		}
		return func() {
			for _, p := range added {
				os.Remove(p)
			}
		}
	}
}

func brokenCases() []brokenCase {
	var cases []brokenCase
	rng := mrand.New(mrand.NewPCG(12, 12))
	nTrunc, nFlip := batteryRuns(2, 50), batteryRuns(3, 200)
	truncs := []func(int64) int64{
		func(s int64) int64 { return s / 2 },
		func(s int64) int64 { return s - 1 },
		func(int64) int64 { return 0 },
	}
	for i := len(truncs); i < nTrunc; i++ {
		truncs = append(truncs, func(s int64) int64 { return rng.Int64N(s) })
	}
	for i, f := range truncs[:nTrunc] {
		cases = append(cases, brokenCase{name: fmt.Sprintf("pack truncated #%d", i), damage: truncateAt(f), checkFails: true})
	}
	flips := []func(int64) int64{
		func(s int64) int64 { return s - 20 }, // header
		func(s int64) int64 { return s / 3 },  // a blob
		func(s int64) int64 { return s - 1 },  // header length
		func(int64) int64 { return 0 },        // first blob
	}
	for i := len(flips); i < nFlip; i++ {
		flips = append(flips, func(s int64) int64 { return rng.Int64N(s) })
	}
	for i, f := range flips[:nFlip] {
		cases = append(cases, brokenCase{name: fmt.Sprintf("pack bit flipped #%d", i), damage: flipAt(f), checkFails: true})
	}
	cases = append(cases,
		brokenCase{name: "pack header length 0", damage: setHeaderLength(func(int64) uint32 { return 0 }), checkFails: true},
		brokenCase{name: "pack header length past the file", damage: setHeaderLength(func(s int64) uint32 { return uint32(s) }), checkFails: true},
		brokenCase{name: "pack header length 2^32-1", damage: setHeaderLength(func(int64) uint32 { return 1<<32 - 1 }), checkFails: true},
		brokenCase{name: "pack header entries of length 0", checkFails: true, damage: rewriteHeader(func(en []pack.Blob) {
			for i := range en {
				en[i].Length = 0
			}
		})},
		brokenCase{name: "pack header entry past the file", checkFails: true, damage: rewriteHeader(func(en []pack.Blob) {
			en[0].Length += 1 << 30
		})},
		brokenCase{name: "pack header entries overlapping", checkFails: true, damage: rewriteHeader(func(en []pack.Blob) {
			if len(en) > 1 {
				en[1].Length += en[0].Length
				en[0].Length = en[1].Length
			}
		})},
		brokenCase{name: "pack header claims 2^32-1 plain bytes", checkFails: true, damage: rewriteHeader(func(en []pack.Blob) {
			en[0].PlainLength = 1<<32 - 1
		})},
		brokenCase{name: "index entry in a missing pack", checkFails: true, damage: editIndex(func(f *index.File) {
			rand.Read(firstDataPack(f).ID[:])
		})},
		brokenCase{name: "pack deleted", checkFails: true, damage: func(t *testing.T, e *env) func() {
			os.Remove(largestPack(t, e.repo))
			return nil
		}},
		brokenCase{name: "index entries overlapping", checkFails: true, damage: editIndex(func(f *index.File) {
			p := firstDataPack(f)
			for i := 1; i < len(p.Blobs); i++ {
				p.Blobs[i].Offset = p.Blobs[0].Offset
			}
		})},
		brokenCase{name: "index entry of length 0", checkFails: true, damage: editIndex(func(f *index.File) {
			firstDataPack(f).Blobs[0].Length = 0
		})},
		brokenCase{name: "index entry past its pack", checkFails: true, damage: editIndex(func(f *index.File) {
			firstDataPack(f).Blobs[0].Offset = pack.MaxPackSize - 10
		})},
		brokenCase{name: "index entries claim 512 MiB plain", checkFails: true, damage: editIndex(func(f *index.File) {
			for i := range firstDataPack(f).Blobs {
				firstDataPack(f).Blobs[i].PlainLength = pack.MaxBlobSize
			}
		})},
		brokenCase{name: "index entry claims 2^63 bytes", checkFails: true, damage: rewriteIndex(func(t *testing.T, f *index.File) []byte {
			// One pack of one blob whose length is 2^63, in the index
			// file encoding (index.File.Encode cannot write it).
			b := []byte("djix\x01")
			b = binary.AppendUvarint(b, 0) // supersedes
			b = binary.AppendUvarint(b, 1) // packs
			b = append(b, f.Packs[0].ID[:]...)
			b = binary.AppendUvarint(b, 1)
			bl := f.Packs[0].Blobs[0]
			b = append(b, byte(bl.Type), 0)
			b = append(b, bl.ID[:]...)
			b = binary.AppendUvarint(b, uint64(bl.Offset))
			b = binary.AppendUvarint(b, 1<<63)
			b = binary.AppendUvarint(b, uint64(bl.PlainLength))
			return binary.AppendUvarint(b, 0) // pending
		})},
		brokenCase{name: fmt.Sprintf("index of %d entries in missing packs", batteryRuns(100_000, 10_000_000)), checkFails: true,
			indexEntries: batteryRuns(100_000, 10_000_000), damage: hugeIndex(batteryRuns(100_000, 10_000_000))},
		brokenCase{name: "key file with argon2 memory 2^32-1 KiB (the only key)", noData: true, checkFails: true, damage: keyFile(1<<32-1, 1, true)},
		brokenCase{name: "key file with argon2 memory 4 GiB (the only key)", noData: true, checkFails: true, damage: keyFile(4<<20, 1, true)},
		brokenCase{name: "key file with argon2 memory 4 GiB (tried first)", noData: true, damage: keyFile(4<<20, 1, false)},
		brokenCase{name: "key file with argon2 time 100 x 1 GiB (tried first)", noData: true, damage: keyFile(1<<20, 100, false)},
		brokenCase{name: "config garbage", noData: true, checkFails: true, damage: func(t *testing.T, e *env) func() {
			junk := make([]byte, 300)
			rand.Read(junk)
			writeRepoFile(t, filepath.Join(e.repo, "config"), junk)
			return nil
		}},
	)
	for _, folder := range []string{"data", "index", "snapshots", "keys", "locks"} {
		cases = append(cases, brokenCase{name: "garbage in " + folder + "/", damage: garbage(folder), checkFails: folder == "index" || folder == "snapshots"})
	}
	return cases
}

func TestBatteryBrokenStorage(t *testing.T) {
	requireRoot(t) // the mount
	base := newEnv(t)
	src := filepath.Join(base.dir, "src")
	g := newTreeGen(t, 7)
	for i := 0; i < 3; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("big%d", i)), g.bytes(1<<20+i*300_000))
	}
	for i := 0; i < 20; i++ {
		writeFile(t, filepath.Join(src, "small", fmt.Sprintf("f%02d", i)), g.bytes(100+i*37))
	}
	base.must("init")
	base.must("backup", src)
	want := sourceHashes(t, src)
	timeout := time.Duration(batteryRuns(60, 1800)) * time.Second
	for _, c := range brokenCases() {
		t.Run(strings.ReplaceAll(c.name, "/", "_"), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			shell(t, fmt.Sprintf("cp -a %q %q", base.repo, e.repo))
			runBrokenCase(t, e, c, src, want, timeout)
		})
	}
}

func runBrokenCase(t *testing.T, e *env, c brokenCase, src string, want map[string]string, timeout time.Duration) {
	undo := c.damage(t, e)
	header := []string{"case", "command", "answer", "peak RSS MiB"}
	record := func(cmd string, r boundedResult) {
		assertSaneWithin(t, c.name+": "+cmd, r, c.maxRSS())
		recordReliability(t, "broken-storage", header, c.name, cmd, r.answer(), fmt.Sprint(r.maxRSS>>20))
	}
	chk := e.runBounded(timeout, nil, "check", "--read-data")
	if c.checkFails && chk.code == 0 {
		t.Errorf("%s: check passed:\n%s%s", c.name, chk.stdout, chk.stderr)
	}
	record("check --read-data", chk)
	if c.noData {
		record("snapshots", e.runBounded(timeout, nil, "snapshots"))
		return
	}

	target := filepath.Join(e.dir, "restore")
	r := e.runBounded(timeout, nil, "restore", "latest", "--target", target)
	record("restore", r)
	compareRestore(t, c.name, filepath.Join(target, src), want, r)

	brokenMount(t, e, c, src, want, timeout)

	if undo == nil && !stressMode() {
		// The short form prunes only beside garbage, where prune must
		// not delete good data; the full form prunes every case.
		return
	}
	pr := e.runBounded(timeout, nil, "prune", "--instant-delete")
	record("prune", pr)
	if undo == nil {
		return
	}
	// Garbage only: with it removed again, nothing good may be missing.
	undo()
	chk = e.runBounded(timeout, nil, "check", "--read-data")
	if chk.code != 0 {
		t.Errorf("%s: after prune and removing the garbage, check fails:\n%s%s", c.name, chk.stdout, chk.stderr)
	}
	target2 := filepath.Join(e.dir, "restore2")
	r = e.runBounded(timeout, nil, "restore", "latest", "--target", target2)
	if r.code != 0 {
		t.Errorf("%s: after prune and removing the garbage, restore fails: %s", c.name, r.answer())
	}
	compareRestore(t, c.name+" (after prune)", filepath.Join(target2, src), want, r)
	recordReliability(t, "broken-storage", header, c.name, "check+restore after prune", fmt.Sprintf("check exit %d, restore exit %d", chk.code, r.code), fmt.Sprint(r.maxRSS>>20))
}

// compareRestore checks a restore: a file restored with content other than
// the source's must be named on stderr; with exit 0 every file must be
// there and intact.
func compareRestore(t *testing.T, what, dir string, want map[string]string, r boundedResult) {
	t.Helper()
	if r.timedOut || r.crashed != "" {
		return
	}
	got := map[string]string{}
	if _, err := os.Stat(dir); err == nil {
		got = sourceHashes(t, dir)
	}
	for rel, h := range want {
		g, ok := got[rel]
		switch {
		case !ok && r.code == 0:
			t.Errorf("%s: restore exited 0 without %s", what, rel)
		case ok && g != h && !strings.Contains(r.stderr, rel):
			t.Errorf("%s: restore wrote wrong bytes for %s without naming it (exit %d)", what, rel, r.code)
		}
	}
}

// brokenMount reads every file of the latest snapshot through a mount with
// sha256sum: every file read in full must have its source's hash.
func brokenMount(t *testing.T, e *env, c brokenCase, src string, want map[string]string, timeout time.Duration) {
	m, exitOut := e.mountBounded()
	if m == nil {
		if strings.Contains(exitOut, "panic:") || strings.Contains(exitOut, "goroutine ") || strings.Contains(exitOut, "fatal error:") {
			t.Errorf("%s: the mount crashed:\n%.3000s", c.name, exitOut)
		}
		recordReliability(t, "broken-storage", []string{"case", "command", "answer", "peak RSS MiB"},
			c.name, "mount sha256sum", "mount refused: "+firstLineOf(exitOut), "")
		return
	}
	defer m.stop()
	dir := filepath.Join(m.dir, "snapshots", "latest") + src
	out, timedOut, err := shellBounded(timeout, fmt.Sprintf("cd %q && find . -type f -exec sha256sum {} +", dir))
	ans := "ok"
	switch {
	case timedOut:
		ans = "HANG"
		t.Errorf("%s: reading through the mount did not finish in time", c.name)
	case err != nil:
		ans = "errors: " + firstLineOf(out)
	}
	read := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || len(f[0]) != 64 {
			continue
		}
		rel := strings.TrimPrefix(f[1], "./")
		read++
		if want[rel] != f[0] {
			t.Errorf("%s: the mount served wrong bytes for %s", c.name, rel)
			ans = "WRONG BYTES: " + rel
		}
	}
	rss := m.peakRSS()
	if rss > c.maxRSS() {
		t.Errorf("%s: the mount peaked at %d MiB resident", c.name, rss>>20)
	}
	m.stop()
	if l := m.log.String(); strings.Contains(l, "panic:") || strings.Contains(l, "goroutine ") || strings.Contains(l, "fatal error:") {
		t.Errorf("%s: the mount crashed:\n%.3000s", c.name, l)
	}
	recordReliability(t, "broken-storage", []string{"case", "command", "answer", "peak RSS MiB"},
		c.name, "mount sha256sum", fmt.Sprintf("%s (%d of %d files read)", ans, read, len(want)), fmt.Sprint(rss>>20))
}
