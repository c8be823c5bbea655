package crypto

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/argon2"
)

// ErrWrongPassword is returned when a password opens none of the key files.
var ErrWrongPassword = errors.New("wrong password or no key found")

// KDFParams are argon2id cost parameters.
type KDFParams struct {
	Time    uint32 `json:"time"`
	Memory  uint32 `json:"memory"` // KiB
	Threads uint8  `json:"threads"`
}

// DefaultKDF is the argon2id cost for new keys: OWASP's recommended
// argon2id setting (19 MiB, two passes), about 25 ms here. Every command
// pays it on opening, and a mount's first listing must come fast; 64 MiB
// costs six times as much, mostly in page faults. The parameters are stored
// per key file, so a stronger key can be added with other settings.
var DefaultKDF = KDFParams{Time: 2, Memory: 19 * 1024, Threads: 4}

// TestKDF is a cheap setting for tests only.
var TestKDF = KDFParams{Time: 1, Memory: 64, Threads: 1}

// Bounds on KDF parameters read from storage, so a hostile key file cannot
// make dj allocate unbounded memory or spin for minutes: dj writes only
// DefaultKDF (19 MiB, 2 passes). A key file of 4 GiB was accepted and
// crashed dj out of memory; one of 100 passes over 1 GiB took minutes.
const (
	maxKDFMemory = 256 << 10 // KiB = 256 MiB
	maxKDFTime   = 100
	// maxKDFWork bounds passes times memory (KiB): 8 passes over 256 MiB.
	maxKDFWork = 8 * maxKDFMemory
)

// KeyFile is a password-protected copy of the master key, stored as plain
// JSON under keys/.
type KeyFile struct {
	Created  time.Time `json:"created"`
	Username string    `json:"username,omitempty"`
	Hostname string    `json:"hostname,omitempty"`
	KDF      string    `json:"kdf"`
	KDFParams
	Salt []byte `json:"salt"`
	Data []byte `json:"data"` // the master key, sealed with the password-derived key
}

const keyFileAD = "dj key file v1"

// NewKeyFile seals master with a key derived from password.
func NewKeyFile(master *Key, password string, p KDFParams, username, hostname string) (*KeyFile, error) {
	kf := &KeyFile{Created: time.Now(), Username: username, Hostname: hostname, KDF: "argon2id", KDFParams: p}
	kf.Salt = make([]byte, 16)
	if _, err := rand.Read(kf.Salt); err != nil {
		return nil, fmt.Errorf("generate salt: %w", err)
	}
	user, err := kf.userKey(password)
	if err != nil {
		return nil, err
	}
	kf.Data = user.Seal(nil, master.master[:], []byte(keyFileAD))
	return kf, nil
}

func (kf *KeyFile) userKey(password string) (*Key, error) {
	if kf.KDF != "argon2id" {
		return nil, fmt.Errorf("key file uses unknown KDF %q", kf.KDF)
	}
	if kf.Time == 0 || kf.Time > maxKDFTime || kf.Memory == 0 || kf.Memory > maxKDFMemory || kf.Threads == 0 ||
		uint64(kf.Time)*uint64(kf.Memory) > maxKDFWork {
		return nil, fmt.Errorf("key file has invalid KDF parameters (time %d, memory %d KiB, threads %d)", kf.Time, kf.Memory, kf.Threads)
	}
	if len(kf.Salt) < 8 || len(kf.Salt) > 64 {
		return nil, fmt.Errorf("key file has invalid salt length %d", len(kf.Salt))
	}
	prepareKDFMemory(int(kf.Memory) << 10)
	raw := argon2.IDKey([]byte(password), kf.Salt, kf.Time, kf.Memory, kf.Threads, MasterKeySize)
	releaseKDFMemory(int(kf.Memory) << 10)
	return KeyFromMaster(raw)
}

// Open returns the master key sealed in the key file, or ErrWrongPassword.
func (kf *KeyFile) Open(password string) (*Key, error) {
	user, err := kf.userKey(password)
	if err != nil {
		return nil, err
	}
	m, err := user.Open(nil, kf.Data, []byte(keyFileAD))
	if err != nil {
		return nil, ErrWrongPassword
	}
	return KeyFromMaster(m)
}

// ParseKeyFile decodes a key file.
func ParseKeyFile(b []byte) (*KeyFile, error) {
	var kf KeyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("decode key file: %w", err)
	}
	return &kf, nil
}
