package pve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	mrand "math/rand/v2"
	"testing"

	"dj/backend/mem"
	"dj/pve/vma"
	"dj/repo"
	"dj/repo/archiver"
	"dj/repo/tree"
)

// guest is a VM as a test's vzdump sees it: configuration and disks.
type guest struct {
	configs []vma.Config
	names   []string
	disks   [][]byte
}

func newGuest(seed uint64) *guest {
	rng := mrand.New(mrand.NewPCG(seed, 1))
	g := &guest{
		configs: []vma.Config{{Name: "qemu-server.conf", Data: []byte("cores: 2\nmemory: 2048\nscsi0: local-lvm:vm-100-disk-0\n")}},
		names:   []string{"drive-scsi0", "drive-efidisk0"},
	}
	// A 20 MiB disk, half random, with zero regions; a small odd-sized one.
	d := make([]byte, 20<<20+5*vma.ClusterSize+777)
	for off := 0; off < len(d); off += 1 << 20 {
		if rng.IntN(3) == 0 {
			continue // zeros
		}
		end := min(len(d), off+1<<20)
		for i := off; i < end; i += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && i+k < end; k++ {
				d[i+k] = byte(v >> (8 * k))
			}
		}
	}
	small := make([]byte, 131072+4096)
	small[100] = 1
	g.disks = [][]byte{d, small}
	return g
}

// dump writes the guest as vzdump would: a new UUID and the clusters in an
// order of their own each time (disks interleaved, some clusters late).
func (g *guest) dump(t testing.TB, seed uint64) []byte {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(seed, 2))
	h := vma.Header{CTime: 1733300000, Configs: g.configs}
	for i := range h.UUID {
		h.UUID[i] = byte(rng.Uint32())
	}
	type ref struct {
		dev uint8
		num uint32
	}
	var order []ref
	var perDev [][]ref
	for i, name := range g.names {
		h.Devices = append(h.Devices, vma.Device{ID: uint8(i + 1), Name: name, Size: uint64(len(g.disks[i]))})
		var rs []ref
		for n := 0; n*vma.ClusterSize < len(g.disks[i]); n++ {
			rs = append(rs, ref{uint8(i + 1), uint32(n)})
		}
		perDev = append(perDev, rs)
	}
	// Interleave the disks, and move one cluster in ten far ahead.
	for len(perDev[0])+len(perDev[1]) > 0 {
		i := rng.IntN(2)
		if len(perDev[i]) == 0 {
			i = 1 - i
		}
		k := 0
		if rng.IntN(10) == 0 {
			k = rng.IntN(len(perDev[i]))
		}
		order = append(order, perDev[i][k])
		perDev[i] = append(perDev[i][:k], perDev[i][k+1:]...)
	}
	var buf bytes.Buffer
	w, err := vma.NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range order {
		d := g.disks[r.dev-1]
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

func readFile(t *testing.T, r *repo.Repository, n *tree.Node) []byte {
	t.Helper()
	var out []byte
	for _, id := range n.Content {
		b, err := r.LoadBlob(context.Background(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func TestBackupVMADeduplicatesAndDumpsBack(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, be)
	g := newGuest(1)

	var added []uint64
	for run, mem := range []int{0, 2} { // the second run spills to a file
		stream := g.dump(t, uint64(run+10))
		br := bufio.NewReaderSize(bytes.NewReader(stream), MaxPeek)
		if !Sniff(br) {
			t.Fatal("Sniff does not recognise a VMA stream")
		}
		sn, err := BackupVMA(ctx, r, br, "vm-100.vma", BackupOptions{MemoryChunks: mem, SpillDir: t.TempDir(), Archiver: archiver.Options{Hostname: "pve"}})
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, sn.Summary.DataAdded)
		root, err := r.LoadTree(ctx, sn.Tree)
		if err != nil {
			t.Fatal(err)
		}
		dir := root.Nodes[0]
		if dir.Name != "vm-100.vma" || !IsVMADir(dir) {
			t.Fatalf("root holds %q", dir.Name)
		}
		inner, err := r.LoadTree(ctx, *dir.Subtree)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range inner.Nodes {
			names = append(names, n.Name)
		}
		want := []string{"drive-efidisk0.raw", "drive-scsi0.raw", "qemu-server.conf"}
		if len(names) != 3 || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
			t.Fatalf("archive holds %v, want %v", names, want)
		}
		if got := readFile(t, r, inner.Nodes[1]); !bytes.Equal(got, g.disks[0]) {
			t.Fatalf("run %d: drive-scsi0.raw differs from the disk", run)
		}
		if got := readFile(t, r, inner.Nodes[0]); !bytes.Equal(got, g.disks[1]) {
			t.Fatalf("run %d: drive-efidisk0.raw differs from the disk", run)
		}
		if !inner.Nodes[1].IsSparse() {
			t.Errorf("a disk with zero chunks is not marked sparse")
		}

		// dj dump writes a VMA that reads back to the same configs and disks.
		var out bytes.Buffer
		if err := WriteVMA(ctx, r, dir, &out); err != nil {
			t.Fatal(err)
		}
		vr, err := vma.NewReader(&out)
		if err != nil {
			t.Fatal(err)
		}
		h := vr.Header()
		if len(h.Configs) != 1 || !bytes.Equal(h.Configs[0].Data, g.configs[0].Data) || h.CTime != 1733300000 {
			t.Fatalf("dumped header %+v", h)
		}
		disks := map[string][]byte{}
		for _, d := range h.Devices {
			disks[d.Name] = make([]byte, d.Size)
		}
		for {
			c, err := vr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			name := h.Devices[c.Device-1].Name
			copy(disks[name][int(c.Num)*vma.ClusterSize:], c.Data)
		}
		for i, name := range g.names {
			if !bytes.Equal(disks[name], g.disks[i]) {
				t.Errorf("dumped %s differs", name)
			}
		}
	}
	// The second dump of the same guest (new UUID, new order) adds nothing
	// but its tree.
	if added[1] > 64<<10 {
		t.Errorf("second dump of an unchanged guest added %d bytes (first %d)", added[1], added[0])
	}
}

func TestBackupVMABrokenStreams(t *testing.T) {
	ctx := context.Background()
	r := repo.TestRepository(t, mem.New())
	stream := newGuest(2).dump(t, 3)
	for _, cut := range []int{100, 12288 + 100, len(stream) / 2, len(stream) - 1} {
		_, err := BackupVMA(ctx, r, bytes.NewReader(stream[:cut]), "vm.vma", BackupOptions{})
		if !errors.Is(err, vma.ErrFormat) {
			t.Errorf("stream cut at %d: %v, want a format error", cut, err)
		}
	}
	snaps, _, err := r.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 0 {
		t.Errorf("broken streams left %d snapshots", len(snaps))
	}
	br := bufio.NewReaderSize(bytes.NewReader([]byte("not a vma at all")), MaxPeek)
	if Sniff(br) {
		t.Error("Sniff took plain data for VMA")
	}
	if b, _ := br.Peek(3); string(b) != "not" {
		t.Error("Sniff consumed input")
	}
}
