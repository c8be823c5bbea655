package s3

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
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
			w := backend.WatchUpload(gctx, part, backend.StallTimeout(ctx, backend.DefaultStallTimeout))
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
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_, _ = b.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(b.cfg.Bucket), Key: aws.String(key), UploadId: uploadID,
		})
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return err
	}
	return nil
}
