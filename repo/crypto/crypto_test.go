package crypto

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpenRoundTrip(t *testing.T) {
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, 100, 1 << 20} {
		plain := bytes.Repeat([]byte{0xab}, size)
		sealed := k.Seal(nil, plain, []byte("data"))
		if len(sealed) != size+Overhead {
			t.Fatalf("size %d: sealed length %d", size, len(sealed))
		}
		got, err := k.Open(nil, sealed, []byte("data"))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d: round trip failed: %v", size, err)
		}
	}
}

func TestAnyFlippedBitIsDetected(t *testing.T) {
	k, _ := NewRandomKey()
	plain := []byte("the quick brown fox jumps over the lazy dog")
	sealed := k.Seal(nil, plain, []byte("ad"))
	for i := 0; i < len(sealed)*8; i++ {
		bad := append([]byte(nil), sealed...)
		bad[i/8] ^= 1 << (i % 8)
		if _, err := k.Open(nil, bad, []byte("ad")); !errors.Is(err, ErrAuth) {
			t.Fatalf("bit %d flipped: got %v, want ErrAuth", i, err)
		}
	}
	for _, n := range []int{0, 1, Overhead - 1, len(sealed) - 1} {
		if _, err := k.Open(nil, sealed[:n], []byte("ad")); !errors.Is(err, ErrAuth) {
			t.Fatalf("truncated to %d: got %v", n, err)
		}
	}
	if _, err := k.Open(nil, sealed, []byte("other")); !errors.Is(err, ErrAuth) {
		t.Fatalf("other ad: got %v", err)
	}
	k2, _ := NewRandomKey()
	if _, err := k2.Open(nil, sealed, []byte("ad")); !errors.Is(err, ErrAuth) {
		t.Fatalf("other key: got %v", err)
	}
}

func TestSubkeysAreDeterministicAndKeyed(t *testing.T) {
	k1, _ := NewRandomKey()
	k1b, _ := KeyFromMaster(k1.Master())
	k2, _ := NewRandomKey()
	data := []byte("hello")
	if k1.BlobID(data) != k1b.BlobID(data) || *k1.Gear() != *k1b.Gear() {
		t.Fatal("same master gives different subkeys")
	}
	if k1.BlobID(data) == k2.BlobID(data) || *k1.Gear() == *k2.Gear() {
		t.Fatal("different masters give equal subkeys")
	}
	if k1.BlobID(data) == Hash(data) {
		t.Fatal("blob id is not keyed")
	}
}

func TestKeyFile(t *testing.T) {
	k, _ := NewRandomKey()
	kf, err := NewKeyFile(k, "secret", TestKDF, "ann", "laptop")
	if err != nil {
		t.Fatal(err)
	}
	got, err := kf.Open("secret")
	if err != nil || !bytes.Equal(got.Master(), k.Master()) {
		t.Fatalf("open: %v", err)
	}
	if _, err := kf.Open("wrong"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: got %v", err)
	}
	hostile := *kf
	hostile.Memory = 1 << 30
	if _, err := hostile.Open("secret"); err == nil || errors.Is(err, ErrWrongPassword) {
		t.Fatalf("hostile params: got %v", err)
	}
}

func BenchmarkSeal1MiB(b *testing.B) {
	k, _ := NewRandomKey()
	plain := make([]byte, 1<<20)
	buf := make([]byte, 0, len(plain)+Overhead)
	b.SetBytes(int64(len(plain)))
	for i := 0; i < b.N; i++ {
		buf = k.Seal(buf[:0], plain, nil)
	}
}

func BenchmarkBlobID1MiB(b *testing.B) {
	k, _ := NewRandomKey()
	plain := make([]byte, 1<<20)
	b.SetBytes(int64(len(plain)))
	for i := 0; i < b.N; i++ {
		k.BlobID(plain)
	}
}

// TestBlobIDReusesHashersCleanly checks that pooled hashers are reset to the
// keyed state: the same content always gets the same id, and other content
// in between leaves no trace.
func TestBlobIDReusesHashersCleanly(t *testing.T) {
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	a, b := []byte("first content"), bytes.Repeat([]byte("x"), 100000)
	want := k.BlobID(a)
	for i := 0; i < 5; i++ {
		k.BlobID(b)
		if got := k.BlobID(a); got != want {
			t.Fatalf("round %d: id %s, want %s", i, got, want)
		}
	}
	other, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	if other.BlobID(a) == want {
		t.Fatal("ids do not depend on the key")
	}
}

// TestSealInPlace checks that sealing in place gives a message Open accepts,
// with and without room for the tag.
func TestSealInPlace(t *testing.T) {
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("some plaintext to seal where it lies")
	for _, room := range []int{0, Overhead} {
		buf := make([]byte, NonceSize, NonceSize+len(plain)+room)
		buf = append(buf, plain...)
		sealed := k.SealInPlace(buf, []byte("ad"))
		if len(sealed) != len(plain)+Overhead {
			t.Fatalf("room %d: sealed length %d, want %d", room, len(sealed), len(plain)+Overhead)
		}
		got, err := k.Open(nil, sealed, []byte("ad"))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("room %d: Open: %q, %v", room, got, err)
		}
		if _, err := k.Open(nil, sealed, []byte("other ad")); err == nil {
			t.Fatalf("room %d: opened with the wrong associated data", room)
		}
	}
}
