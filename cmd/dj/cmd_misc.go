package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"path"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"dj/backend"
	"dj/pve"
	"dj/repo"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
	"dj/repo/restorer"
	"dj/repo/tree"
)

func dumpCommand() *cli.Command {
	return &cli.Command{
		Name:      "dump",
		Usage:     "write one file of a snapshot to standard output (a directory as tar or zip)",
		UsageText: "dj dump [options] SNAPSHOT PATH",
		Description: `Streams the file at PATH to standard output, so a streamed backup can be piped
back into the program that made it. A directory is written as an archive:
tar (the default) keeps owners, extended attributes, hard links and special
files; zip keeps content, modes, modification times and symlinks. Pass "/" as
PATH for the whole snapshot. A Proxmox VE dump stored by backup (a directory
NAME.vma) is written as a VMA stream again, unless --archive says otherwise;
a tar stored with --stdin-format tar (a directory NAME.tar) as its members
again (./etc/..., as vzdump names them).

Examples:
   dj dump latest /mydb.sql | psql mydb
   dj dump latest /home/ann/docs > docs.tar
   dj dump --archive zip latest /home/ann/docs > docs.zip
   dj dump latest /vm-100.vma | qmrestore - 100
   dj dump latest /vm-100.vma/drive-scsi0.raw > disk.raw`,
		Flags: append(filterFlags(),
			&cli.StringFlag{Name: "archive", Aliases: []string{"a"}, Value: "tar", Usage: "write directories as `FORMAT`: tar, zip, or vma (a stored Proxmox VE dump)"},
		),
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			if c.NArg() != 2 {
				return usageError("dump needs a snapshot ID and a path")
			}
			archive := c.String("archive")
			if archive != "tar" && archive != "zip" && archive != "vma" {
				return usageError("unknown archive format %q (want tar, zip or vma)", archive)
			}
			r, closeRepo, err := e.openLocked(repo.LockRead, true, loadIndexSnapshots)
			if err != nil {
				return err
			}
			defer closeRepo()
			sn, err := findSnapshot(e.ctx, r, c.Args().Get(0), filterFromFlags(c))
			if err != nil {
				return err
			}
			p := path.Clean("/" + c.Args().Get(1))
			n, err := r.FindNode(e.ctx, sn.Tree, p)
			if err != nil {
				return err
			}
			w := bufio.NewWriterSize(e.stdout, 1<<20)
			switch n.Type {
			case tree.File:
				err = restorer.WriteFile(e.ctx, r, n, w)
			case tree.Dir:
				if archive == "vma" || (!c.IsSet("archive") && pve.IsVMADir(n)) {
					err = pve.WriteVMA(e.ctx, r, n, w)
					break
				}
				write := restorer.WriteTar
				if archive == "zip" {
					write = restorer.WriteZip
				}
				prefix := strings.TrimPrefix(p, "/")
				if strings.HasSuffix(n.Name, ".tar") && archive == "tar" {
					// A tar stored by backup --stdin-format tar: its
					// members again, as vzdump names them (./etc/...).
					prefix = "."
				}
				err = write(e.ctx, r, *n.Subtree, prefix, w)
			default:
				return usageError("%s is a %s; only files and directories can be dumped", p, n.Type)
			}
			if err != nil {
				return err
			}
			return w.Flush()
		},
	}
}

func catCommand() *cli.Command {
	return &cli.Command{
		Name:      "cat",
		Usage:     "print repository objects for inspection",
		UsageText: "dj cat config|index|snapshot|key|lock|tree|blob|pack ID",
		Description: `Decrypts and prints one object: the config, an index file, a snapshot, a key
file, a lock, a tree (by tree ID, or SNAPSHOT:PATH), a data blob (raw bytes), or the
header of a pack.

Examples:
   dj cat config
   dj cat snapshot latest
   dj cat tree latest:/home/ann`,
		Action: runCat,
	}
}

