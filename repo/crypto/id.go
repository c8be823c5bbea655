package crypto

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// IDSize is the length of an ID in bytes.
const IDSize = 32

// ID names a blob (keyed BLAKE3 of its plaintext) or a repository file
// (SHA-256 of its stored bytes). It is written as 64 lower-case hex digits.
type ID [IDSize]byte

// Hash returns the storage ID of data: its SHA-256.
func Hash(data []byte) ID { return ID(sha256.Sum256(data)) }

// ParseID parses 64 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("invalid ID %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid ID %q: %w", s, err)
	}
	return id, nil
}

// String returns the ID as 64 hex digits.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits, as shown in listings.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsNull reports whether the ID is all zeros.
func (id ID) IsNull() bool { return id == ID{} }

// MarshalJSON writes the ID as a hex string.
func (id ID) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2*IDSize+2)
	b = append(b, '"')
	b = hex.AppendEncode(b, id[:])
	return append(b, '"'), nil
}

// UnmarshalJSON reads a hex string. It parses the bytes itself: trees hold
// many ids, and a nested json.Unmarshal per id would rescan each one.
func (id *ID) UnmarshalJSON(b []byte) error {
	if len(b) != 2*IDSize+2 || b[0] != '"' || b[len(b)-1] != '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("invalid ID: %w", err)
		}
		v, err := ParseID(s)
		if err != nil {
			return err
		}
		*id = v
		return nil
	}
	if _, err := hex.Decode(id[:], b[1:len(b)-1]); err != nil {
		return fmt.Errorf("invalid ID %s: %w", b, err)
	}
	return nil
}
