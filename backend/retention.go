package backend

import (
	"errors"
	"fmt"
	"time"
)

// ErrRetained means that a file cannot be removed yet: the storage keeps it
// under a retention period (S3 Object Lock, or a server's append-only
// mode), which protects backups from a client that is compromised. Callers
// that remove files plan around it: prune leaves such packs for a later
// run, forget says which snapshots stay. Test with errors.Is.
var ErrRetained = errors.New("the storage retains this file")

// RetentionError is the error of a Remove refused because the file is under
// retention. It satisfies errors.Is(err, ErrRetained).
type RetentionError struct {
	Handle Handle
	// Until is when the retention ends; zero when the storage does not say.
	Until time.Time
}

func (e *RetentionError) Error() string {
	if e.Until.IsZero() {
		return fmt.Sprintf("%s: %v", e.Handle, ErrRetained)
	}
	return fmt.Sprintf("%s: %v until %s", e.Handle, ErrRetained, e.Until.UTC().Format(time.RFC3339))
}

// Is reports whether target is ErrRetained.
func (e *RetentionError) Is(target error) bool { return target == ErrRetained }

// RetainedUntil returns when the retention of a refused removal ends, and
// whether err says so.
func RetainedUntil(err error) (time.Time, bool) {
	var re *RetentionError
	if errors.As(err, &re) && !re.Until.IsZero() {
		return re.Until, true
	}
	return time.Time{}, false
}
