package backend

import "context"

// ListInfos calls fn for every entry of infos in order and stops at the
// first error or when ctx is done: the end of a List that collects its
// listing first (to hold no lock or connection while fn runs).
func ListInfos(ctx context.Context, infos []FileInfo, fn func(FileInfo) error) error {
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}
