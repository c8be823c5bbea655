//go:build !linux

package fusefs

import (
	"context"
	"fmt"
)

// Mounted is a mounted file system.
type Mounted struct{}

// Mount fails: dj mount needs Linux.
func Mount(ctx context.Context, mountpoint string, repo Repository, opts Options) (*Mounted, error) {
	return nil, fmt.Errorf("%w: dj mount works on Linux only", ErrNoFUSE)
}

// Mountpoint returns the absolute path the file system is mounted on.
func (m *Mounted) Mountpoint() string { return "" }

// Wait blocks until the file system is unmounted.
func (m *Mounted) Wait() {}

// Unmount unmounts the file system.
func (m *Mounted) Unmount() error { return nil }
