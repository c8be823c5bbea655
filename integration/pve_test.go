package integration

// End-to-end tests of Proxmox VE dumps (issue 13): VMA streams made by a
// test writer (from PVE's vma_spec.txt) with a new UUID and their clusters
// in a new order each run, backed up from standard input, deduplicated,
// browsed through the mount and dumped back.

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dj/pve/vma"
)

// testVM is a guest: its configuration and its disks.
type testVM struct {
	conf  []byte
	names []string
	disks [][]byte
}

func newTestVM(seed uint64, size int) *testVM {
	rng := mrand.New(mrand.NewPCG(seed, 7))
	vm := &testVM{
		conf:  []byte("boot: order=scsi0\ncores: 2\nmemory: 2048\nname: web\nscsi0: local-lvm:vm-100-disk-0,size=64M\n"),
		names: []string{"drive-scsi0", "drive-efidisk0"},
	}
	disk := make([]byte, size)
	// Half random, a quarter text-like, a quarter zeros, in 1 MiB runs.
	for off := 0; off < size; off += 1 << 20 {
		end := min(size, off+1<<20)
		switch rng.IntN(4) {
		case 0, 1:
			for i := off; i < end; i++ {
				disk[i] = byte(rng.Uint32())
			}
		case 2:
			for i := off; i < end; i++ {
				disk[i] = "the quick brown fox "[i%20]
			}
		}
	}
	vm.disks = [][]byte{disk, bytes.Repeat([]byte{1, 2, 3, 4}, 33000)}
	return vm
}

// rewrite changes n runs of 2 MiB at random 2 MiB-aligned places of the
// first disk (a day of a guest's writes).
func (vm *testVM) rewrite(seed uint64, n int) {
	rng := mrand.New(mrand.NewPCG(seed, 8))
	d := vm.disks[0]
	for k := 0; k < n; k++ {
		off := rng.IntN(len(d)/(2<<20)) * (2 << 20)
		for i := off; i < off+2<<20 && i < len(d); i++ {
			d[i] = byte(rng.Uint32())
		}
	}
}

