// The client's reading of a server's quota answer.

package rest

import (
	"net/http"
	"strings"
)

// quotaMessage returns the one line to show for a 507 answer whose text
// says that a quota was crossed (dj serve's answer), and whether it is
// one; a 507 without it is a full disk.
func quotaMessage(e *StatusError) (string, bool) {
	if e.Code != http.StatusInsufficientStorage {
		return "", false
	}
	text := strings.TrimSpace(e.Text)
	if !strings.HasPrefix(text, errQuota.Error()) {
		return "", false
	}
	if i := strings.IndexAny(text, "\r\n"); i >= 0 {
		text = text[:i]
	}
	return text, true
}
