//go:build bench

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
)

// corpus is the tree the backup and mount sections work on: A (a copy of
// the Go tree) and B/bigfile (half random, half tar of /usr/lib).
type corpus struct {
	Root      string `json:"root"`
	A         string `json:"a"`
	Big       string `json:"big"`
	Entries   int    `json:"entries"`    // everything under Root, Root included
	AEntries  int    `json:"a_entries"`  // what `find A | wc -l` prints
	Files     int    `json:"files"`      // regular files
	Bytes     int64  `json:"bytes"`      // bytes of regular files
	ABytes    int64  `json:"a_bytes"`    // bytes of regular files in A
	BigBytes  int64  `json:"big_bytes"`  // size of the bigfile
	BigSHA256 string `json:"big_sha256"` // sha256 of the bigfile
	Source    string `json:"source"`     // what A was copied from
}

// prepareCorpus builds the corpus in the work directory, or reuses it when
// an earlier run finished building it.
func (h *harness) prepareCorpus(ctx context.Context) (*corpus, error) {
	name := "corpus"
	if h.cfg.quick {
		name = "corpus-quick"
	}
	root := filepath.Join(h.cfg.dir, name)
	meta := root + ".json"
	if b, err := os.ReadFile(meta); err == nil {
		var c corpus
		if err := json.Unmarshal(b, &c); err == nil && c.Root == root {
			if _, err := os.Stat(c.Big); err == nil {
				h.logf("corpus: reusing %s (%d entries, %s bytes)", root, c.Entries, commas(c.Bytes))
				return &c, nil
			}
		}
	}
	goroot := runtime.GOROOT()
	if out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		goroot = string(bytes.TrimSpace(out))
	}
	src := goroot
	half := int64(512 << 20)
	if h.cfg.quick {
		src = filepath.Join(goroot, "src", "crypto")
		half = 64 << 20
	}
	h.logf("corpus: building %s: A = cp -a %s, B = %d MiB random + %d MiB of `tar cf - /usr/lib`", root, src, half>>20, half>>20)
	if err := os.RemoveAll(root); err != nil {
		return nil, err
	}
	os.Remove(meta)
	if err := os.MkdirAll(filepath.Join(root, "B"), 0o755); err != nil {
		return nil, err
	}
	c := &corpus{Root: root, A: filepath.Join(root, "A"), Big: filepath.Join(root, "B", "bigfile"), Source: src}
	if out, err := exec.CommandContext(ctx, "cp", "-a", src, c.A).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cp -a %s: %w: %s", src, err, out)
	}
	if err := makeBigfile(ctx, c.Big, half); err != nil {
		return nil, err
	}
	if err := c.measure(); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(c, "", " ")
	if err := os.WriteFile(meta, b, 0o644); err != nil {
		return nil, err
	}
	syscall.Sync()
	h.logf("corpus: %d entries, %d files, %s bytes; bigfile sha256 %s", c.Entries, c.Files, commas(c.Bytes), c.BigSHA256)
	return c, nil
}

// makeBigfile writes half bytes of /dev/urandom and then half bytes of
// `tar cf - /usr/lib`.
func makeBigfile(ctx context.Context, path string, half int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ur, err := os.Open("/dev/urandom")
	if err != nil {
		return err
	}
	defer ur.Close()
	if _, err := io.CopyN(f, ur, half); err != nil {
		return fmt.Errorf("bigfile: random half: %w", err)
	}
	cmd := exec.CommandContext(ctx, "tar", "cf", "-", "/usr/lib")
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	_, cerr := io.CopyN(f, pipe, half)
	cmd.Process.Kill()
	cmd.Wait()
	if cerr != nil {
		return fmt.Errorf("bigfile: tar half: %w", cerr)
	}
	return f.Close()
}

