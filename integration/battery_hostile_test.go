package integration

// The hostile-trees battery (issue 12): trees and snapshots written with
// the real key but not by backup (rawrepo_test.go), answered by restore (in
// a sandbox whose every file outside the target is hashed before and
// after), the mount (ls -R, find and cat through it), ls, dump, diff, find,
// check and copy. Each must give an answer or a clear error: no panic, no
// hang, no memory blow-up, nothing written outside the restore target.

import (
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"dj/repo/crypto"
	"dj/repo/pack"
	"dj/repo/snapshot"
	"dj/repo/tree"
)

// hostileSandbox is where a hostile snapshot is restored: target lies three
// levels below root, and root holds bait files at every level and in
// outside/, which symlinks in the hostile trees point at.
type hostileSandbox struct {
	root, target, outside string
}

// hostileCase is one hostile repository content.
type hostileCase struct {
	name string
	// build writes the case's snapshots (restored one after the other
	// into one target) and returns their ids.
	build func(rr *rawRepo, sb hostileSandbox) []string
	// bad: the content is invalid, and check must say so.
	bad bool
	// valid: the content is a legal tree, and every command must succeed.
	valid bool
	// deep: the tree is thousands of levels deep.
	deep bool
}

func hostileCases(wide, deep int) []hostileCase {
	pwned := []byte("pwned")
	file := func(rr *rawRepo, name string) *tree.Node {
		return rawFile(name, uint64(len(pwned)), rr.data(pwned))
	}
	one := func(rr *rawRepo, nodes ...*tree.Node) []string {
		return []string{rr.snapshot(rr.tree(nodes...))}
	}
	return []hostileCase{
		{name: "name ..", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			t2 := rr.tree(file(rr, "victim"))
			t1 := rr.tree(rawDir("..", t2), file(rr, "victim"))
			return one(rr, rawDir("..", t1), file(rr, "victim"))
		}},
		{name: "name .", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, rawDir(".", rr.tree(file(rr, "victim"))))
		}},
		{name: "name a/b and ../victim", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, file(rr, "../victim"), file(rr, "a/b"))
		}},
		{name: "name empty", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, file(rr, ""))
		}},
		{name: "name with NUL", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, file(rr, "a\x00b"))
		}},
		{name: "name 100 KiB", build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, file(rr, strings.Repeat("n", 100<<10)), file(rr, "short"))
		}},
		{name: "duplicate names", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, file(rr, "dup"), rawFile("dup", 3, rr.data([]byte("two"))))
		}},
		{name: "unsorted names", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, file(rr, "b"), file(rr, "a"))
		}},
		{name: "symlink then entry inside it (one tree)", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, rawSymlink("esc", sb.outside), rawDir("esc", rr.tree(file(rr, "victim"))))
		}},
		{name: "symlink then entry inside it (two snapshots)", build: func(rr *rawRepo, sb hostileSandbox) []string {
			first := rr.snapshot(rr.tree(rawSymlink("esc", sb.outside), rawSymlink("rel", "../../../outside")))
			inside := rr.tree(file(rr, "victim"))
			second := rr.snapshot(rr.tree(rawDir("esc", inside), rawDir("rel", inside)))
			return []string{first, second}
		}},
		{name: "hardlinks to symlinks", build: func(rr *rawRepo, sb hostileSandbox) []string {
			link := func(n *tree.Node, ino uint64) *tree.Node {
				n.Links, n.Inode, n.DeviceID = 2, ino, 1
				return n
			}
			// a symlink and a file that claim one inode: a restore that
			// links the file to the symlink and then writes it writes
			// through the symlink.
			return one(rr,
				link(rawSymlink("a", filepath.Join(sb.outside, "victim")), 7),
				link(file(rr, "b"), 7),
				link(rawSymlink("c", "../../../outside/victim"), 8),
				link(rawSymlink("d", "elsewhere"), 8),
			)
		}},
		{name: "file content names a tree blob", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			sub := rr.tree(file(rr, "x"))
			return one(rr, rawFile("f", 100, sub))
		}},
		{name: "directory subtree names a data blob", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, rawDir("d", rr.data([]byte(`{"nodes":[]}`))))
		}},
		{name: "size larger than blobs", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, rawFile("f", 1000, rr.data(pwned)))
		}},
		{name: "size smaller than blobs", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			return one(rr, rawFile("f", 2, rr.data(pwned)))
		}},
		{name: "tree cycle (forged id)", bad: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			var id crypto.ID
			rand.Read(id[:])
			sub := id
			b := fmt.Sprintf(`{"nodes":[{"name":"loop","type":"dir","mode":2147484141,"uid":0,"gid":0,"mtime":0,"atime":0,"ctime":0,"subtree":"%s"}]}`, sub)
			rr.forged(pack.TreeBlob, id, []byte(b))
			return []string{rr.snapshot(id)}
		}},
		{name: fmt.Sprintf("%d levels", deep), deep: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			id := rr.tree(file(rr, "bottom"))
			for i := 0; i < deep; i++ {
				id = rr.tree(rawDir("d", id))
			}
			return []string{rr.snapshot(id)}
		}},
		{name: fmt.Sprintf("%d entries", wide), valid: true, build: func(rr *rawRepo, sb hostileSandbox) []string {
			blob := rr.data([]byte("x"))
			nodes := make([]*tree.Node, wide)
			for i := range nodes {
				nodes[i] = rawFile(fmt.Sprintf("f%08d", i), 1, blob)
			}
			return one(rr, nodes...)
		}},
		{name: "snapshot paths, host and tags with ..", build: func(rr *rawRepo, sb hostileSandbox) []string {
			root := rr.tree(file(rr, "victim"))
			return []string{rr.saveSnapshot(&snapshot.Snapshot{Time: time.Now(), Tree: root,
				Paths:    []string{"/../../victim", "../victim", "a/../../b", "/"},
				Hostname: "..", Username: "..", Tags: []string{"..", "a/b", "."}})}
		}},
	}
}