func runCat(c *cli.Context) error {
	e := newEnv(c)
	if c.NArg() < 1 {
		return usageError("cat needs an object type")
	}
	kind, arg := c.Args().Get(0), c.Args().Get(1)
	if kind != "config" && arg == "" {
		return usageError("cat %s needs an ID", kind)
	}
	needIndex := kind == "tree" || kind == "blob"
	r, err := e.openRepo(needIndex)
	if err != nil {
		return err
	}
	defer r.Close()
	out := func(v any) error {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	}
	parseID := func(t backend.FileType) (crypto.ID, error) {
		ids, err := r.ListFiles(e.ctx, t)
		if err != nil {
			return crypto.ID{}, err
		}
		var found []crypto.ID
		for _, id := range ids {
			if strings.HasPrefix(id.String(), strings.ToLower(arg)) {
				found = append(found, id)
			}
		}
		if len(found) != 1 {
			return crypto.ID{}, usageError("%q matches %d %s files", arg, len(found), t)
		}
		return found[0], nil
	}
	switch kind {
	case "config":
		return out(r.Config())
	case "snapshot":
		sn, err := findSnapshot(e.ctx, r, arg, filterFromFlags(c))
		if err != nil {
			return err
		}
		return out(toJSON(sn))
	case "index":
		id, err := parseID(backend.IndexFile)
		if err != nil {
			return err
		}
		b, err := r.LoadFile(e.ctx, backend.IndexFile, id)
		if err != nil {
			return err
		}
		f, err := index.DecodeFile(b)
		if err != nil {
			return err
		}
		return out(indexJSON(f))
	case "key", "lock":
		t := backend.KeyFile
		if kind == "lock" {
			t = backend.LockFile
		}
		id, err := parseID(t)
		if err != nil {
			return err
		}
		if kind == "key" {
			b, err := r.Backend().Load(e.ctx, backend.Handle{Type: t, Name: id.String()}, 0, 0)
			if err != nil {
				return err
			}
			_, err = e.stdout.Write(b)
			return err
		}
		b, err := r.LoadFile(e.ctx, t, id)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	case "tree":
		var id crypto.ID
		if ref, p, ok := strings.Cut(arg, ":"); ok {
			sn, err := findSnapshot(e.ctx, r, ref, filterFromFlags(c))
			if err != nil {
				return err
			}
			n, err := r.FindNode(e.ctx, sn.Tree, path.Clean("/"+p))
			if err != nil {
				return err
			}
			if n.Subtree == nil {
				return usageError("%s is not a directory", p)
			}
			id = *n.Subtree
		} else if id, err = crypto.ParseID(arg); err != nil {
			return usageError("%v", err)
		}
		t, err := r.LoadTree(e.ctx, id)
		if err != nil {
			return err
		}
		return out(t)
	case "blob":
		id, err := crypto.ParseID(arg)
		if err != nil {
			return usageError("%v", err)
		}
		b, err := r.LoadBlob(e.ctx, id, nil)
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(b)
		return err
	case "pack":
		id, err := parseID(backend.PackFile)
		if err != nil {
			return err
		}
		fi, err := r.Backend().Stat(e.ctx, backend.Handle{Type: backend.PackFile, Name: id.String()})
		if err != nil {
			return err
		}
		blobs, err := r.ReadPackHeader(e.ctx, id, fi.Size)
		if err != nil {
			return err
		}
		return out(packJSON(blobs))
	}
	return usageError("unknown object type %q (want config, index, snapshot, key, lock, tree, blob or pack)", kind)
}

type blobJSON struct {
	Type        string    `json:"type"`
	ID          crypto.ID `json:"id"`
	Offset      uint32    `json:"offset"`
	Length      uint32    `json:"length"`
	PlainLength uint32    `json:"uncompressed_length"`
	Compressed  bool      `json:"compressed"`
}

func packJSON(blobs []pack.Blob) []blobJSON {
	out := make([]blobJSON, 0, len(blobs))
	for _, b := range blobs {
		out = append(out, blobJSON{b.Type.String(), b.ID, b.Offset, b.Length, b.PlainLength, b.Compressed})
	}
	return out
}

func indexJSON(f *index.File) any {
	type packOut struct {
		ID    crypto.ID  `json:"id"`
		Blobs []blobJSON `json:"blobs"`
	}
	var packs []packOut
	for _, p := range f.Packs {
		packs = append(packs, packOut{p.ID, packJSON(p.Blobs)})
	}
	return map[string]any{"supersedes": f.Supersedes, "packs": packs}
}

func unlockCommand() *cli.Command {
	return &cli.Command{
		Name:      "unlock",
		Usage:     "remove stale locks",
		UsageText: "dj unlock [--remove-all]",
		Description: `Removes locks left by dj processes that are gone (crashed, killed, or not
refreshed for 30 minutes), and names each lock it removes: its kind, ID, PID,
host, user, when it was taken and why it is stale. A lock file that cannot be
read (damaged, or cut short by an upload that never finished on storage that
does not write atomically) stops no one; unlock removes it once it has not
been written for 30 minutes. --remove-all removes every lock: use it only when you are sure no dj process is using the repository (a
running dj whose lock is removed stops with "the repository lock was lost").

Examples:
   dj unlock
   dj unlock --remove-all`,
		Flags: []cli.Flag{&cli.BoolFlag{Name: "remove-all", Usage: "remove all locks, even those of running processes"}},
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			r, err := e.openRepo(false)
			if err != nil {
				return err
			}
			defer r.Close()
			removed, err := r.RemoveLocks(e.ctx, c.Bool("remove-all"))
			for _, l := range removed {
				why := l.StaleReason()
				if why == "" {
					why = "--remove-all"
				}
				e.printf("removed %s: %s\n", l, why)
			}
			if err != nil {
				return err
			}
			e.printf("removed %d lock(s)\n", len(removed))
			return nil
		},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print the version",
		UsageText: "dj version [--json]",
		Description: `Example:
   dj version`,
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			if e.json {
				return e.printJSON(map[string]string{"version": version, "go_version": runtime.Version(), "go_os": runtime.GOOS, "go_arch": runtime.GOARCH,
					"compressor": repo.DefaultCompressor})
			}
			fmt.Fprintf(e.stdout, "dj %s compiled with %s on %s/%s, compressing with %s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH, repo.DefaultCompressor)
			return nil
		},
	}
}
