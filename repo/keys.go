package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"dj/backend"
	"dj/repo/crypto"
)

// maxKeyFileSize bounds a key file read from storage.
const maxKeyFileSize = 64 << 10

// ErrResticRepository is returned by Open for a repository made by restic:
// its key files use scrypt, which dj never writes, and dj cannot read its
// format.
var ErrResticRepository = errors.New("this is a restic repository, not a dj repository; dj cannot read restic repositories (use restic to access it)")

// resticKDF is the key derivation function of restic's key files.
const resticKDF = "scrypt"

// KeyInfo describes one key file.
type KeyInfo struct {
	ID       crypto.ID `json:"id"`
	Created  time.Time `json:"created"`
	Username string    `json:"username"`
	Hostname string    `json:"hostname"`
	Current  bool      `json:"current"`
}

func loadKeyFile(ctx context.Context, be backend.Backend, name string) (*crypto.KeyFile, error) {
	h := backend.Handle{Type: backend.KeyFile, Name: name}
	data, err := be.Load(ctx, h, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	if crypto.Hash(data).String() != name {
		// Key files are named by the hash of their bytes: one that does
		// not match came back damaged, or was written otherwise. Load it
		// once more (a download corrupted in transit), and go on with
		// what that gives.
		if again, err := be.Load(ctx, h, 0, 0); err == nil {
			data = again
		}
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: %s is too large", ErrCorrupt, h)
	}
	kf, err := crypto.ParseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, h, err)
	}
	return kf, nil
}

// openKey tries the password on every key file and returns the first key
// it opens for which fits is true; if it opens only keys that do not fit,
// it returns the first of them.
func openKey(ctx context.Context, be backend.Backend, password string, fits func(*crypto.Key) bool) (*crypto.Key, crypto.ID, error) {
	var names []string
	err := be.List(ctx, backend.KeyFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	if err != nil {
		return nil, crypto.ID{}, fmt.Errorf("list keys: %w", err)
	}
	if len(names) == 0 {
		return nil, crypto.ID{}, fmt.Errorf("%w: the repository has no key files", ErrCorrupt)
	}
	sort.Strings(names)
	var firstErr error
	var restic, other int
	var unfit *crypto.Key
	var unfitID crypto.ID
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, crypto.ID{}, err
		}
		kf, err := loadKeyFile(ctx, be, name)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if kf.KDF == resticKDF {
			restic++
			continue
		}
		other++
		key, err := kf.Open(password)
		if err == nil {
			id, _ := crypto.ParseID(name)
			if fits(key) {
				return key, id, nil
			}
			if unfit == nil {
				unfit, unfitID = key, id
			}
			continue
		}
		if !errors.Is(err, crypto.ErrWrongPassword) && firstErr == nil {
			firstErr = err
		}
	}
	if unfit != nil {
		return unfit, unfitID, nil
	}
	if restic > 0 && other == 0 {
		return nil, crypto.ID{}, fmt.Errorf("%s: %w", be.Location(), ErrResticRepository)
	}
	if firstErr != nil {
		return nil, crypto.ID{}, fmt.Errorf("%w (and a key file could not be read: %v)", crypto.ErrWrongPassword, firstErr)
	}
	return nil, crypto.ID{}, crypto.ErrWrongPassword
}

// AddKey stores a new key file that opens the master key with password,
// recording the current user and host in it.
func (r *Repository) AddKey(ctx context.Context, password string) (crypto.ID, error) {
	return r.AddKeyAs(ctx, password, "", "")
}

// AddKeyAs is AddKey with the user and host names recorded in the key file
// given (restic's `key add --user --host`); an empty name means the current
// user or host.
func (r *Repository) AddKeyAs(ctx context.Context, password, username, host string) (crypto.ID, error) {
	if username == "" {
		username = currentUser()
	}
	if host == "" {
		host = hostname()
	}
	kf, err := crypto.NewKeyFile(r.key, password, *r.opts.KDF, username, host)
	if err != nil {
		return crypto.ID{}, err
	}
	data, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return crypto.ID{}, err
	}
	id := crypto.Hash(data)
	if err := r.be.Save(ctx, backend.Handle{Type: backend.KeyFile, Name: id.String()}, data); err != nil {
		return crypto.ID{}, fmt.Errorf("save key: %w", err)
	}
	if r.keyID.IsNull() {
		r.keyID = id
	}
	return id, nil
}

// ListKeys describes every key file.
func (r *Repository) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	ids, err := r.ListFiles(ctx, backend.KeyFile)
	if err != nil {
		return nil, err
	}
	var out []KeyInfo
	for _, id := range ids {
		kf, err := loadKeyFile(ctx, r.be, id.String())
		if err != nil {
			return nil, err
		}
		out = append(out, KeyInfo{ID: id, Created: kf.Created, Username: kf.Username, Hostname: kf.Hostname, Current: id == r.keyID})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// RemoveKey deletes a key file. The key in use and the last key cannot be
// removed.
func (r *Repository) RemoveKey(ctx context.Context, id crypto.ID) error {
	if id == r.keyID {
		return errors.New("refusing to remove the key in use; open the repository with another key to remove it")
	}
	keys, err := r.ListKeys(ctx)
	if err != nil {
		return err
	}
	found := false
	for _, k := range keys {
		if k.ID == id {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("key %s not found", id.Short())
	}
	if len(keys) < 2 {
		return errors.New("refusing to remove the last key")
	}
	return r.be.Remove(ctx, backend.Handle{Type: backend.KeyFile, Name: id.String()})
}

// ChangePassword adds a key for the new password and removes the key in use.
func (r *Repository) ChangePassword(ctx context.Context, password string) (crypto.ID, error) {
	old := r.keyID
	r.keyID = crypto.ID{}
	id, err := r.AddKey(ctx, password)
	if err != nil {
		r.keyID = old
		return id, err
	}
	r.keyID = id
	if !old.IsNull() {
		if err := r.be.Remove(ctx, backend.Handle{Type: backend.KeyFile, Name: old.String()}); err != nil {
			return id, fmt.Errorf("new key %s added, but removing the old key failed: %w", id.Short(), err)
		}
	}
	return id, nil
}
