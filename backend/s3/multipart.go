package s3

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/errgroup"

	"dj/backend"
)

// saveMultipart uploads data in parts of the part size, partsInFlight at
// once. The object appears whole when the upload completes; a failed
// upload is aborted, so that its parts do not stay behind (and cost).
func (b *Backend) saveMultipart(ctx context.Context, h backend.Handle, key string, data []byte) error {
	in := &s3.CreateMultipartUploadInput{
		Bucket:       aws.String(b.cfg.Bucket),
		Key:          aws.String(key),
		ContentType:  aws.String("application/octet-stream"),
		StorageClass: b.storageClass(ctx, h),
	}
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = b.sseC()
	in.ServerSideEncryption, in.SSEKMSKeyId = b.sse()
	in.ObjectLockMode, in.ObjectLockRetainUntilDate = b.objectLock(h)
	up, err := b.client.CreateMultipartUpload(ctx, in)
	if err != nil {
		return fmt.Errorf("start multipart upload: %w", convert(ctx, err))
	}
	uploadID := up.UploadId

	n := (int64(len(data)) + b.cfg.PartSize - 1) / b.cfg.PartSize
	parts := make([]types.CompletedPart, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(partsInFlight)
	for i := int64(0); i < n; i++ {
		g.Go(func() error {
			part := data[i*b.cfg.PartSize : min(int64(len(data)), (i+1)*b.cfg.PartSize)]
			num := int32(i + 1)
			w := backend.WatchUpload(gctx, part, backend.StallTimeout(ctx, b.stall))
			defer w.Stop()
			pin := &s3.UploadPartInput{
				Bucket:        aws.String(b.cfg.Bucket),
				Key:           aws.String(key),
				UploadId:      uploadID,
				PartNumber:    aws.Int32(num),
				Body:          w.Body(),
				ContentLength: aws.Int64(int64(len(part))),
				ContentMD5:    b.contentMD5(h, part),
			}
			pin.SSECustomerAlgorithm, pin.SSECustomerKey, pin.SSECustomerKeyMD5 = b.sseC()
			out, err := b.client.UploadPart(w.Context(), pin)
			if err != nil {
				return fmt.Errorf("upload part %d of %d: %w", num, n, convert(gctx, w.Err(err)))
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)}
			return nil
		})
	}
	err = g.Wait()
	if err == nil {
		_, err = b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket:          aws.String(b.cfg.Bucket),
			Key:             aws.String(key),
			UploadId:        uploadID,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
		if err != nil {
			err = fmt.Errorf("complete multipart upload: %w", convert(ctx, err))
		}
	}
	if err != nil {
		b.abortUpload(ctx, key, uploadID)
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return err
	}
	return nil
}

// abortAttempts bounds how many times abortUpload aborts one upload.
const abortAttempts = 5

// abortUpload aborts a multipart upload until the server reports it gone.
// A part whose request the server was still handling when the abort
// arrived can land after it and bring the upload back with its parts (S3's
// documentation: "it might be necessary to abort a given multipart upload
// multiple times"), so after each abort the upload's parts are listed, at
// once and once more a moment later, and the abort is repeated while they
// are there. It runs even when ctx is canceled, bounded by a minute; what
// it cannot remove (the server unreachable) a bucket lifecycle rule
// (AbortIncompleteMultipartUpload) removes.
func (b *Backend) abortUpload(ctx context.Context, key string, uploadID *string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	delay := 50 * time.Millisecond
	for range abortAttempts {
		_, _ = b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key), UploadId: uploadID,
		})
		gone, err := b.uploadGone(ctx, key, uploadID)
		if err == nil && gone {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			gone, err = b.uploadGone(ctx, key, uploadID)
		}
		if err != nil || gone {
			return
		}
		delay *= 2
	}
}

// uploadGone reports whether the server no longer knows the upload.
func (b *Backend) uploadGone(ctx context.Context, key string, uploadID *string) (bool, error) {
	_, err := b.client.ListParts(ctx, &s3.ListPartsInput{
		Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key), UploadId: uploadID, MaxParts: aws.Int32(1),
	})
	switch {
	case err == nil:
		return false, nil
	case isNoSuchUpload(err):
		return true, nil
	}
	return false, err
}

// RemoveStaleTemp aborts the multipart uploads of repository files that
// were started more than age ago and never completed (a killed backup or
// prune, a lost connection), so that their parts stop costing storage,
// and returns how many it aborted. Only keys in the repository's folders
// are touched: other uploads in a shared bucket are not dj's to end.
func (b *Backend) RemoveStaleTemp(ctx context.Context, age time.Duration) (int, error) {
	cutoff := b.now().Add(-age)
	aborted := 0
	for _, t := range backend.AllFileTypes {
		if t == backend.ConfigFile {
			continue
		}
		p := s3.NewListMultipartUploadsPaginator(b.client, &s3.ListMultipartUploadsInput{
			Bucket: aws.String(b.cfg.Bucket), Prefix: aws.String(b.join(string(t) + "/")),
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return aborted, fmt.Errorf("list multipart uploads: %w", convert(ctx, err))
			}
			for _, u := range page.Uploads {
				if u.Key == nil || u.UploadId == nil || u.Initiated == nil || u.Initiated.After(cutoff) {
					continue
				}
				_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
					Bucket: aws.String(b.cfg.Bucket), Key: u.Key, UploadId: u.UploadId,
				})
				if err != nil && !isNoSuchUpload(err) {
					return aborted, fmt.Errorf("abort multipart upload of %s: %w", *u.Key, convert(ctx, err))
				}
				if err == nil {
					aborted++
				}
			}
		}
	}
	return aborted, nil
}

// isNoSuchUpload reports whether err is the server's answer that it does
// not know the multipart upload (aborted or completed).
func isNoSuchUpload(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload"
}