func (c *corpus) measure() error {
	c.Entries, c.Files, c.Bytes = 0, 0, 0
	err := filepath.WalkDir(c.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		c.Entries++
		inA := p == c.A || strings.HasPrefix(p, c.A+"/")
		if inA {
			c.AEntries++
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			c.Files++
			c.Bytes += fi.Size()
			if inA {
				c.ABytes += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	fi, err := os.Stat(c.Big)
	if err != nil {
		return err
	}
	c.BigBytes = fi.Size()
	c.BigSHA256, err = fileSHA256(c.Big)
	return err
}

func (c *corpus) describe() map[string]any {
	return map[string]any{
		"root":             c.Root,
		"A":                fmt.Sprintf("cp -a %s: %d entries, %s bytes of files", c.Source, c.AEntries, commas(c.ABytes)),
		"B/bigfile":        fmt.Sprintf("%s bytes: half /dev/urandom, half `tar cf - /usr/lib`; sha256 %s", commas(c.BigBytes), c.BigSHA256),
		"total":            fmt.Sprintf("%d entries, %d files, %s bytes of files", c.Entries, c.Files, commas(c.Bytes)),
		"MB/s denominator": fmt.Sprintf("%s bytes (the files' sizes)", commas(c.Bytes)),
	}
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// compareTrees checks that dst holds the same tree as src: the same
// entries with the same type, permissions, owner, size, modification time,
// link target and content. It returns the number of entries compared and
// up to 20 differences (and how many there were).
func compareTrees(ctx context.Context, src, dst string) (int, []string, int, error) {
	var diffs []string
	ndiff := 0
	report := func(format string, args ...any) {
		ndiff++
		if len(diffs) < 20 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	seen := 0
	buf1, buf2 := make([]byte, 1<<20), make([]byte, 1<<20)
	type dirTime struct {
		rel  string
		want int64
	}
	var dirs []dirTime
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		seen++
		a, err := os.Lstat(p)
		if err != nil {
			return err
		}
		b, err := os.Lstat(q)
		if err != nil {
			report("%s: missing (%v)", rel, errors.Unwrap(err))
			if d.IsDir() && p != src {
				return filepath.SkipDir
			}
			return nil
		}
		if a.Mode() != b.Mode() {
			report("%s: mode %v, want %v", rel, b.Mode(), a.Mode())
			return nil
		}
		sa, sb := a.Sys().(*syscall.Stat_t), b.Sys().(*syscall.Stat_t)
		if sa.Uid != sb.Uid || sa.Gid != sb.Gid {
			report("%s: owner %d:%d, want %d:%d", rel, sb.Uid, sb.Gid, sa.Uid, sa.Gid)
		}
		switch {
		case a.IsDir():
			dirs = append(dirs, dirTime{rel, a.ModTime().UnixNano()})
			return nil
		case a.Mode()&fs.ModeSymlink != 0:
			ta, _ := os.Readlink(p)
			tb, _ := os.Readlink(q)
			if ta != tb {
				report("%s: link target %q, want %q", rel, tb, ta)
			}
		case a.Mode().IsRegular():
			if a.Size() != b.Size() {
				report("%s: size %d, want %d", rel, b.Size(), a.Size())
				return nil
			}
			same, err := sameContent(p, q, buf1, buf2)
			if err != nil {
				report("%s: %v", rel, err)
			} else if !same {
				report("%s: content differs", rel)
			}
		}
		if !a.ModTime().Equal(b.ModTime()) {
			report("%s: mtime %s, want %s", rel, b.ModTime(), a.ModTime())
		}
		return nil
	})
	if err != nil {
		return seen, diffs, ndiff, err
	}
	for _, d := range dirs {
		fi, err := os.Lstat(filepath.Join(dst, d.rel))
		if err == nil && fi.ModTime().UnixNano() != d.want {
			report("%s/: directory mtime differs", d.rel)
		}
	}
	// Anything extra in dst?
	extra := 0
	err = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		if _, err := os.Lstat(filepath.Join(src, rel)); err != nil {
			extra++
			report("%s: not in the source", rel)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	_ = extra
	return seen, diffs, ndiff, err
}

func sameContent(a, b string, buf1, buf2 []byte) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	for {
		n1, err1 := io.ReadFull(fa, buf1)
		n2, err2 := io.ReadFull(fb, buf2)
		if n1 != n2 || !bytes.Equal(buf1[:n1], buf2[:n2]) {
			return false, nil
		}
		if err1 == io.EOF || err1 == io.ErrUnexpectedEOF {
			return err2 == io.EOF || err2 == io.ErrUnexpectedEOF, nil
		}
		if err1 != nil {
			return false, err1
		}
		if err2 != nil {
			return false, err2
		}
	}
}

// genRand is the deterministic source of the generated trees: the same
// seed gives the same files and the same changes on every machine.
type genRand struct {
	*rand.Rand
	data *rand.ChaCha8
}

func newGenRand(seed uint64) *genRand {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &genRand{Rand: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), data: rand.NewChaCha8(s)}
}

// writeRandomFile writes size incompressible bytes.
func (g *genRand) writeRandomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for size > 0 {
		n := int64(len(buf))
		if n > size {
			n = size
		}
		g.data.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		size -= n
	}
	return f.Close()
}

var words = strings.Fields(`the of and to in is that for it as with was on be by this are or from at
an which have not has but were all can one their there been if more when will would who so no
block chunk index pack tree snapshot backup restore mount repository data file directory key`)

// text returns n bytes of compressible text.
func (g *genRand) text(n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[g.IntN(len(words))])
		if g.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// listFiles returns the regular files under root, sorted, with sizes.
func listFiles(root string) ([]string, map[string]int64, error) {
	var files []string
	sizes := map[string]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, p)
			sizes[p] = fi.Size()
		}
		return nil
	})
	sort.Strings(files)
	return files, sizes, err
}
