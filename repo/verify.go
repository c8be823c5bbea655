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

// checkCompressed decompresses the compressed form of a blob before it is
// sealed and compares it with the plaintext: the compressor is the part
// of the path to storage that has shipped bugs (restic #4523), and the
// check costs a decompression, about a fifth of the compression before
// it. Backup uses it; verifySealed, which also opens the sealed bytes,
// costs a decryption more and guards the rarer writes (repack).
func (r *Repository) checkCompressed(t pack.BlobType, id crypto.ID, content, plain []byte) error {
	out := r.getBuf(len(plain) + decodeSlack)
	defer r.putBuf(out)
	got, err := r.decompress(content, out[:0], len(plain))
	if err == nil && !bytes.Equal(got, plain) {
		err = fmt.Errorf("decompressed bytes differ")
	}
	if err != nil {
		return fmt.Errorf("%w: %s blob %s does not decompress to its content before upload: %w", ErrCorrupt, t, id.Short(), err)
	}
	return nil
}
