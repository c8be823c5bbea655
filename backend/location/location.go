// Package location turns a repository location string ("/srv/repo",
// "rest:http://host:8000/", "sftp:user@host:/srv/repo", ...) into an open,
// decorated backend. A Registry holds the schemes; each scheme parses its
// location strings and -o options into its own configuration and opens
// or creates a backend from it. The registry then adds what every
// backend of its kind gets: -o connections=N, the retry layer for remote
// backends, and the rate limits for backends that do not pace themselves.
package location

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"dj/backend"
	"dj/backend/connlimit"
	"dj/backend/limit"
	"dj/backend/retry"
)

// OptionConnections is the -o key that bounds concurrent requests on
// every backend.
const OptionConnections = "connections"

// Params is what opening a location takes besides the string itself.
type Params struct {
	// Options are the -o KEY=VALUE options.
	Options map[string]string
	// Rates are --limit-upload and --limit-download in bytes per second.
	Rates limit.Rates
	// Retry configures the retry layer of remote backends.
	Retry retry.Options
	// TLS, if not nil, is the TLS configuration of HTTPS clients (REST
	// servers): --cacert, --tls-client-cert, --insecure-tls.
	TLS *tls.Config
	// Stderr, if not nil, receives the messages of programs a backend
	// runs (ssh); nil keeps them for the backend's own error messages.
	Stderr io.Writer
}

// Option is a -o key that a scheme reads.
type Option struct {
	Key  string
	Help string
	// Check validates a value; nil accepts any.
	Check func(value string) error
}

// Scheme is one kind of location.
type Scheme struct {
	// Name is the prefix of its locations: "sftp" for "sftp:...".
	Name string
	// Usage shows the form of a location, for messages and help.
	Usage string
	// Remote backends get the retry layer, and the CLI gives them the
	// on-disk cache.
	Remote bool
	// PacesItself is set when the backend applies Params.Rates to its own
	// streams (an HTTP transport, the pipes to ssh); otherwise the
	// registry wraps it in a rate limiter.
	PacesItself bool
	// Options are the -o keys the scheme reads.
	Options []Option

	open func(ctx context.Context, loc string, p Params, create bool) (backend.Backend, error)
}

// Define completes s with a parser of its location strings and options
// into a configuration of type C, and the functions that open an existing
// repository and create a new one from it.
func Define[C any](s Scheme, parse func(loc string, p Params) (C, error),
	open, create func(ctx context.Context, cfg C) (backend.Backend, error)) Scheme {
	s.open = func(ctx context.Context, loc string, p Params, doCreate bool) (backend.Backend, error) {
		cfg, err := parse(loc, p)
		if err != nil {
			return nil, err
		}
		if doCreate {
			return create(ctx, cfg)
		}
		return open(ctx, cfg)
	}
	return s
}

// Registry maps location strings to schemes. It is not changed after New
// and is safe for concurrent use.
type Registry struct {
	schemes  map[string]Scheme
	order    []string
	fallback string
}

// New returns a registry of the schemes. A location without a known
// "name:" prefix and that does not look like one (a path) belongs to the
// scheme named fallback ("local").
func New(fallback string, schemes ...Scheme) (*Registry, error) {
	r := &Registry{schemes: make(map[string]Scheme), fallback: fallback}
	for _, s := range schemes {
		if s.Name == "" || s.open == nil {
			return nil, fmt.Errorf("location scheme %q is not defined with Define", s.Name)
		}
		if _, dup := r.schemes[s.Name]; dup {
			return nil, fmt.Errorf("location scheme %q registered twice", s.Name)
		}
		r.schemes[s.Name] = s
		r.order = append(r.order, s.Name)
	}
	if _, ok := r.schemes[fallback]; !ok {
		return nil, fmt.Errorf("fallback location scheme %q is not registered", fallback)
	}
	return r, nil
}

// Lookup returns the scheme of loc.
func (r *Registry) Lookup(loc string) (Scheme, error) {
	if i := strings.Index(loc, ":"); i > 0 {
		if s, ok := r.schemes[loc[:i]]; ok {
			return s, nil
		}
		if !strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, ".") {
			return Scheme{}, fmt.Errorf("repository type %q is not supported (use %s)", loc[:i], r.usages())
		}
	}
	return r.schemes[r.fallback], nil
}

// usages lists the forms of locations, for the error about an unknown one.
func (r *Registry) usages() string {
	var forms []string
	for _, name := range r.order {
		if u := r.schemes[name].Usage; u != "" {
			forms = append(forms, u)
		}
	}
	switch len(forms) {
	case 0:
		return "a known repository type"
	case 1:
		return forms[0]
	}
	return strings.Join(forms[:len(forms)-1], ", ") + " or " + forms[len(forms)-1]
}

// Options returns every -o key the registry knows, sorted: connections
// and the keys of every scheme.
func (r *Registry) Options() []Option {
	opts := []Option{{Key: OptionConnections, Help: "most requests to the repository at once, on every backend (default: unlimited)", Check: CheckPositiveInt}}
	for _, name := range r.order {
		opts = append(opts, r.schemes[name].Options...)
	}
	sort.Slice(opts, func(i, j int) bool { return opts[i].Key < opts[j].Key })
	return opts
}

// Open opens (or, with create, creates) the repository at loc and
// decorates it: at most -o connections requests at once, the retry layer
// for remote backends, and the rate limits for backends that do not pace
// themselves. It returns the scheme too, so that the caller can add what
// it adds to remote backends (the on-disk cache).
func (r *Registry) Open(ctx context.Context, loc string, p Params, create bool) (backend.Backend, Scheme, error) {
	s, err := r.Lookup(loc)
	if err != nil {
		return nil, Scheme{}, err
	}
	conns := 0
	if v := p.Options[OptionConnections]; v != "" {
		if err := CheckPositiveInt(v); err != nil {
			return nil, Scheme{}, fmt.Errorf("option %s: %w", OptionConnections, err)
		}
		conns, _ = strconv.Atoi(v)
	}
	be, err := s.open(ctx, loc, p, create)
	if err != nil {
		return nil, s, err
	}
	be = connlimit.Wrap(be, conns)
	if s.Remote {
		be = retry.Wrap(be, p.Retry)
	}
	if !s.PacesItself && p.Rates != (limit.Rates{}) {
		be = limit.Wrap(be, p.Rates)
	}
	return be, s, nil
}

// CheckPositiveInt accepts a whole number above zero.
func CheckPositiveInt(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a positive whole number, got %q", v)
	}
	return nil
}
