//go:build bench

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"dj/pve/vma"
)

// The vm section (issue 13): a disk image backed up as a fixed-chunked
// file, as a block device and inside two Proxmox VE dumps (VMA streams);
// how much a day of a guest's writes adds, and how fast the image backs
// up against restic's --stdin and against dj on one core.

// vmImageVersion names the generator: images made by another version are
// made again.
const vmImageVersion = "vm-images-1"

// vmImages are the generated disk images: base, base with 1% rewritten in
// 2 MiB runs at 2 MiB-aligned places (a day of a guest's writes is
// clustered), and base with 0.1% rewritten in scattered 4 KiB blocks.
type vmImages struct {
	size      int64
	base      string
	changed   string
	scattered string
	runs      int // 2 MiB runs rewritten in changed
	blocks    int // 4 KiB blocks rewritten in scattered
}

// vmBlock is the unit of the generated contents: blocks alternate between
// incompressible bytes and text, so the image is half random, half
// compressible.
const vmBlock = 1 << 20

// prepareVMImages makes the images under dir/vm, or reuses those a run of
// the same generator made.
func (h *harness) prepareVMImages(ctx context.Context) (*vmImages, error) {
	size := int64(4 << 30)
	if h.cfg.quick {
		size = 512 << 20
	}
	if v := os.Getenv("BENCH_VM_SIZE_MIB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 64 || n%4 != 0 {
			return nil, fmt.Errorf("BENCH_VM_SIZE_MIB=%q: want a multiple of 4 of at least 64", v)
		}
		size = n << 20
	}
	dir := filepath.Join(h.cfg.dir, "vm", "images")
	im := &vmImages{size: size, base: filepath.Join(dir, "base.img"), changed: filepath.Join(dir, "changed.img"),
		scattered: filepath.Join(dir, "scattered.img")}
	im.runs = int(size / 100 / (2 << 20))
	im.blocks = int(size / 1000 / 4096)
	stamp := filepath.Join(dir, "STAMP")
	want := fmt.Sprintf("%s size=%d runs=%d blocks=%d\n", vmImageVersion, size, im.runs, im.blocks)
	if b, err := os.ReadFile(stamp); err == nil && string(b) == want {
		ok := true
		for _, p := range []string{im.base, im.changed, im.scattered} {
			if fi, err := os.Stat(p); err != nil || fi.Size() != size {
				ok = false
			}
		}
		if ok {
			h.logf("vm: reusing the images in %s (%s)", dir, strings.TrimSpace(want))
			return im, nil
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	h.logf("vm: writing a %d MiB image (half random, half text) and its two changed copies", size>>20)
	if err := writeVMImage(ctx, im.base, size); err != nil {
		return nil, err
	}
	g := newGenRand(13)
	// 1% in 2 MiB runs at distinct 2 MiB-aligned places.
	var runs []int64
	for _, i := range g.Perm(int(size / (2 << 20)))[:im.runs] {
		runs = append(runs, int64(i)*(2<<20))
	}
	if err := copyAndRewrite(im.base, im.changed, runs, 2<<20, g); err != nil {
		return nil, err
	}
	// 0.1% in scattered 4 KiB blocks.
	var blocks []int64
	for _, i := range g.Perm(int(size / 4096))[:im.blocks] {
		blocks = append(blocks, int64(i)*4096)
	}
	if err := copyAndRewrite(im.base, im.scattered, blocks, 4096, g); err != nil {
		return nil, err
	}
	if err := os.WriteFile(stamp, []byte(want), 0o644); err != nil {
		return nil, err
	}
	return im, nil
}

// writeVMImage writes size bytes: even blocks of vmBlock bytes random, odd
// ones text (each unique: a rotation of a text pool stamped with its
// number), so nothing deduplicates inside one image.
func writeVMImage(ctx context.Context, path string, size int64) error {
	g := newGenRand(7)
	pool := g.text(8 << 20)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 4<<20)
	buf := make([]byte, vmBlock)
	for b := int64(0); b*vmBlock < size; b++ {
		if ctx.Err() != nil {
			f.Close()
			return ctx.Err()
		}
		if b%2 == 0 {
			g.data.Read(buf)
		} else {
			off := g.IntN(len(pool) - vmBlock)
			copy(buf, pool[off:off+vmBlock])
			binary.LittleEndian.PutUint64(buf, uint64(b))
		}
		if _, err := w.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copyAndRewrite copies src to dst and overwrites n random bytes at each
// offset.
func copyAndRewrite(src, dst string, offsets []int64, n int, g *genRand) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	buf := make([]byte, n)
	for _, off := range offsets {
		g.data.Read(buf)
		if _, err := out.WriteAt(buf, off); err != nil {
			out.Close()
			return err
		}
	}
	return out.Close()
}

// vmaStream writes the image at path to w as the VMA dump of a guest with
// one disk, as vzdump would: a fresh UUID (from seed), and the clusters
// nearly in order: shuffled within windows of 16, and one in a hundred
// sent early (a guest's write during the backup copies the old cluster
// out of turn). The order changes with seed.
func vmaStream(path string, seed uint64, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	g := newGenRand(seed)
	var h vma.Header
	g.data.Read(h.UUID[:])
	h.CTime = 1767225600 + int64(seed)*86400
	h.Configs = []vma.Config{{Name: "qemu-server.conf", Data: []byte("boot: order=scsi0\ncores: 2\nmemory: 4096\nname: bench\nscsi0: local-lvm:vm-100-disk-0,size=" +
		strconv.FormatInt(fi.Size()>>30, 10) + "G\n")}}
	h.Devices = []vma.Device{{ID: 1, Name: "drive-scsi0", Size: uint64(fi.Size())}}
	bw := bufio.NewWriterSize(w, 1<<20)
	vw, err := vma.NewWriter(bw, h)
	if err != nil {
		return err
	}
	n := int(h.Devices[0].Clusters())
	order := make([]int, 0, n)
	early := map[int]bool{}
	for i := 0; i < n; i += 16 {
		win := make([]int, 0, 16)
		for j := i; j < min(n, i+16); j++ {
			win = append(win, j)
		}
		g.Shuffle(len(win), func(a, b int) { win[a], win[b] = win[b], win[a] })
		for _, c := range win {
			if early[c] {
				continue
			}
			order = append(order, c)
			// Now and then a cluster far ahead is sent out of turn.
			if g.IntN(100) == 0 {
				if far := c + 64 + g.IntN(4096); far < n && !early[far] {
					early[far] = true
					order = append(order, far)
				}
			}
		}
	}
	buf := make([]byte, vma.ClusterSize)
	for _, c := range order {
		k, err := f.ReadAt(buf, int64(c)*vma.ClusterSize)
		if err != nil && err != io.EOF {
			return err
		}
		if err := vw.WriteCluster(1, uint32(c), buf[:k]); err != nil {
			return err
		}
	}
	if err := vw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// vmaStreamMain is `djbench vma-stream IMAGE SEED`: the benchmarks pipe
// it into the tools' --stdin.
func vmaStreamMain(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: djbench vma-stream IMAGE SEED")
		return 2
	}
	seed, err := strconv.ParseUint(args[1], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vma-stream:", err)
		return 2
	}
	if err := vmaStream(args[0], seed, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vma-stream:", err)
		return 1
	}
	return 0
}

// loopDevice attaches path read-only to a free loop device.
func loopDevice(ctx context.Context, path string) (string, func(), error) {
	// Direct I/O on the backing file: a real disk has no second page cache
	// beneath it.
	out, err := exec.CommandContext(ctx, "losetup", "-r", "--direct-io=on", "-f", "--show", path).Output()
	if err != nil {
		return "", nil, fmt.Errorf("losetup -r --direct-io=on -f --show %s: %w", path, err)
	}
	dev := strings.TrimSpace(string(out))
	return dev, func() { exec.Command("losetup", "-d", dev).Run() }, nil
}

// vmSection measures issue 13's figures.
func (h *harness) vmSection(ctx context.Context) *report {
	names := h.toolNames()
	r := h.newReport("vm", names...)
	im, err := h.prepareVMImages(ctx)
	if err != nil {
		h.problem("vm: images: %v", err)
		return r
	}
	sizeMB := float64(im.size) / 1e6
	r.Corpus = map[string]any{"image bytes": im.size, "image": "half random, half text in alternating 1 MiB blocks, nothing repeated",
		"changed":   fmt.Sprintf("%d runs of 2 MiB rewritten at random 2 MiB-aligned offsets (1%%)", im.runs),
		"scattered": fmt.Sprintf("%d blocks of 4 KiB rewritten at random 4 KiB-aligned offsets (0.1%%)", im.blocks)}

	r.fig("add_file", "1% rewritten in 2 MiB runs, image as a file: 2nd backup adds (dj: --chunker-files '*.img', 1 MiB fixed chunks; restic: the file, its CDC)", "% of image", false,
		below(3, "dj", "dj < 3%"))
	r.fig("add_device", "1% rewritten in 2 MiB runs, image as a block device (dj --read-special on a loop device)", "% of image", false,
		below(3, "dj", "dj < 3%"))
	r.fig("add_vma", "1% rewritten in 2 MiB runs, two VMA dumps of the image on stdin (new UUID, clusters out of order)", "% of image", false,
		below(3, "dj", "dj < 3%"))
	r.fig("add_scattered", "0.1% rewritten in scattered 4 KiB blocks, image as a file (dj: 1 MiB fixed chunks)", "% of image", false)
	r.fig("add_file_4m", "dj --chunker fixed:4MiB (Proxmox Backup Server's size): 1% in 2 MiB runs, image as a file", "% of image", false)
	r.fig("add_scattered_4m", "dj --chunker fixed:4MiB: 0.1% in scattered 4 KiB blocks, image as a file", "% of image", false)
	r.fig("img_backup", "initial backup of the image, wall, cold cache (dj: the file, fixed chunks; restic: `backup --stdin < image`)", "s", false,
		atLeastTimes(3, "dj", "restic", "dj ≥3× restic --stdin")).withRatio()
	r.fig("img_mbs", "initial backup of the image, throughput", "MB/s", true).withRatio()
	r.fig("img_cpu", "initial backup of the image, CPU user+sys", "s", false).withRatio()
	r.fig("img_rss", "initial backup of the image, peak RSS", "MiB", false).withRatio()
	r.fig("img_1core", "dj on one core (taskset -c 0, GOMAXPROCS=1), initial backup of the image, wall", "s", false)
	r.fig("img_speedup", "dj on both cores: speed-up over dj on one core", "×", true,
		atLeast(1.8, "dj", "≥ 1.8×"))
	r.fig("disk_read", "reading the block device (dd bs=4M iflag=direct, as dj reads it), wall", "s", false)
	r.fig("file_read", "for orientation: reading the image file through the page cache (dd bs=4M, cold cache), wall", "s", false)
	r.fig("dev_rebackup", "unchanged block device re-backup (every chunk read and hashed, none stored), wall, cold cache", "s", false)
	r.fig("dev_rebackup_vs_read", "unchanged block device re-backup / disk read", "×", false,
		atMost(1.25, "dj", "≤ 1.25× (disk speed)"))
	r.fig("vma_backup", "backup of a VMA dump on stdin (generated on the fly by the harness), wall", "s", false).withRatio()

	work := filepath.Join(h.cfg.dir, "vm", "work")
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		h.problem("vm: %v", err)
		return r
	}
	defer os.RemoveAll(work)
	self, err := os.Executable()
	if err != nil {
		h.problem("vm: %v", err)
		return r
	}
	// The image sits at one path, work/img/disk.img, hard-linked to the
	// version a backup should see.
	imgDir := filepath.Join(work, "img")
	os.MkdirAll(imgDir, 0o755)
	img := filepath.Join(imgDir, "disk.img")
	place := func(src string) error {
		os.Remove(img)
		return os.Link(src, img)
	}
	fresh := func(name, label string) (*tool, error) {
		t := h.newTool(name, filepath.Join(work, label+"-"+name))
		if err := t.removeRepo(); err != nil {
			return nil, err
		}
		_, err := h.plain(ctx, t, "init")
		return t, err
	}
	// added runs backup with the image placed at base, then at next, and
	// returns what the second backup added to the repository, in percent of
	// the image.
	added := func(t *tool, next string, args ...string) (float64, error) {
		var sizes [2]int64
		for i, img := range []string{im.base, next} {
			if err := place(img); err != nil {
				return 0, err
			}
			if _, err := h.plain(ctx, t, "backup", append(args, imgDir)...); err != nil {
				return 0, err
			}
			var err error
			if sizes[i], err = duBytes(t.repo); err != nil {
				return 0, err
			}
		}
		return 100 * float64(sizes[1]-sizes[0]) / float64(im.size), nil
	}
	fixed := []string{"--chunker-files", "*.img"}
	type addCase struct {
		key, tool, next string
		args            []string
	}
	cases := []addCase{
		{"add_file", "dj", im.changed, fixed},
		{"add_file", "restic", im.changed, nil},
		{"add_scattered", "dj", im.scattered, fixed},
		{"add_scattered", "restic", im.scattered, nil},
		{"add_file_4m", "dj", im.changed, append(fixed, "--chunker", "fixed:4MiB")},
		{"add_scattered_4m", "dj", im.scattered, append(fixed, "--chunker", "fixed:4MiB")},
	}
	for _, c := range cases {
		if !h.cfg.tools[c.tool] || ctx.Err() != nil {
			continue
		}
		h.logf("vm: %s: %s", c.tool, c.key)
		t, err := fresh(c.tool, "add")
		if err == nil {
			var pct float64
			if pct, err = added(t, c.next, c.args...); err == nil {
				r.add(c.key, c.tool, pct)
				h.logf("vm: %s: %s: the second backup added %.2f%% of the image", c.tool, c.key, pct)
			}
		}
		if err != nil {
			h.problem("vm: %s: %s: %v", c.tool, c.key, err)
			r.text(c.key, c.tool, errText(err))
		}
		t.removeRepo()
	}

	// The block device: the same path (a symbolic link to the loop device)
	// for both backups, so the second has the first as its parent.
	if h.cfg.tools["dj"] && ctx.Err() == nil {
		if err := h.vmDevice(ctx, r, im, work, fresh); err != nil {
			h.problem("vm: block device: %v", err)
			r.text("add_device", "dj", errText(err))
		}
	}

	// Two VMA dumps on stdin, each a fresh UUID and cluster order.
	for _, n := range names {
		if ctx.Err() != nil {
			break
		}
		t, err := fresh(n, "vma")
		if err != nil {
			h.problem("vm: %s: vma: %v", n, err)
			continue
		}
		var sizes []int64
		for i, src := range []string{im.base, im.changed} {
			script := fmt.Sprintf("%s vma-stream %s %d | exec %s", shellJoin([]string{self}), shellJoin([]string{src}), i+1,
				shellJoin(t.argv("backup", "--stdin", "--stdin-filename", "vzdump-qemu-100.vma")))
			res, err := h.run1(ctx, n+"-backup-vma", t.env, false, "/bin/sh", "-c", script)
			if err != nil {
				h.problem("vm: %s: vma dump %d: %v", n, i+1, err)
				break
			}
			r.add("vma_backup", n, res.Wall)
			sz, err := duBytes(t.repo)
			if err != nil {
				h.problem("vm: %s: %v", n, err)
				break
			}
			sizes = append(sizes, sz)
			h.logf("vm: %s: vma dump %d backed up in %.1fs, repository %d MB", n, i+1, res.Wall, sz/1e6)
		}
		if len(sizes) == 2 {
			r.add("add_vma", n, 100*float64(sizes[1]-sizes[0])/float64(im.size))
		}
		t.removeRepo()
	}

	// Speed: the initial backup of the image, each run into a fresh
	// repository after drop_caches.
	for run := 1; run <= h.cfg.runs && ctx.Err() == nil; run++ {
		for _, n := range names {
			t, err := fresh(n, "speed")
			if err != nil {
				h.problem("vm: %s: %v", n, err)
				continue
			}
			dropCaches()
			var res *cmdResult
			if n == "dj" {
				if err = place(im.base); err == nil {
					res, err = h.timed(ctx, t, "backup", append(fixed, imgDir)...)
				}
			} else {
				argv := append([]string{"/bin/sh", "-c", `exec "$0" "$@" < ` + shellJoin([]string{im.base})},
					t.argv("backup", "--stdin", "--stdin-filename", "disk.img")...)
				res, err = h.run1(ctx, n+"-backup-stdin", t.env, true, argv...)
			}
			if err != nil {
				h.problem("vm: %s: image backup: %v", n, err)
				r.text("img_backup", n, errText(err))
				t.removeRepo()
				continue
			}
			r.add("img_backup", n, res.Wall)
			r.add("img_mbs", n, sizeMB/res.Wall)
			r.add("img_cpu", n, res.CPU())
			r.add("img_rss", n, res.MaxRSS)
			h.logf("vm: %s: image backup %.1fs (%.0f MB/s), CPU %.1fs, RSS %.0f MiB", n, res.Wall, sizeMB/res.Wall, res.CPU(), res.MaxRSS)
			if n == "dj" {
				t2, err := fresh(n, "speed1")
				if err == nil {
					dropCaches()
					env := append(append([]string(nil), t2.env...), "GOMAXPROCS=1")
					var one *cmdResult
					one, err = h.run1(ctx, "dj-backup-1core", env, true, append([]string{"taskset", "-c", "0"}, t2.argv("backup", append(fixed, imgDir)...)...)...)
					if err == nil {
						r.add("img_1core", n, one.Wall)
						r.add("img_speedup", n, one.Wall/res.Wall)
						h.logf("vm: dj on one core: %.1fs (%.2f× slower)", one.Wall, one.Wall/res.Wall)
					}
				}
				if err != nil {
					h.problem("vm: dj on one core: %v", err)
				}
				t2.removeRepo()
			}
			t.removeRepo()
		}
	}
	r.Notes = append(r.Notes,
		"The images: `BENCH_VM_SIZE_MIB` (default 4096; 512 with BENCH_QUICK) of alternating 1 MiB blocks of random bytes and of text (each a different rotation of a text pool, stamped with its number), so half is incompressible, half compressible, and nothing repeats inside one image. changed.img: 1% of the image rewritten with random bytes in 2 MiB runs at distinct random 2 MiB-aligned offsets (a day of a guest's writes is clustered). scattered.img: 0.1% rewritten in single 4 KiB blocks at random 4 KiB-aligned offsets: each touches a different chunk, and no chunking helps them. Made once under BENCH_DIR/vm/images and reused.",
		"\"2nd backup adds\": `du -sb` of the repository after the backup of the changed image minus after the backup of the base image, in percent of the image's size (compressed and encrypted as stored, index and snapshot files included). The image is one path, hard-linked to base.img, then to the changed copy.",
		"Block device: the image attached with `losetup -r --direct-io=on` (no second page cache beneath the device, as with a real disk), a symbolic link to the device backed up with `dj backup --read-special`; the changed image on another loop device behind the same link, so the second backup has the first as parent.",
		"VMA dumps: the harness writes each image as vzdump would (`djbench vma-stream IMAGE SEED`: one disk drive-scsi0 and a qemu-server.conf, a fresh UUID per dump, clusters shuffled within windows of 16 and one in a hundred sent far ahead) and pipes it into `dj backup --stdin --stdin-filename vzdump-qemu-100.vma` (recognised as VMA: configs and the disk as fixed chunks) and `restic backup --stdin`. The wall time includes the generator.",
		"Speed: a fresh repository per run, `drop_caches`, then dj backs up the image file with `--chunker-files '*.img'` (1 MiB fixed chunks, hashed, compressed and sealed on all cores) and restic backs up the same bytes with `restic backup --stdin --stdin-filename disk.img < base.img`. dj on one core: the same command under `taskset -c 0` with GOMAXPROCS=1.",
		"Unchanged re-backup: the block device again under its parent after drop_caches (a device has no mtime, so every chunk is read and hashed; none is compressed, sealed or stored), against `dd if=DEVICE of=/dev/null bs=4M iflag=direct` after drop_caches (the device read as dj reads it: O_DIRECT, 4 MiB at a time), interleaved run by run; `dd` of the image file through the page cache beside it for orientation (on this virtual machine the host caches the disk, so that read can be several times faster or slower than the device's from one minute to the next).",
	)
	return r
}

