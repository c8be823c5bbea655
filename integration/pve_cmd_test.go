package integration

// dj pve backup, restore and hook against stand-in vzdump, qm, pct and
// qmrestore scripts (no Proxmox VE here): they emit and keep VMA and tar
// streams with the arguments and environment of PVE's documentation.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// standInPVE writes the stand-in commands into a directory for PATH; the
// dumps they emit are dir/vm-100.vma and dir/ct-101.tar, what restore
// receives goes to dir/restored-*.
func standInPVE(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	scripts := map[string]string{
		"qm": `case "$1 $2" in "config 100") printf 'cores: 2\nname: web\n';; *) exit 2;; esac`,
		"pct": `case "$1" in
config) [ "$2" = 101 ] || exit 2; printf 'arch: amd64\nhostname: ct1\n';;
restore) [ "$3" = - ] || exit 9; cat > "` + dir + `/restored-ct-$2.tar";;
*) exit 2;; esac`,
		"vzdump": `[ "$2 $3 $4" = "--stdout --mode snapshot" ] || { echo "vzdump: unexpected args $*" >&2; exit 7; }
case "$1" in 100) cat "` + dir + `/vm-100.vma";; 101) cat "` + dir + `/ct-101.tar";; *) echo "no guest $1" >&2; exit 2;; esac`,
		"qmrestore": `[ "$1" = - ] || exit 9; cat > "` + dir + `/restored-vm-$2.vma"`,
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

func TestPVECommands(t *testing.T) {
	requireCmd(t, "tar")
	e := newEnv(t)
	e.must("init")
	dir := t.TempDir()
	vm := newTestVM(4, 12<<20)
	vmStream := vm.vma(t, 1)
	writeFile(t, filepath.Join(dir, "vm-100.vma"), vmStream)
	ctSrc := filepath.Join(dir, "ctroot")
	newTreeGen(t, 6).addFiles(ctSrc, 2<<20)
	ctTar, err := exec.Command("tar", "--numeric-owner", "-C", ctSrc, "-cf", "-", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ct-101.tar"), ctTar)
	path := []string{"PATH=" + standInPVE(t, dir) + ":" + os.Getenv("PATH")}

	if res := e.runEnv(path, "pve", "backup", "100", "101"); res.code != 0 {
		t.Fatalf("pve backup: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var snaps []snapJSON
	parseJSON(t, "snapshots", e.must("snapshots", "--json", "--tag", "vmid=100"), &snaps)
	if len(snaps) != 1 || !strings.Contains(strings.Join(snaps[0].Tags, ","), "name=web") {
		t.Fatalf("snapshots of guest 100: %+v", snaps)
	}
	parseJSON(t, "snapshots", e.must("snapshots", "--json", "--tag", "vmid=101"), &snaps)
	if len(snaps) != 1 || !strings.Contains(strings.Join(snaps[0].Tags, ","), "name=ct1") {
		t.Fatalf("snapshots of guest 101: %+v", snaps)
	}
	ctSnap := snaps[0].ID
	if ls := e.must("ls", ctSnap, "/ct-101.tar"); !strings.Contains(ls, "/ct-101.tar/") {
		t.Errorf("container dump not stored as a tree:\n%s", ls)
	}
	if res := e.runEnv(path, "pve", "backup", "999"); res.code == 0 || !strings.Contains(res.stderr, "999") {
		t.Errorf("backup of an unknown guest: exit %d %q", res.code, res.stderr)
	}

	// restore pipes the dumps back into qmrestore and pct restore.
	// "latest" is the newest dump of that guest (the container's is newer).
	if res := e.runEnv(path, "pve", "restore", "latest", "100"); res.code != 0 {
		t.Fatalf("pve restore of the VM: exit %d\n%s", res.code, res.stderr)
	}
	got, err := os.ReadFile(filepath.Join(dir, "restored-vm-100.vma"))
	if err != nil {
		t.Fatal(err)
	}
	conf, disks := readVMA(t, got)
	if !bytes.Equal(conf, vm.conf) || !bytes.Equal(disks["drive-scsi0"], vm.disks[0]) || !bytes.Equal(disks["drive-efidisk0"], vm.disks[1]) {
		t.Error("qmrestore received another guest")
	}
	if res := e.runEnv(path, "pve", "restore", ctSnap, "101"); res.code != 0 {
		t.Fatalf("pve restore of the container: exit %d\n%s", res.code, res.stderr)
	}
	out := filepath.Join(dir, "ct-out")
	os.MkdirAll(out, 0o755)
	if b, err := exec.Command("tar", "-xpf", filepath.Join(dir, "restored-ct-101.tar"), "-C", out).CombinedOutput(); err != nil {
		t.Fatalf("tar -x of what pct restore received: %v %s", err, b)
	}
	if d := manifestDiff(scanTree(t, ctSrc), scanTree(t, out)); len(d) > 0 {
		t.Errorf("pct restore received another container:\n%s", strings.Join(d, "\n"))
	}

	// The hook stores vzdump's compressed file at backup-end and removes it.
	target := filepath.Join(dir, "vzdump-qemu-100-2026_12_04-10_00_00.vma.zst")
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(vmStream)
	zw.Close()
	writeFile(t, target, zbuf.Bytes())
	hookEnv := append(path, "TARGET="+target, "VMTYPE=qemu", "DJ_PVE_REMOVE=1")
	for _, phase := range [][]string{{"job-start"}, {"backup-start", "snapshot", "100"}, {"backup-end", "snapshot", "100"}, {"job-end"}} {
		if res := e.runEnv(hookEnv, append([]string{"pve", "hook"}, phase...)...); res.code != 0 {
			t.Fatalf("hook %v: exit %d\n%s", phase, res.code, res.stderr)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Error("the hook did not remove vzdump's file")
	}
	parseJSON(t, "snapshots", e.must("snapshots", "--json", "--tag", "vmid=100"), &snaps)
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots of guest 100 after the hook, want 2", len(snaps))
	}
	res := e.run("dump", "latest", "/vm-100.vma")
	if _, disks := readVMA(t, []byte(res.stdout)); !bytes.Equal(disks["drive-scsi0"], vm.disks[0]) {
		t.Error("the hook stored another guest")
	}
}
