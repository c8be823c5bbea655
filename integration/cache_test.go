package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// requestCounter is a reverse proxy in front of `dj serve` that counts the
// requests that read a file (GET or HEAD of a path below data/, index/ or
// snapshots/; listings of a directory do not count).
type requestCounter struct {
	mu    sync.Mutex
	reads []string
}

func (c *requestCounter) proxy(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			p := strings.Trim(r.URL.Path, "/")
			for _, dir := range []string{"data/", "index/", "snapshots/"} {
				if strings.HasPrefix(p, dir) && !strings.HasSuffix(p, "/") && strings.Count(p, "/") >= 1 && len(p) > len(dir) {
					c.mu.Lock()
					c.reads = append(c.reads, r.Method+" "+p)
					c.mu.Unlock()
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// take returns the counted reads and starts counting afresh.
func (c *requestCounter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.reads
	c.reads = nil
	return r
}

// dataReads are the reads among rs of pack files.
func dataReads(rs []string) []string {
	var out []string
	for _, r := range rs {
		if strings.Contains(r, " data/") {
			out = append(out, r)
		}
	}
	return out
}

func cacheRepoID(t *testing.T, e *env) string {
	t.Helper()
	var cfg struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(e.must("cat", "config")), &cfg); err != nil || len(cfg.ID) != 64 {
		t.Fatalf("cat config: %v %q", err, cfg.ID)
	}
	return cfg.ID
}

// TestCacheRemoteWarmCommandsReadNoData: over `dj serve` behind a
// counting proxy, once the cache is warm, snapshots, ls, find and diff
// (and find through a mount) read no pack, index or snapshot file from the
// server; the cache is named by the repository id and shared by two
// locations of the repository; a damaged cached file is fetched again.
func TestCacheRemoteWarmCommandsReadNoData(t *testing.T) {
	e := newEnv(t)
	var counter requestCounter
	url := counter.proxy(t, e.serve())
	cacheBase := filepath.Join(e.dir, "cache")
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url, "DJ_CACHE_DIR="+cacheBase)
	src := filepath.Join(e.dir, "src")
	for i := 0; i < 30; i++ {
		writeFile(t, filepath.Join(src, "d"+string(rune('a'+i%5)), "f"+string(rune('a'+i))), []byte(strings.Repeat("x", 1000+i)))
	}
	e.must("init")
	e.must("backup", src)
	writeFile(t, filepath.Join(src, "new.txt"), []byte("new"))
	e.must("backup", src)

	id := cacheRepoID(t, e)
	dir := filepath.Join(cacheBase, id)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("cache dir %s: %v", dir, err)
	}

	// Cold: start from an empty cache, so every file is fetched once.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	commands := [][]string{
		{"snapshots"},
		{"ls", "latest"},
		{"find", "fc"},
		{"diff", "--", snapIDs(t, e)[0], snapIDs(t, e)[1]},
	}
	for _, args := range commands {
		e.must(args...)
	}
	if len(dataReads(counter.take())) == 0 {
		t.Fatal("cold commands read no pack: the counting proxy counts nothing")
	}
	for _, args := range commands {
		out := e.must(args...)
		if rs := counter.take(); len(rs) != 0 {
			t.Errorf("warm dj %s read from the server: %v\n%s", strings.Join(args, " "), rs, out)
		}
	}

	// Another location string of the same repository shares the cache.
	other := strings.Replace(url, "127.0.0.1", "localhost", 1)
	if r := e.runEnv([]string{"DJ_REPOSITORY=rest:" + other}, "ls", "latest"); r.code != 0 {
		t.Fatalf("ls through %s: exit %d\n%s", other, r.code, r.stderr)
	}
	if rs := counter.take(); len(rs) != 0 {
		t.Errorf("ls through a second location string read from the server: %v", rs)
	}
	entries, _ := os.ReadDir(cacheBase)
	var dirs []string
	for _, en := range entries {
		if en.IsDir() {
			dirs = append(dirs, en.Name())
		}
	}
	if len(dirs) != 1 || dirs[0] != id {
		t.Errorf("cache base holds %v, want only %s", dirs, id)
	}

	// A damaged cached tree pack and index file are fetched again, and
	// the commands still succeed and still show the same.
	want := e.must("ls", "latest")
	packs, _ := filepath.Glob(filepath.Join(dir, "data", "*", "*"))
	indexes, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	if len(packs) == 0 || len(indexes) == 0 {
		t.Fatalf("nothing cached: packs %v, indexes %v", packs, indexes)
	}
	for _, p := range append(packs, indexes...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.must("ls", "latest"); got != want {
		t.Errorf("ls over a damaged cache:\n%s\nwant:\n%s", got, want)
	}
	e.must("ls", snapIDs(t, e)[0]) // reads the other tree packs
	if len(dataReads(counter.take())) == 0 {
		t.Error("damaged cached packs were not fetched again")
	}
	for _, p := range append(packs, indexes...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != filepath.Base(p) {
			t.Errorf("%s: still damaged after a refetch", p)
		}
	}
	e.must("ls", "latest")
	e.must("ls", snapIDs(t, e)[0])
	if rs := counter.take(); len(rs) != 0 {
		t.Errorf("ls after the repair read from the server: %v", rs)
	}

	// check reads what the server holds, never the cache.
	e.must("check")
	if len(dataReads(counter.take())) == 0 {
		t.Error("check read no pack from the server")
	}

	// --no-cache reads from the server.
	e.must("--no-cache", "ls", "latest")
	if len(dataReads(counter.take())) == 0 {
		t.Error("ls --no-cache read no pack from the server")
	}

	// find through a mount, twice (a second mount, warm): no reads.
	if os.Geteuid() != 0 || !haveFUSE() {
		return
	}
	m := e.mount()
	if out, err := exec.Command("find", m.dir+"/snapshots/latest/").CombinedOutput(); err != nil {
		t.Fatalf("find through the mount: %v\n%s", err, out)
	}
	m.stop()
	counter.take()
	m = e.mount()
	out, err := exec.Command("find", m.dir+"/snapshots/latest/").CombinedOutput()
	if err != nil {
		t.Fatalf("find through the second mount: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "new.txt") {
		t.Errorf("find through the mount does not show new.txt:\n%s", out)
	}
	m.stop()
	if rs := counter.take(); len(rs) != 0 {
		t.Errorf("find through a warm mount read from the server: %v", rs)
	}
}

func haveFUSE() bool {
	_, err := os.Stat("/dev/fuse")
	return err == nil
}

// snapIDs returns the ids of the snapshots, oldest first.
func snapIDs(t *testing.T, e *env) []string {
	t.Helper()
	var snaps []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(e.must("snapshots", "--json")), &snaps); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(snaps))
	for i, s := range snaps {
		ids[i] = s.ID
	}
	return ids
}

