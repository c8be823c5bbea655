package backend

import "context"

// PackKind says what the blobs of a pack file are. The name of a pack is
// the hash of its bytes and its header is encrypted, so a backend cannot
// tell a tree pack from a data pack by itself; the writer of the pack says
// so through the context of Save. Backends that store the two differently
// read it there: S3 keeps tree packs in the standard storage class while
// data packs may go to a colder one, and a disk cache keeps tree packs.
type PackKind uint8

// The kinds of pack. UnknownPack is what a context without a kind says;
// a backend treats it like a tree pack wherever guessing wrong would make
// the repository slow or unreadable (a cold storage class).
const (
	UnknownPack PackKind = iota
	DataPack
	TreePack
)

// packKindKey is the context key of the pack kind.
type packKindKey struct{}

// WithPackKind returns ctx carrying the kind of the pack a Save stores.
func WithPackKind(ctx context.Context, k PackKind) context.Context {
	return context.WithValue(ctx, packKindKey{}, k)
}

// PackKindFrom returns the kind of pack ctx carries, UnknownPack if none.
func PackKindFrom(ctx context.Context) PackKind {
	k, _ := ctx.Value(packKindKey{}).(PackKind)
	return k
}
