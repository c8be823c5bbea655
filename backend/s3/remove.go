package s3

// This file holds Remove: retention checks and the removal of every
// version of an object in a bucket with object lock.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"dj/backend"
)

// Remove deletes h. A file under object lock is not deleted: the error is
// a *backend.RetentionError (errors.Is(err, backend.ErrRetained)) that says
// until when, and that a retry cannot cure. In a bucket with object lock
// every version of the file is deleted, so that nothing is kept behind a
// delete marker.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	key, err := b.key(h)
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := b.remove(ctx, h, key); err != nil {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

func (b *Backend) remove(ctx context.Context, h backend.Handle, key string) error {
	// S3 answers a delete of a missing key with success; the contract
	// wants fs.ErrNotExist, and the retention is in the head.
	head, err := b.head(ctx, key)
	if err != nil {
		return err
	}
	if until := head.ObjectLockRetainUntilDate; until != nil && until.After(b.now()) {
		return permanentError{&backend.RetentionError{Handle: h, Until: *until}}
	}
	if head.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn {
		return permanentError{&backend.RetentionError{Handle: h}}
	}
	if !b.lockedBucket {
		_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)})
		return convert(ctx, err)
	}
	return b.removeVersions(ctx, h, key)
}

// removeVersions deletes every version and delete marker of key.
func (b *Backend) removeVersions(ctx context.Context, h backend.Handle, key string) error {
	p := s3.NewListObjectVersionsPaginator(b.client, &s3.ListObjectVersionsInput{
		Bucket: aws.String(b.cfg.Bucket),
		Prefix: aws.String(key),
	})
	var versions []*string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return convert(ctx, err)
		}
		for _, v := range page.Versions {
			if aws.ToString(v.Key) == key {
				versions = append(versions, v.VersionId)
			}
		}
		for _, m := range page.DeleteMarkers {
			if aws.ToString(m.Key) == key {
				versions = append(versions, m.VersionId)
			}
		}
	}
	if len(versions) == 0 { // a server that lists no versions
		_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key)})
		return convert(ctx, err)
	}
	for _, v := range versions {
		_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key), VersionId: v})
		if err = convert(ctx, err); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				// An older version still under retention.
				return permanentError{fmt.Errorf("%w (%v)", &backend.RetentionError{Handle: h}, err)}
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}