// TestCacheListAndCleanup: `dj cache --json` lists the cache of a remote
// repository by its id; --cleanup removes a cache not used for 30 days
// and keeps the one in use.
func TestCacheListAndCleanup(t *testing.T) {
	e := newEnv(t)
	url := e.serve()
	cacheBase := filepath.Join(e.dir, "cache")
	e.extraEnv = append(e.extraEnv, "DJ_REPOSITORY=rest:"+url, "DJ_CACHE_DIR="+cacheBase)
	e.must("init")
	id := cacheRepoID(t, e)
	old := strings.Repeat("ab", 32)
	if err := os.MkdirAll(filepath.Join(cacheBase, old, "index"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(cacheBase, old, "index", "x"), []byte("12345"))
	then := time.Now().Add(-40 * 24 * time.Hour)
	if err := os.Chtimes(filepath.Join(cacheBase, old), then, then); err != nil {
		t.Fatal(err)
	}

	type entry struct {
		ID       string    `json:"repo_id"`
		Path     string    `json:"path"`
		LastUsed time.Time `json:"last_used"`
		Old      bool      `json:"old"`
		Size     *int64    `json:"size"`
	}
	var list []entry
	if err := json.Unmarshal([]byte(e.must("cache", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != id || list[0].Old || list[1].ID != old || !list[1].Old ||
		list[0].Path != filepath.Join(cacheBase, id) || list[1].Size == nil || *list[1].Size != 5 ||
		time.Since(list[0].LastUsed) > time.Minute {
		t.Fatalf("cache --json: %+v", list)
	}
	if out := e.must("cache"); !strings.Contains(out, id[:10]) || !strings.Contains(out, "2 cache dirs in "+cacheBase) {
		t.Errorf("cache:\n%s", out)
	}
	out := e.must("cache", "--cleanup")
	if !strings.Contains(out, old) {
		t.Errorf("cache --cleanup: %s", out)
	}
	if _, err := os.Stat(filepath.Join(cacheBase, old)); !os.IsNotExist(err) {
		t.Errorf("old cache still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cacheBase, id)); err != nil {
		t.Errorf("cache in use removed: %v", err)
	}
	if r := e.run("cache", "--max-age", "-1"); r.code == 0 {
		t.Error("cache --max-age -1 accepted")
	}
}
