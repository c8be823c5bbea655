package repo

import (
	"context"
	"testing"

	"dj/backend"
	"dj/repo/crypto"
)

// TestPassword is the password of repositories made by TestRepository.
const TestPassword = "test password"

// TestRepository initialises a repository in be with a cheap key
// derivation, for tests of the layers above the repository. It is closed
// when the test ends.
func TestRepository(t testing.TB, be backend.Backend) *Repository {
	t.Helper()
	r, err := Init(context.Background(), be, TestPassword, Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatalf("init test repository: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestOpen opens the repository in be made by TestRepository and loads its
// index.
func TestOpen(t testing.TB, be backend.Backend) *Repository {
	t.Helper()
	r, err := Open(context.Background(), be, TestPassword, Options{KDF: &crypto.TestKDF})
	if err != nil {
		t.Fatalf("open test repository: %v", err)
	}
	if _, err := r.LoadIndex(context.Background(), false); err != nil {
		t.Fatalf("load index: %v", err)
	}
	return r
}
