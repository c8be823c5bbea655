// Package crypto holds dj's cryptography: the master key and the subkeys
// derived from it (blob-id key, AEAD key, chunker gear table), the AEAD
// envelope (XChaCha20-Poly1305 with a random nonce in front), keyed BLAKE3
// blob ids, and password-protected key files (argon2id).
package crypto

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// Fixed context strings for subkey derivation. Changing any of them makes
// existing repositories unreadable.
const (
	contextIDKey   = "dj 2026-11-23 blob id key v1"
	contextAEADKey = "dj 2026-11-23 aead key v1"
	contextGear    = "dj 2026-11-23 chunker gear table v1"
)

// MasterKeySize is the length of the master key in bytes.
const MasterKeySize = 32

// NonceSize is the length of the random nonce in front of every sealed message.
const NonceSize = chacha20poly1305.NonceSizeX

// Overhead is the number of bytes Seal adds to a plaintext.
const Overhead = NonceSize + chacha20poly1305.Overhead

// ErrAuth is returned when a sealed message fails authentication: it was
// modified, truncated, sealed with another key, or bound to other data.
var ErrAuth = errors.New("ciphertext verification failed")

// Key is an opened master key with its derived subkeys. It is safe for
// concurrent use.
type Key struct {
	master [MasterKeySize]byte
	idKey  [32]byte
	aead   cipher.AEAD
	gear   [256]uint64

	// hashers holds keyed BLAKE3 hashers for BlobID: a fresh one costs an
	// allocation of about 10 KiB, and backup asks for one per chunk.
	hashers *sync.Pool
}

// NewRandomKey returns a new master key from the system's random source.
func NewRandomKey() (*Key, error) {
	var m [MasterKeySize]byte
	if _, err := rand.Read(m[:]); err != nil {
		return nil, fmt.Errorf("generate master key: %w", err)
	}
	return KeyFromMaster(m[:])
}

// KeyFromMaster derives the subkeys from master key bytes.
func KeyFromMaster(master []byte) (*Key, error) {
	if len(master) != MasterKeySize {
		return nil, fmt.Errorf("master key has %d bytes, want %d", len(master), MasterKeySize)
	}
	k := &Key{}
	copy(k.master[:], master)
	blake3.DeriveKey(contextIDKey, master, k.idKey[:])
	idKey := k.idKey
	k.hashers = &sync.Pool{New: func() any {
		h, err := blake3.NewKeyed(idKey[:])
		if err != nil { // cannot happen: the key has the right length
			panic(err)
		}
		return h
	}}
	var aeadKey [32]byte
	blake3.DeriveKey(contextAEADKey, master, aeadKey[:])
	aead, err := chacha20poly1305.NewX(aeadKey[:])
	if err != nil {
		return nil, fmt.Errorf("init AEAD: %w", err)
	}
	k.aead = aead
	var gearBytes [256 * 8]byte
	blake3.DeriveKey(contextGear, master, gearBytes[:])
	for i := range k.gear {
		k.gear[i] = binary.LittleEndian.Uint64(gearBytes[i*8:])
	}
	return k, nil
}

// Master returns a copy of the master key bytes (for writing key files).
func (k *Key) Master() []byte { return append([]byte(nil), k.master[:]...) }

// Gear returns the keyed gear table for the chunker.
func (k *Key) Gear() *[256]uint64 { return &k.gear }

// BlobID returns the id of a blob: BLAKE3 keyed with the id key, over the
// plaintext.
func (k *Key) BlobID(plain []byte) ID {
	h := k.hashers.Get().(*blake3.Hasher)
	_, _ = h.Write(plain)
	var id ID
	h.Sum(id[:0])
	h.Reset()
	k.hashers.Put(h)
	return id
}

// BlobHasher returns a hash that computes BlobID of what is written to it,
// for a blob read as a stream.
func (k *Key) BlobHasher() hash.Hash {
	h, err := blake3.NewKeyed(k.idKey[:])
	if err != nil {
		panic(err) // the key has blake3's key size
	}
	return h
}

// Seal encrypts and authenticates plain, binding it to ad, and appends
// nonce||ciphertext||tag to dst.
func (k *Key) Seal(dst, plain, ad []byte) []byte {
	n := len(dst)
	dst = grow(dst, NonceSize+len(plain)+k.aead.Overhead())
	nonce := dst[n : n+NonceSize]
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Errorf("read random nonce: %w", err)) // crypto/rand never fails on Linux
	}
	out := k.aead.Seal(dst[n+NonceSize:n+NonceSize], nonce, plain, ad)
	return dst[:n+NonceSize+len(out)]
}

// SealInPlace encrypts and authenticates buf[NonceSize:] where it lies,
// binding it to ad: buf holds NonceSize bytes of room and then the
// plaintext. It returns nonce||ciphertext||tag in buf's storage (grown if
// buf lacks room for the tag), saving the caller a second buffer.
func (k *Key) SealInPlace(buf, ad []byte) []byte {
	if len(buf) < NonceSize {
		panic("crypto: SealInPlace without room for the nonce")
	}
	tag := k.aead.Overhead()
	if cap(buf)-len(buf) < tag {
		nb := make([]byte, len(buf), len(buf)+tag)
		copy(nb, buf)
		buf = nb
	}
	nonce := buf[:NonceSize]
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Errorf("read random nonce: %w", err)) // crypto/rand never fails on Linux
	}
	plain := buf[NonceSize:]
	out := k.aead.Seal(plain[:0], nonce, plain, ad)
	return buf[:NonceSize+len(out)]
}

// Open authenticates and decrypts a message made by Seal with the same ad
// and appends the plaintext to dst. Any change to the message or ad gives
// ErrAuth.
func (k *Key) Open(dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: message too short (%d bytes)", ErrAuth, len(sealed))
	}
	out, err := k.aead.Open(dst, sealed[:NonceSize], sealed[NonceSize:], ad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, len(b)+n+len(b)/4)
	copy(nb, b)
	return nb
}
