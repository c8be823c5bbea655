// Package repo is the repository: it opens and initialises repositories,
// holds the master key, loads and saves blobs through the index, and reads
// and writes trees, snapshots, keys and locks. Every command of dj works
// through it.
//
// Ordering rules that keep data safe: packs are written before the index
// files that name them, index files before the snapshots that need them; the
// snapshot list is read before the index.
package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"dj/backend"
	"dj/repo/crypto"
	"dj/repo/index"
	"dj/repo/pack"
)

// Errors that callers map to exit codes.
var (
	// ErrNoRepository means there is no repository at the given location.
	ErrNoRepository = errors.New("no repository at this location")
	// ErrWrongPassword means the password opens none of the keys.
	ErrWrongPassword = crypto.ErrWrongPassword
	// ErrRepositoryExists means init found an existing repository.
	ErrRepositoryExists = errors.New("a repository already exists at this location")
	// ErrCorrupt marks data read from the repository that failed to
	// decrypt, decode or verify.
	ErrCorrupt = errors.New("repository data is corrupt")
)

// Config is the repository configuration, stored encrypted as "config".
type Config struct {
	Version          int    `json:"version"`
	ID               string `json:"id"`
	ChunkerMin       int    `json:"chunker_min"`
	ChunkerAvg       int    `json:"chunker_avg"`
	ChunkerMax       int    `json:"chunker_max"`
	PackSize         int    `json:"pack_size"`
	CompressionLevel int    `json:"compression_level"`
}

// Options tune a repository handle.
type Options struct {
	// PackSize is the target pack size in bytes (default: the config's).
	PackSize int
	// Compression is the zstd level name: "off", "fastest", "default",
	// "better", "best" (default "default").
	Compression string
	// KDF is used for new keys (default crypto.DefaultKDF).
	KDF *crypto.KDFParams
	// LockRefresh and LockStale replace LockRefreshInterval and
	// LockStaleAfter when both are set, the refresh the shorter (the
	// end-to-end tests shorten them through DJ_TEST_LOCK).
	LockRefresh, LockStale time.Duration
}

// Repository is an open repository. It is safe for concurrent use.
type Repository struct {
	be    backend.Backend
	key   *crypto.Key
	cfg   Config
	opts  Options
	keyID crypto.ID

	idx *index.Index
	// ixs is the bookkeeping of index files (indexset.go).
	ixs indexSet

	enc blobEncoder // nil: no compression
	dec *zstd.Decoder

	// bufPool holds scratch buffers for compressed and sealed blobs. A
	// bounded channel, not a sync.Pool: the garbage collector empties a
	// sync.Pool, and a backup under a memory limit collects often.
	bufPool chan []byte
	// smallBufPool holds the buffers of at most smallBuf bytes (seal.go).
	smallBufPool chan []byte

	zeroMu  sync.Mutex
	zeroIDs map[int]crypto.ID
	// zeroSmall counts the sizes up to smallZero in zeroIDs: small files'
	// sizes have a budget of their own, so that they never crowd out the
	// sizes of disk images' fixed chunks.
	zeroSmall int

	// treePacks remembers the tree packs whose whole content the backend
	// was asked to prefetch (load.go).
	treePacks treePackCache

	packer *packer

	// locks are the locks taken through this handle: SaveIndexFile and
	// SaveSnapshot refuse to write once one of them is lost.
	locks heldLocks

	// snapMu guards snapPrefetch, the snapshots PrefetchSnapshots
	// loads for the next Snapshots; snapshotGen counts the snapshot
	// files this handle saved or removed.
	snapMu       sync.Mutex
	snapPrefetch *snapshotPrefetch
	snapshotGen  atomic.Uint64
}

