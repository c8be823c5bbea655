package repo

import (
	"bytes"
	"fmt"

	"dj/repo/crypto"
	"dj/repo/pack"
)

// verifySealed opens the stored form of a blob that is about to go into a
// pack (decrypts it, and decompresses it when compressed) and compares
// the result with the plaintext it was made from, so that a compressor or
// cipher bug, or memory that flipped a bit, never reaches storage as a
// blob that cannot be read back (restic #4523, #4529). The plaintext was
// hashed to id before, so equal bytes are the blob.
func (r *Repository) verifySealed(t pack.BlobType, id crypto.ID, sealed []byte, compressed bool, plain []byte) error {
	fail := func(err error) error {
		return fmt.Errorf("%w: %s blob %s does not open to its content before upload: %w", ErrCorrupt, t, id.Short(), err)
	}
	content, err := pack.OpenBlob(r.key, r.getBuf(len(sealed)), t, id, sealed)
	if err != nil {
		return fail(err)
	}
	defer r.putBuf(content)
	if !compressed {
		if !bytes.Equal(content, plain) {
			return fail(fmt.Errorf("decrypted bytes differ"))
		}
		return nil
	}
	out := r.getBuf(len(plain) + decodeSlack)
	defer r.putBuf(out)
	got, err := r.decompress(content, out[:0], len(plain))
	if err != nil {
		return fail(err)
	}
	if !bytes.Equal(got, plain) {
		return fail(fmt.Errorf("decompressed bytes differ"))
	}
	return nil
}
