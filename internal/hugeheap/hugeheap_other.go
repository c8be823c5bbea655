//go:build !linux

package hugeheap

// Advise does nothing where the kernel has no transparent huge pages.
func Advise() (int64, error) { return 0, nil }
