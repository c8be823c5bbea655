// Authentication of dj serve: HTTP basic auth against htpasswd users, with
// a cache of verified credentials.

package rest

import (
	"bufio"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// authCache remembers recently verified credentials, so that bcrypt, which
// is slow on purpose, runs once per client rather than once per request.
type authCache struct {
	mu sync.Mutex
	ok map[[32]byte]time.Time // SHA-256 of user, NUL, password, NUL, stored password -> verified at

	dummyCost int    // bcrypt cost of dummy
	dummy     []byte // bcrypt hash compared for unknown users
}

const (
	authCacheTTL = 5 * time.Minute
	authCacheMax = 1024
)

func newAuthCache() *authCache {
	return &authCache{ok: make(map[[32]byte]time.Time)}
}

func (s *server) authorized(r *http.Request) bool {
	_, ok := s.auth.check(s.opts.Users, r)
	return ok
}

// check verifies the basic-auth credentials of r against users and
// returns the user's name.
func (a *authCache) check(users map[string]string, r *http.Request) (string, bool) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	want, known := users[user]
	key := sha256.Sum256([]byte(user + "\x00" + pass + "\x00" + want))
	now := time.Now()
	a.mu.Lock()
	at, cached := a.ok[key]
	a.mu.Unlock()
	if cached && now.Sub(at) < authCacheTTL {
		return user, known
	}
	if !known {
		// Spend about as long as for a known user, so that a client
		// cannot tell which user names exist.
		if dummy := a.dummyHash(users, now); dummy != nil {
			_ = bcrypt.CompareHashAndPassword(dummy, []byte(pass))
		}
		return "", false
	}
	if !checkPassword(want, pass) {
		return "", false
	}
	a.mu.Lock()
	if len(a.ok) >= authCacheMax {
		clear(a.ok)
	}
	a.ok[key] = now
	a.mu.Unlock()
	return user, true
}

// dummyHash returns a bcrypt hash of the highest cost among users, or nil
// when none uses bcrypt.
func (a *authCache) dummyHash(users map[string]string, now time.Time) []byte {
	cost := 0
	for _, pw := range users {
		if c, err := bcrypt.Cost([]byte(pw)); err == nil && c > cost {
			cost = c
		}
	}
	if cost == 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dummyCost != cost {
		h, err := bcrypt.GenerateFromPassword([]byte(strconv.FormatInt(now.UnixNano(), 36)), cost)
		if err != nil {
			return nil
		}
		a.dummy, a.dummyCost = h, cost
	}
	return a.dummy
}

// checkPassword compares pass with a stored password in one of the forms
// ServerOptions.Users accepts.
func checkPassword(stored, pass string) bool {
	switch {
	case isBcrypt(stored):
		return bcrypt.CompareHashAndPassword([]byte(stored), []byte(pass)) == nil
	case strings.HasPrefix(stored, "{SHA}"):
		sum := sha1.Sum([]byte(pass))
		return subtle.ConstantTimeCompare([]byte(stored[5:]), []byte(base64.StdEncoding.EncodeToString(sum[:]))) == 1
	default:
		a, b := sha256.Sum256([]byte(stored)), sha256.Sum256([]byte(pass))
		return subtle.ConstantTimeCompare(a[:], b[:]) == 1
	}
}

func isBcrypt(s string) bool {
	return strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")
}

// ReadHtpasswd parses an htpasswd file: one "user:password" per line,
// where password is a bcrypt hash, "{SHA}" and a base64 SHA-1, or plain
// text. Blank lines and lines starting with # are skipped. Other hash
// schemes of Apache's htpasswd (MD5 "$apr1$", crypt) are refused, as are
// empty passwords, empty or duplicate user names and names containing "/".
func ReadHtpasswd(r io.Reader) (map[string]string, error) {
	users := make(map[string]string)
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		user, pass, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("htpasswd line %d: no colon between user and password", n)
		case user == "" || strings.ContainsAny(user, "/\x00"):
			return nil, fmt.Errorf("htpasswd line %d: invalid user name %q", n, user)
		case pass == "":
			return nil, fmt.Errorf("htpasswd line %d: empty password for %q", n, user)
		case strings.HasPrefix(pass, "$apr1$") || strings.HasPrefix(pass, "$1$") ||
			strings.HasPrefix(pass, "$5$") || strings.HasPrefix(pass, "$6$"):
			return nil, fmt.Errorf("htpasswd line %d: unsupported password hash for %q (use bcrypt: htpasswd -B)", n, user)
		case isBcrypt(pass):
			if _, err := bcrypt.Cost([]byte(pass)); err != nil {
				return nil, fmt.Errorf("htpasswd line %d: invalid bcrypt hash for %q: %w", n, user, err)
			}
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("htpasswd line %d: user %q listed twice", n, user)
		}
		users[user] = pass
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read htpasswd: %w", err)
	}
	return users, nil
}

// LoadHtpasswd reads the htpasswd file at path (see ReadHtpasswd). It
// refuses a file that holds no user, so a mistake cannot switch
// authentication off.
func LoadHtpasswd(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open htpasswd file: %w", err)
	}
	defer f.Close()
	users, err := ReadHtpasswd(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: htpasswd file lists no user", path)
	}
	return users, nil
}
