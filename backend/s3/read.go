package s3

// This file holds the reading side of the backend: ranged loads, Stat and
// List.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"dj/backend"
)

// Load downloads length bytes of h from offset on (to the end when length
// is 0) with one ranged GET.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset int64, length int) ([]byte, error) {
	data, err := b.get(ctx, h, offset, length, nil)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	return data, nil
}

// LoadRange reads a range into buf when it has room for it (see
// backend.RangeLoader).
func (b *Backend) LoadRange(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	if length == 0 {
		buf = nil
	}
	data, err := b.get(ctx, h, offset, length, buf)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	return data, nil
}

// LoadInto reads exactly len(buf) bytes at offset into buf (see
// backend.IntoLoader).
func (b *Backend) LoadInto(ctx context.Context, h backend.Handle, offset int64, buf []byte) error {
	if len(buf) == 0 {
		_, err := b.key(h)
		return err
	}
	if _, err := b.get(ctx, h, offset, len(buf), buf); err != nil {
		return fmt.Errorf("load %v: %w", h, err)
	}
	return nil
}

// get reads a range of h, into buf when length > 0 and buf has room.
func (b *Backend) get(ctx context.Context, h backend.Handle, offset int64, length int, buf []byte) ([]byte, error) {
	key, err := b.key(h)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("invalid range offset %d length %d: %w", offset, length, fs.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in := &s3.GetObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+int64(length)-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = b.sseC()
	out, err := b.client.GetObject(ctx, in)
	if err != nil {
		err = convert(ctx, err)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			// HTTP cannot ask for an empty range: "bytes=SIZE-" is refused.
			if length == 0 {
				if fi, serr := b.Stat(ctx, h); serr == nil && fi.Size == offset {
					return []byte{}, nil
				}
			}
			return nil, fmt.Errorf("range %d+%d beyond the end of the file: %w", offset, length, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	defer out.Body.Close()
	size := aws.ToInt64(out.ContentLength)
	whole := in.Range != nil && out.ContentRange == nil // a server that ignored Range
	limit := int64(maxFileSize)
	if length > 0 && !whole {
		limit = int64(length)
	}
	if out.ContentLength == nil || size < 0 {
		return nil, errors.New("server sent no Content-Length")
	}
	if size > limit {
		return nil, fmt.Errorf("server sent %d bytes, more than the %d asked for", size, limit)
	}
	var dst []byte
	if !whole && length > 0 && cap(buf) >= length {
		dst = buf[:size]
	} else {
		dst = make([]byte, size)
	}
	if _, err := io.ReadFull(out.Body, dst); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: reading the answer: %s", ErrUnreachable, strings.ReplaceAll(err.Error(), io.ErrUnexpectedEOF.Error(), "connection lost"))
	}
	if whole {
		end := size
		if length > 0 {
			end = offset + int64(length)
		}
		if offset > size || end > size {
			return nil, fmt.Errorf("range %d+%d beyond size %d: %w", offset, length, size, io.ErrUnexpectedEOF)
		}
		return dst[offset:end], nil
	}
	if length > 0 && size < int64(length) {
		return nil, fmt.Errorf("range %d+%d beyond the end of the file: %w", offset, length, io.ErrUnexpectedEOF)
	}
	return dst, nil
}

// Stat returns the size and modification time of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	key, err := b.key(h)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat: %w", err)
	}
	out, err := b.head(ctx, key)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %v: %w", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: aws.ToInt64(out.ContentLength), ModTime: modTime(out.LastModified)}, nil
}

func (b *Backend) head(ctx context.Context, key string) (*s3.HeadObjectOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in := &s3.HeadObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)}
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = b.sseC()
	out, err := b.client.HeadObject(ctx, in)
	return out, convert(ctx, err)
}

// modTime returns t, or now when the server sent none, so that age-based
// safety margins err on the side of keeping files.
func modTime(t *time.Time) time.Time {
	if t == nil {
		return time.Now()
	}
	return *t
}

// List calls fn for every file of type t, page by page of the listing.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := b.list(ctx, t, fn); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	return nil
}

func (b *Backend) list(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if !t.Valid() {
		return fmt.Errorf("invalid file type %q: %w", t, fs.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if t == backend.ConfigFile {
		fi, err := b.Stat(ctx, backend.Handle{Type: t})
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(fi)
	}
	prefix := b.join(string(t) + "/")
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(b.cfg.Bucket),
		Prefix: aws.String(prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return convert(ctx, err)
		}
		infos := make([]backend.FileInfo, 0, len(page.Contents))
		for _, obj := range page.Contents {
			name, ok := fileName(t, strings.TrimPrefix(aws.ToString(obj.Key), prefix))
			if !ok || aws.ToInt64(obj.Size) < 0 {
				continue
			}
			infos = append(infos, backend.FileInfo{Name: name, Size: aws.ToInt64(obj.Size), ModTime: modTime(obj.LastModified)})
		}
		if err := backend.ListInfos(ctx, infos, fn); err != nil {
			return err
		}
	}
	return nil
}

// fileName returns the name of a file of type t from its key below the
// type's directory (XX/NAME for packs, NAME for the others), and whether
// the key is one of the repository's files.
func fileName(t backend.FileType, rel string) (string, bool) {
	name := rel
	if t == backend.PackFile {
		dir, n, ok := strings.Cut(rel, "/")
		if !ok || len(dir) != 2 || !strings.HasPrefix(n, dir) {
			return "", false
		}
		name = n
	}
	if (backend.Handle{Type: t, Name: name}).Validate() != nil {
		return "", false
	}
	return name, true
}