// vmDevice measures the block-device figures: what the changed image adds,
// and the unchanged re-backup against a plain read of the disk.
func (h *harness) vmDevice(ctx context.Context, r *report, im *vmImages, work string, fresh func(name, label string) (*tool, error)) error {
	t, err := fresh("dj", "dev")
	if err != nil {
		return err
	}
	defer t.removeRepo()
	devDir := filepath.Join(work, "dev")
	os.MkdirAll(devDir, 0o755)
	link := filepath.Join(devDir, "disk0")
	attach := func(img string) (func(), error) {
		dev, detach, err := loopDevice(ctx, img)
		if err != nil {
			return nil, err
		}
		os.Remove(link)
		if err := os.Symlink(dev, link); err != nil {
			detach()
			return nil, err
		}
		return detach, nil
	}
	detach, err := attach(im.base)
	if err != nil {
		return err
	}
	_, err = h.plain(ctx, t, "backup", "--read-special", link)
	detach()
	if err != nil {
		return err
	}
	before, err := duBytes(t.repo)
	if err != nil {
		return err
	}
	if detach, err = attach(im.changed); err != nil {
		return err
	}
	_, err = h.plain(ctx, t, "backup", "--read-special", link)
	if err != nil {
		detach()
		return err
	}
	after, err := duBytes(t.repo)
	if err != nil {
		detach()
		return err
	}
	detach()
	pct := 100 * float64(after-before) / float64(im.size)
	r.add("add_device", "dj", pct)
	h.logf("vm: dj: block device: the second backup added %.2f%% of the image", pct)

	// The unchanged re-backup, against a read of the same device (the
	// three interleaved, as this machine's disk speed drifts).
	if detach, err = attach(im.changed); err != nil {
		return err
	}
	defer detach()
	for run := 1; run <= h.cfg.runs && ctx.Err() == nil; run++ {
		dropCaches()
		wall, _, err := h.sh(ctx, "dd-device", "dd if="+shellJoin([]string{link})+" of=/dev/null bs=4M iflag=direct 2>/dev/null")
		if err != nil {
			return err
		}
		r.add("disk_read", "dj", wall)
		dropCaches()
		fwall, _, err := h.sh(ctx, "dd-image", "dd if="+shellJoin([]string{im.changed})+" of=/dev/null bs=4M 2>/dev/null")
		if err != nil {
			return err
		}
		r.add("file_read", "dj", fwall)
		dropCaches()
		res, err := h.timed(ctx, t, "backup", "--read-special", link)
		if err != nil {
			return err
		}
		re := res.Wall
		r.add("dev_rebackup", "dj", re)
		r.add("dev_rebackup_vs_read", "dj", re/wall)
		h.logf("vm: dj: unchanged device re-backup %.1fs, device read %.1fs (%.2f×), file read %.1fs", re, wall, re/wall, fwall)
	}
	return nil
}