// Init creates a new repository in an empty backend with password as its
// first key.
func Init(ctx context.Context, be backend.Backend, password string, opts Options) (*Repository, error) {
	if _, err := be.Stat(ctx, backend.Handle{Type: backend.ConfigFile}); err == nil {
		return nil, fmt.Errorf("%s: %w", be.Location(), ErrRepositoryExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("check for config: %w", err)
	}
	key, err := crypto.NewRandomKey()
	if err != nil {
		return nil, err
	}
	idBytes := make([]byte, 32)
	if _, err := rand.Read(idBytes); err != nil {
		return nil, err
	}
	cfg := Config{Version: 1, ID: hex.EncodeToString(idBytes), ChunkerMin: 512 << 10, ChunkerAvg: 1 << 20, ChunkerMax: 8 << 20, PackSize: 16 << 20, CompressionLevel: 3}
	r, err := newRepository(be, key, cfg, opts)
	if err != nil {
		return nil, err
	}
	if _, err := r.AddKey(ctx, password); err != nil {
		return nil, err
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := r.SaveFile(ctx, backend.ConfigFile, body); err != nil {
		return nil, fmt.Errorf("save config: %w", err)
	}
	return r, nil
}

// Open opens the repository in be with password. It does not load the
// index; call LoadIndex for commands that read or write blobs.
func Open(ctx context.Context, be backend.Backend, password string, opts Options) (*Repository, error) {
	// The config file is fetched while the key is found: on a remote
	// repository each costs round trips, and they do not depend on each
	// other. A missing config file means no repository, whatever the keys.
	type loaded struct {
		data []byte
		err  error
	}
	cfgc := make(chan loaded, 1)
	go func() {
		data, err := be.Load(ctx, backend.Handle{Type: backend.ConfigFile}, 0, 0)
		cfgc <- loaded{data, err}
	}()
	var (
		cfgOnce sync.Once
		raw     loaded
	)
	config := func() loaded {
		cfgOnce.Do(func() { raw = <-cfgc })
		return raw
	}
	// A key that opens with the password but not the config belongs to
	// another repository (a key file copied in): the next key is tried.
	// When the config itself cannot be read, any key does, and the
	// config's error is reported below.
	fits := func(k *crypto.Key) bool {
		c := config()
		if c.err != nil || len(c.data) < 1 || len(c.data) > maxFileSize || c.data[0] != fileFormatV1 {
			return true
		}
		_, err := k.Open(nil, c.data[1:], fileAD(backend.ConfigFile))
		return err == nil
	}
	key, keyID, keyErr := openKey(ctx, be, password, fits)
	config()
	if raw.err != nil {
		if errors.Is(raw.err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", be.Location(), ErrNoRepository)
		}
		return nil, fmt.Errorf("open repository %s: %w", be.Location(), raw.err)
	}
	if keyErr != nil {
		return nil, keyErr
	}
	if len(raw.data) > maxFileSize {
		return nil, fmt.Errorf("load config: %w: %s is too large (%d bytes)", ErrCorrupt, backend.Handle{Type: backend.ConfigFile}, len(raw.data))
	}
	var cfg Config
	r, err := newRepository(be, key, cfg, opts)
	if err != nil {
		return nil, err
	}
	r.keyID = keyID
	body, err := r.openFile(backend.ConfigFile, raw.data)
	if err != nil && ctx.Err() == nil {
		// A download corrupted on its way: once more (restic #3268).
		if again, lerr := be.Load(ctx, backend.Handle{Type: backend.ConfigFile}, 0, 0); lerr == nil && len(again) <= maxFileSize {
			if b2, err2 := r.openFile(backend.ConfigFile, again); err2 == nil {
				body, err = b2, nil
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load config: %s: %w", backend.Handle{Type: backend.ConfigFile}, err)
	}
	if r.cfg, err = parseConfig(body); err != nil {
		return nil, err
	}
	if r.opts.PackSize == 0 {
		r.opts.PackSize = r.cfg.PackSize
	}
	if r.opts.PackSize <= 0 {
		r.opts.PackSize = 16 << 20
	}
	r.packer.packSize = r.opts.PackSize
	announceID(be, r.cfg.ID)
	return r, nil
}

// announceID tells the backend chain the repository id, if it wants it.
func announceID(be backend.Backend, id string) {
	if rc, ok := backend.As[backend.IDReceiver](be); ok {
		rc.SetRepositoryID(id)
	}
}

func newRepository(be backend.Backend, key *crypto.Key, cfg Config, opts Options) (*Repository, error) {
	enc, err := newEncoder(opts.Compression)
	if err != nil {
		return nil, err
	}
	if opts.PackSize == 0 {
		opts.PackSize = cfg.PackSize
	}
	if opts.KDF == nil {
		opts.KDF = &crypto.DefaultKDF
	}
	r := &Repository{be: be, key: key, cfg: cfg, opts: opts, idx: index.New(), ixs: newIndexSet(),
		bufPool: make(chan []byte, 3*runtime.GOMAXPROCS(0)+2), smallBufPool: make(chan []byte, 32), zeroIDs: map[int]crypto.ID{}, treePacks: treePackCache{last: map[crypto.ID]time.Time{}}}
	r.enc = enc
	r.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(pack.MaxBlobSize))
	if err != nil {
		return nil, err
	}
	r.packer = newPacker(r)
	return r, nil
}

// Backend returns the storage backend.
func (r *Repository) Backend() backend.Backend { return r.be }

// Key returns the master key.
func (r *Repository) Key() *crypto.Key { return r.key }

// Config returns the repository configuration.
func (r *Repository) Config() Config { return r.cfg }

// KeyID returns the id of the key file that opened the repository.
func (r *Repository) KeyID() crypto.ID { return r.keyID }

// Index returns the in-memory index.
func (r *Repository) Index() *index.Index { return r.idx }

// Close releases resources. It does not flush pending blobs.
func (r *Repository) Close() error {
	if p := r.takeSnapshotPrefetch(); p != nil {
		p.cancel()
		<-p.done
	}
	r.packer.discardOpen()
	r.packer.uploads.Wait()
	if r.enc != nil {
		r.enc.Close()
	}
	r.dec.Close()
	return r.be.Close()
}

const (
	fileFormatV1 = 1
	encodingRaw  = 0
	encodingZstd = 1
	// maxFileSize bounds whole files (config, index, snapshot, lock, key).
	maxFileSize = 256 << 20
)

func fileAD(t backend.FileType) []byte { return []byte("dj file " + string(t)) }

// sealFile encodes a whole file: format byte, then the sealed encoding byte
// and (possibly zstd-compressed) body, bound to the file type.
func (r *Repository) sealFile(t backend.FileType, body []byte) []byte {
	plain := make([]byte, 0, compressBound(len(body))+1)
	if r.enc != nil && len(body) > 64 {
		plain = append(plain, encodingZstd)
		plain = r.enc.EncodeAll(body, plain)
	} else {
		plain = append(plain, encodingRaw)
		plain = append(plain, body...)
	}
	out := []byte{fileFormatV1}
	return r.key.Seal(out, plain, fileAD(t))
}

// parseConfig decodes and checks the body of a config file.
func parseConfig(body []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(body, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: config: %w", ErrCorrupt, err)
	}
	if cfg.Version != 1 {
		return Config{}, fmt.Errorf("repository format version %d is not supported by this dj (want 1)", cfg.Version)
	}
	if cfg.ChunkerMin <= 0 || cfg.ChunkerAvg <= cfg.ChunkerMin || cfg.ChunkerMax <= cfg.ChunkerAvg || cfg.ChunkerMax > 64<<20 || cfg.ChunkerAvg&(cfg.ChunkerAvg-1) != 0 {
		return Config{}, fmt.Errorf("%w: config has invalid chunker sizes", ErrCorrupt)
	}
	return cfg, nil
}

func (r *Repository) openFile(t backend.FileType, data []byte) ([]byte, error) {
	if len(data) < 1 || data[0] != fileFormatV1 {
		return nil, fmt.Errorf("%w: unknown file format", ErrCorrupt)
	}
	plain, err := r.key.Open(nil, data[1:], fileAD(t))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return r.fileBody(plain)
}

// fileBody decodes the plaintext of a whole file: an encoding byte, then
// the body, raw or zstd-compressed (at most pack.MaxBlobSize bytes once
// decompressed: the decoder refuses more).
func (r *Repository) fileBody(plain []byte) ([]byte, error) {
	if len(plain) < 1 {
		return nil, fmt.Errorf("%w: empty file", ErrCorrupt)
	}
	switch plain[0] {
	case encodingRaw:
		return plain[1:], nil
	case encodingZstd:
		body, err := r.dec.DecodeAll(plain[1:], nil)
		if err != nil {
			return nil, fmt.Errorf("%w: decompress: %w", ErrCorrupt, err)
		}
		return body, nil
	}
	return nil, fmt.Errorf("%w: unknown encoding %d", ErrCorrupt, plain[0])
}

// SaveFile seals body as a file of type t and saves it under the SHA-256 of
// its stored bytes (config is saved as "config"). It returns that id.
func (r *Repository) SaveFile(ctx context.Context, t backend.FileType, body []byte) (crypto.ID, error) {
	data := r.sealFile(t, body)
	id := crypto.Hash(data)
	h := backend.Handle{Type: t, Name: id.String()}
	if t == backend.ConfigFile {
		h.Name = ""
	}
	if err := r.be.Save(ctx, h, data); err != nil {
		return id, fmt.Errorf("save %s: %w", h, err)
	}
	return id, nil
}

// loadFile loads and opens a whole file, checking its storage id. A file
// that comes back damaged is loaded once more before it counts as
// damaged: storage or a network that corrupts a download now and then
// must not make a sound file look lost (restic #3268, #5467).
func (r *Repository) loadFile(ctx context.Context, t backend.FileType, name string) ([]byte, error) {
	body, err := r.loadFileOnce(ctx, t, name)
	if errors.Is(err, ErrCorrupt) && ctx.Err() == nil {
		if again, err2 := r.loadFileOnce(ctx, t, name); err2 == nil {
			return again, nil
		}
	}
	return body, err
}

func (r *Repository) loadFileOnce(ctx context.Context, t backend.FileType, name string) ([]byte, error) {
	h := backend.Handle{Type: t, Name: name}
	data, err := r.be.Load(ctx, h, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: %s is too large (%d bytes)", ErrCorrupt, h, len(data))
	}
	if t != backend.ConfigFile {
		if id := crypto.Hash(data); id.String() != name {
			return nil, fmt.Errorf("%w: %s: content does not match its name", ErrCorrupt, h)
		}
	}
	body, err := r.openFile(t, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	return body, nil
}

// LoadFile loads, verifies and opens the whole file t/id.
func (r *Repository) LoadFile(ctx context.Context, t backend.FileType, id crypto.ID) ([]byte, error) {
	return r.loadFile(ctx, t, id.String())
}

// ListFiles lists the ids of the files of type t, skipping names that are
// not ids.
func (r *Repository) ListFiles(ctx context.Context, t backend.FileType) ([]crypto.ID, error) {
	var ids []crypto.ID
	err := r.be.List(ctx, t, func(fi backend.FileInfo) error {
		id, err := crypto.ParseID(fi.Name)
		if err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", t, err)
	}
	return ids, nil
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