func TestBatteryHostileTrees(t *testing.T) {
	requireRoot(t) // the mount, and restore's ownership
	wide := batteryRuns(5_000, 1_000_000)
	timeout := time.Duration(batteryRuns(60, 1800)) * time.Second
	for _, c := range hostileCases(wide, batteryRuns(2_500, 10_000)) {
		t.Run(strings.ReplaceAll(c.name, "/", "_"), func(t *testing.T) {
			// Most of a case's time is spent waiting for processes to
			// start and mounts to come up.
			t.Parallel()
			runHostileCase(t, c, timeout)
		})
	}
}

func runHostileCase(t *testing.T, c hostileCase, timeout time.Duration) {
	e := newEnv(t)
	e.must("init")
	sb := hostileSandbox{root: filepath.Join(e.dir, "h")}
	sb.target = filepath.Join(sb.root, "a", "b", "t")
	sb.outside = filepath.Join(sb.root, "outside")
	for _, d := range []string{"", "a", "a/b", "outside"} {
		writeFile(t, filepath.Join(sb.root, d, "victim"), []byte("bait "+d))
	}
	rr := e.openRaw()
	base := rr.snapshot(rr.tree(rawFile("base", 4, rr.data([]byte("base")))))
	snaps := c.build(rr, sb)
	rr.done()

	record := func(cmd string, r boundedResult) {
		assertSane(t, c.name+": "+cmd, r)
		if c.valid && r.code != 0 {
			t.Errorf("%s: dj %s failed on a valid tree: %s", c.name, strings.Join(r.args, " "), r.answer())
		}
		recordReliability(t, "hostile-trees", []string{"case", "command", "answer", "peak RSS MiB"},
			c.name, cmd, r.answer(), fmt.Sprint(r.maxRSS>>20))
	}

	// restore, into the sandbox, every snapshot in turn into one target.
	before := hashOutside(t, sb.root, sb.target)
	var last boundedResult
	for _, id := range snaps {
		r := e.runBounded(timeout, nil, "restore", id, "--target", sb.target)
		if last.code == 0 || r.code != 0 {
			last = r
		}
		assertSane(t, c.name+": restore", r)
	}
	if d := sameOutside(before, hashOutside(t, sb.root, sb.target)); len(d) > 0 {
		t.Errorf("%s: restore changed files outside its target:\n%s", c.name, strings.Join(d, "\n"))
		last.stderr += "\nWROTE OUTSIDE TARGET"
		last.code = -1
	}
	if c.bad && last.code == 0 && strings.TrimSpace(last.stderr) == "" {
		t.Errorf("%s: restore said nothing about an invalid tree", c.name)
	}
	record("restore", last)

	for _, id := range snaps {
		record("ls", e.runBounded(timeout, nil, "ls", "-l", id))
		record("dump", e.runBounded(timeout, nil, "dump", id, "/"))
		record("diff", e.runBounded(timeout, nil, "diff", base, id))
		record("find", e.runBounded(timeout, nil, "find", "--snapshot", id, "*"))
	}
	chk := e.runBounded(timeout, nil, "check", "--read-data")
	if c.bad && chk.code == 0 {
		t.Errorf("%s: check passed an invalid tree:\n%s", c.name, chk.stdout)
	}
	record("check", chk)

	dst := newEnv(t)
	dst.must("init")
	record("copy", dst.runBounded(timeout, []string{"DJ_FROM_REPOSITORY=" + e.repo, "DJ_FROM_PASSWORD=" + e.password}, "copy"))

	hostileMount(t, e, c, snaps, timeout)
}

