//go:build !linux

package crypto

// prepareKDFMemory: see kdfmem_linux.go; elsewhere nothing is done.
func prepareKDFMemory(int) {}

// releaseKDFMemory: see kdfmem_linux.go; elsewhere nothing is done.
func releaseKDFMemory(int) {}
