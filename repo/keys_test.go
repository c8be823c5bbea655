package repo_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"dj/backend"
	"dj/backend/mem"
	"dj/repo"
	"dj/repo/crypto"
)

// resticKeyFile is a key file as restic 0.14 writes it (scrypt; the data
// does not matter here).
const resticKeyFile = `{"created":"2026-12-04T14:50:20.157233713Z","username":"root","hostname":"vm","kdf":"scrypt","N":32768,"r":8,"p":8,"salt":"ZIze/qvIhsiZQfOTNhfs9//wN/BXK1gC2RJKskNUrh2sYbDFO7lkyhlRznUN27jgicKRxeNArty5xxMb1tXwJQ==","data":"b7ZLTtF+0t7DAvgL+rfgMSKXUirvEfC+PBSKozpX3jxoSR3Ly43BCUWWShT38GQI"}`

func TestOpenResticRepository(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	// restic's config is 16 bytes of IV, the sealed JSON and a MAC.
	if err := be.Save(ctx, backend.Handle{Type: backend.ConfigFile}, []byte("\xde\x1c\x73\xa1 restic config, encrypted")); err != nil {
		t.Fatal(err)
	}
	kid := crypto.Hash([]byte(resticKeyFile))
	if err := be.Save(ctx, backend.Handle{Type: backend.KeyFile, Name: kid.String()}, []byte(resticKeyFile)); err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"pw", "wrong"} {
		_, err := repo.Open(ctx, nopClose{be}, pw, repo.Options{KDF: &crypto.TestKDF})
		if !errors.Is(err, repo.ErrResticRepository) || errors.Is(err, repo.ErrWrongPassword) {
			t.Fatalf("open a restic repository: %v, want ErrResticRepository", err)
		}
		if !strings.Contains(err.Error(), "restic repository") {
			t.Errorf("message does not name restic: %v", err)
		}
	}

	// A restic-shaped key file among dj's own changes nothing for dj's keys.
	be2 := mem.New()
	repo.TestRepository(t, nopClose{be2})
	if err := be2.Save(ctx, backend.Handle{Type: backend.KeyFile, Name: kid.String()}, []byte(resticKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, nopClose{be2}, "wrong", repo.Options{}); !errors.Is(err, repo.ErrWrongPassword) || errors.Is(err, repo.ErrResticRepository) {
		t.Fatalf("wrong password on a dj repository with a stray scrypt key: %v", err)
	}
}

func TestAddKeyAs(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := repo.TestRepository(t, nopClose{be})
	id, err := r.AddKeyAs(ctx, "second", "ann", "laptop")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := r.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, k := range keys {
		if k.ID == id {
			found = true
			if k.Username != "ann" || k.Hostname != "laptop" || k.Current {
				t.Errorf("added key: %+v", k)
			}
		} else if !k.Current {
			t.Errorf("the key in use is not marked current: %+v", k)
		}
	}
	if !found || len(keys) != 2 {
		t.Fatalf("keys %+v", keys)
	}
	if _, err := repo.Open(ctx, nopClose{be}, "second", repo.Options{}); err != nil {
		t.Fatalf("open with the added key: %v", err)
	}
}