// hostileMount mounts the repository and reads every snapshot with ls -R,
// find and cat, each within timeout.
func hostileMount(t *testing.T, e *env, c hostileCase, snaps []string, timeout time.Duration) {
	m, out := e.mountBounded()
	if m == nil {
		t.Errorf("%s: dj mount exited: %s", c.name, out)
		return
	}
	defer m.stop()
	answers := map[string]string{}
	for _, id := range snaps {
		dir := filepath.Join(m.dir, "ids", id[:8])
		for _, probe := range []struct{ name, script string }{
			{"mount ls -laR", fmt.Sprintf("ls -laR %q >/dev/null", dir)},
			{"mount find", fmt.Sprintf("find %q", dir)},
			{"mount cat", fmt.Sprintf("find %q -type f -exec cat {} + >/dev/null", dir)},
		} {
			if probe.name == "mount ls -laR" && c.deep && !stressMode() {
				// ls -R names every entry by its full path: quadratic in
				// the depth (12 s for 5,000 levels); find walks it.
				answers[probe.name] = "skipped (short form: ls -R is quadratic in depth)"
				continue
			}
			out, timedOut, err := shellBounded(timeout, probe.script)
			ans := "ok"
			switch {
			case timedOut:
				ans = "HANG"
				t.Errorf("%s: %s through the mount did not finish in time\n%s", c.name, probe.name, m.log.String())
			case err != nil:
				ans = "errors: " + firstLineOf(out)
				if c.valid {
					t.Errorf("%s: %s through the mount failed on a valid tree: %v\n%s", c.name, probe.name, err, out)
				}
			}
			if probe.name == "mount find" && !timedOut {
				lines := strings.Split(strings.TrimSpace(out), "\n")
				if len(out) >= 64<<10 {
					lines = lines[:len(lines)-1] // cut by the output limit
				}
				for _, line := range lines {
					if strings.HasPrefix(line, "find: ") {
						continue
					}
					if !strings.HasPrefix(line, dir) || strings.Contains(line+"/", "/../") || strings.Contains(line+"/", "/./") {
						t.Errorf("%s: the mount shows a path outside itself: %q", c.name, line)
						ans = "ESCAPES: " + line
						break
					}
				}
			}
			if answers[probe.name] == "" || answers[probe.name] == "ok" {
				answers[probe.name] = ans
			}
		}
	}
	rss := m.peakRSS()
	if rss > boundedMaxRSS {
		t.Errorf("%s: the mount peaked at %d MiB resident", c.name, rss>>20)
	}
	m.stop()
	if strings.Contains(m.log.String(), "panic:") || strings.Contains(m.log.String(), "goroutine ") || strings.Contains(m.log.String(), "fatal error:") {
		t.Errorf("%s: the mount crashed:\n%.3000s", c.name, m.log.String())
	}
	for _, p := range []string{"mount ls -laR", "mount find", "mount cat"} {
		recordReliability(t, "hostile-trees", []string{"case", "command", "answer", "peak RSS MiB"},
			c.name, p, answers[p], fmt.Sprint(rss>>20))
	}
}

// firstLineOf is the first line of s, shortened.
func firstLineOf(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 90 {
		// Cut at a character's start: half a character made
		// RELIABILITY.md invalid UTF-8.
		n := 90
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return s
}