// vma writes the guest as vzdump does: a fresh UUID and its own order of
// clusters (the disks interleaved, some clusters far ahead).
func (vm *testVM) vma(t *testing.T, seed uint64) []byte {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(seed, 9))
	h := vma.Header{CTime: 1733300000, Configs: []vma.Config{{Name: "qemu-server.conf", Data: vm.conf}}}
	for i := range h.UUID {
		h.UUID[i] = byte(rng.Uint32())
	}
	type ref struct {
		dev uint8
		num uint32
	}
	var pending [][]ref
	for i, name := range vm.names {
		h.Devices = append(h.Devices, vma.Device{ID: uint8(i + 1), Name: name, Size: uint64(len(vm.disks[i]))})
		var rs []ref
		for n := 0; n*vma.ClusterSize < len(vm.disks[i]); n++ {
			rs = append(rs, ref{uint8(i + 1), uint32(n)})
		}
		pending = append(pending, rs)
	}
	var buf bytes.Buffer
	w, err := vma.NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for len(pending[0])+len(pending[1]) > 0 {
		i := rng.IntN(2)
		if len(pending[i]) == 0 {
			i = 1 - i
		}
		k := 0
		if rng.IntN(20) == 0 {
			k = rng.IntN(len(pending[i]))
		}
		r := pending[i][k]
		pending[i] = append(pending[i][:k], pending[i][k+1:]...)
		d := vm.disks[r.dev-1]
		start := int(r.num) * vma.ClusterSize
		if err := w.WriteCluster(r.dev, r.num, d[start:min(len(d), start+vma.ClusterSize)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readVMA parses a stream into its config and disks by name.
func readVMA(t *testing.T, b []byte) ([]byte, map[string][]byte) {
	t.Helper()
	r, err := vma.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header()
	disks := map[string][]byte{}
	for _, d := range h.Devices {
		disks[d.Name] = make([]byte, d.Size)
	}
	for {
		c, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := ""
		for _, d := range h.Devices {
			if d.ID == c.Device {
				name = d.Name
			}
		}
		copy(disks[name][int(c.Num)*vma.ClusterSize:], c.Data)
	}
	if len(h.Configs) != 1 {
		t.Fatalf("%d configs", len(h.Configs))
	}
	return h.Configs[0].Data, disks
}

func TestPVEDumpDeduplicatesMountsAndDumpsBack(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	vm := newTestVM(1, 48<<20)

	backup := func(seed uint64) (id string, added uint64) {
		t.Helper()
		res := e.runStdin(string(vm.vma(t, seed)), nil, "backup", "--json", "--stdin", "--stdin-filename", "vm-100.vma")
		if res.code != 0 {
			t.Fatalf("backup of a VMA stream: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
		var sum struct {
			MessageType string `json:"message_type"`
			DataAdded   uint64 `json:"data_added"`
			SnapshotID  string `json:"snapshot_id"`
		}
		parseJSON(t, "backup summary", lastLine(res.stdout), &sum)
		return sum.SnapshotID, sum.DataAdded
	}
	_, first := backup(1)
	_, again := backup(2) // the same guest: new UUID, new order
	vm.rewrite(3, 1)      // one 2 MiB run of 48 MiB: about 4%
	id3, changed := backup(3)
	t.Logf("data added: first %d, unchanged %d, 2 MiB rewritten %d", first, again, changed)
	if again > 256<<10 {
		t.Errorf("a second dump of the unchanged guest added %d bytes", again)
	}
	if changed > 3<<20+256<<10 {
		t.Errorf("a dump with one 2 MiB run rewritten added %d bytes (at most three 1 MiB chunks expected)", changed)
	}

	ls := e.must("ls", id3, "/vm-100.vma")
	for _, want := range []string{"/vm-100.vma/drive-scsi0.raw", "/vm-100.vma/drive-efidisk0.raw", "/vm-100.vma/qemu-server.conf"} {
		if !strings.Contains(ls, want) {
			t.Errorf("ls lacks %s:\n%s", want, ls)
		}
	}

	// dj dump writes a VMA stream with the same config and disks.
	res := e.run("dump", id3, "/vm-100.vma")
	if res.code != 0 {
		t.Fatalf("dump: exit %d: %s", res.code, res.stderr)
	}
	conf, disks := readVMA(t, []byte(res.stdout))
	if !bytes.Equal(conf, vm.conf) {
		t.Errorf("dumped config %q", conf)
	}
	for i, name := range vm.names {
		if !bytes.Equal(disks[name], vm.disks[i]) {
			t.Errorf("dumped disk %s differs", name)
		}
	}
	// One disk alone, raw.
	if res := e.run("dump", id3, "/vm-100.vma/drive-scsi0.raw"); res.code != 0 || sha256.Sum256([]byte(res.stdout)) != sha256.Sum256(vm.disks[0]) {
		t.Errorf("dump of one disk: exit %d, %d bytes", res.code, len(res.stdout))
	}

	// restore recreates the .vma file (or, asked, the directory).
	target := filepath.Join(e.dir, "restored")
	e.must("restore", id3, "--target", target)
	b, err := os.ReadFile(filepath.Join(target, "vm-100.vma"))
	if err != nil {
		t.Fatal(err)
	}
	if conf, disks := readVMA(t, b); !bytes.Equal(conf, vm.conf) || !bytes.Equal(disks["drive-scsi0"], vm.disks[0]) {
		t.Error("the restored .vma holds another guest")
	}
	target2 := filepath.Join(e.dir, "restored2")
	e.must("restore", id3, "--target", target2, "--vma-as-directory")
	if b, err := os.ReadFile(filepath.Join(target2, "vm-100.vma", "drive-scsi0.raw")); err != nil || !bytes.Equal(b, vm.disks[0]) {
		t.Errorf("restored disk image: %v", err)
	}

	// The mount shows each disk as a file equal to it.
	m := e.mount()
	p := filepath.Join(m.dir, "ids", id3[:8], "vm-100.vma", "drive-scsi0.raw")
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, vm.disks[0]) {
		t.Error("the disk read through the mount differs")
	}
}

func TestPVEBrokenStreams(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	stream := newTestVM(2, 8<<20).vma(t, 1)
	for _, cut := range []int{len(stream) / 2, len(stream) - 1} {
		res := e.runStdin(string(stream[:cut]), nil, "backup", "--stdin", "--stdin-filename", "vm-100.vma")
		if res.code == 0 || !strings.Contains(res.stderr, "VMA") {
			t.Errorf("a VMA stream cut at %d of %d: exit %d, %q", cut, len(stream), res.code, res.stderr)
		}
	}
	var snaps []json.RawMessage
	parseJSON(t, "snapshots", e.must("snapshots", "--json"), &snaps)
	if len(snaps) != 0 {
		t.Fatalf("cut streams left %d snapshots", len(snaps))
	}
	// Not VMA at all under --stdin-format vma: stored as one file, with a
	// warning, never lost.
	res := e.runStdin("just some text\n", nil, "backup", "--stdin", "--stdin-format", "vma", "--stdin-filename", "x.vma")
	if res.code != 0 || !strings.Contains(res.stderr, "not a valid VMA stream") {
		t.Fatalf("plain data as vma: exit %d, %q", res.code, res.stderr)
	}
	if got := e.must("dump", "latest", "/x.vma"); got != "just some text\n" {
		t.Errorf("plain data stored as %q", got)
	}
}
