package main

import (
	"strings"

	"github.com/urfave/cli/v2"

	"dj/repo"
	"dj/repo/crypto"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "create a new repository",
		UsageText: "dj init [options]",
		Description: `Creates an empty repository at the location given by -r/--repo or DJ_REPOSITORY,
protected by the password. An existing repository is never overwritten.

Example:
   dj -r /srv/backup init`,
		Action: func(c *cli.Context) error {
			e := newEnv(c)
			be, err := e.openBackend(true)
			if err != nil {
				return err
			}
			pw, err := e.password("enter password for new repository: ", true)
			if err != nil {
				be.Close()
				return err
			}
			r, err := repo.Init(e.ctx, be, pw, e.repoOptions())
			if err != nil {
				be.Close()
				return err
			}
			defer r.Close()
			if e.json {
				return e.printJSON(map[string]any{"message_type": "initialized", "id": r.Config().ID, "repository": be.Location()})
			}
			e.printf("created dj repository %s at %s\n", r.Config().ID[:10], be.Location())
			e.printf("Please note that knowledge of your password is required to access\nthe repository. Losing your password means that your data is\nirrecoverably lost.\n")
			return nil
		},
	}
}

func keyCommand() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "manage the passwords (keys) that open the repository",
		Description: `Every key file holds the repository's master key, sealed with one password.

Example:
   dj key list
   dj key add --new-password-file new.txt
   dj key remove 1a2b3c4d
   dj key passwd`,
		Subcommands: []*cli.Command{
			{
				Name: "list", Usage: "list keys", UsageText: "dj key list [--json]",
				Description: "Lists the key files; the one in use is marked with *.\n\nExample:\n   dj key list --json",
				Action: func(c *cli.Context) error {
					e := newEnv(c)
					r, keys, err := openKeys(e)
					if err != nil {
						return err
					}
					defer r.Close()
					if e.json {
						return e.printJSON(keyListJSON(keys))
					}
					t := newTable("ID", "User", "Host", "Created")
					for _, k := range keys {
						id := k.ID.Short()
						if k.Current {
							id = "*" + id
						} else {
							id = " " + id
						}
						t.add(id, k.Username, k.Hostname, k.Created.Local().Format("2006-01-02 15:04:05"))
					}
					t.write(e.stdout)
					return nil
				},
			},
			{
				Name: "add", Usage: "add a password", UsageText: "dj key add [--new-password-file FILE] [--user NAME] [--host NAME]",
				Description: "Adds a key file that opens the repository with another password. The key file\nrecords a user and host name (the current ones unless --user and --host say\notherwise), shown by `dj key list`.\n\nExamples:\n   dj key add --new-password-file ~/.dj-password-2\n   dj key add --user ann --host laptop",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "new-password-file", Usage: "read the new password from `FILE`"},
					&cli.StringFlag{Name: "user", Usage: "record `NAME` as the user of the new key (default: the current user)"},
					&cli.StringFlag{Name: "host", Usage: "record `NAME` as the host of the new key (default: this host)"},
				},
				Action: newKeyAction(func(e *env, r *repo.Repository, pw string) (crypto.ID, error) {
					return r.AddKeyAs(e.ctx, pw, e.c.String("user"), e.c.String("host"))
				}, "saved new key as %s\n"),
			},
			{
				Name: "remove", Usage: "remove a key", UsageText: "dj key remove ID",
				Description: "Removes a key file (not the one in use, nor the last).\n\nExample:\n   dj key remove 1a2b3c4d",
				Action: func(c *cli.Context) error {
					e := newEnv(c)
					if c.NArg() != 1 {
						return usageError("key remove needs exactly one key ID")
					}
					r, keys, err := openKeys(e)
					if err != nil {
						return err
					}
					defer r.Close()
					var match []crypto.ID
					for _, k := range keys {
						if len(c.Args().First()) >= 4 && strings.HasPrefix(k.ID.String(), strings.ToLower(c.Args().First())) {
							match = append(match, k.ID)
						}
					}
					if len(match) != 1 {
						return usageError("key ID %q matches %d keys", c.Args().First(), len(match))
					}
					if err := r.RemoveKey(e.ctx, match[0]); err != nil {
						return err
					}
					e.printf("removed key %s\n", match[0].Short())
					return nil
				},
			},
			{
				Name: "passwd", Usage: "change the password of the key in use", UsageText: "dj key passwd [--new-password-file FILE]",
				Description: "Replaces the key in use by one for a new password.\n\nExample:\n   dj key passwd --new-password-file ~/.dj-new-password",
				Flags:       []cli.Flag{&cli.StringFlag{Name: "new-password-file", Usage: "read the new password from `FILE`"}},
				Action: newKeyAction(func(e *env, r *repo.Repository, pw string) (crypto.ID, error) {
					return r.ChangePassword(e.ctx, pw)
				}, "saved new key as %s, removed the old one\n"),
			},
		},
	}
}

// keyJSON is one key in `key list --json`, shaped like restic's.
type keyJSON struct {
	Current  bool   `json:"current"`
	ID       string `json:"id"`
	UserName string `json:"userName"`
	HostName string `json:"hostName"`
	Created  string `json:"created"`
}

// keyListJSON shapes keys as restic's `key list --json` does: short ids
// and the creation time in local time without a zone.
func keyListJSON(keys []repo.KeyInfo) []keyJSON {
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyJSON{Current: k.Current, ID: k.ID.Short(), UserName: k.Username, HostName: k.Hostname,
			Created: k.Created.Local().Format("2006-01-02 15:04:05")})
	}
	return out
}

// openKeys opens the repository and lists its keys; the caller closes r.
func openKeys(e *env) (*repo.Repository, []repo.KeyInfo, error) {
	r, err := e.openRepo(false)
	if err != nil {
		return nil, nil, err
	}
	keys, err := r.ListKeys(e.ctx)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return r, keys, nil
}

// newKeyAction is the action of a key command that stores a key for a new
// password (read from --new-password-file or asked for): save stores it,
// and done, with the new key's short id, tells the user.
func newKeyAction(save func(e *env, r *repo.Repository, pw string) (crypto.ID, error), done string) cli.ActionFunc {
	return func(c *cli.Context) error {
		e := newEnv(c)
		r, err := e.openRepo(false)
		if err != nil {
			return err
		}
		defer r.Close()
		pw, err := newPassword(e, c.String("new-password-file"))
		if err != nil {
			return err
		}
		id, err := save(e, r, pw)
		if err != nil {
			return err
		}
		e.printf(done, id.Short())
		return nil
	}
}

func newPassword(e *env, file string) (string, error) {
	if file != "" {
		b, err := readFileLimited(file)
		if err != nil {
			return "", err
		}
		pw := firstLine(b)
		if pw == "" {
			return "", usageError("new password file %s is empty", file)
		}
		return pw, nil
	}
	return e.promptPassword("enter new password: ", true)
}
