// Package directio holds the small pieces of reading around the page cache
// that the local backend and the archiver share: buffers aligned for
// O_DIRECT, and asking the kernel (mincore) which pages of a file it has
// cached.
package directio

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Align is the buffer, offset and length alignment O_DIRECT needs (at most
// a page on the file systems dj meets).
const Align = 4096

// AlignedBuffer returns n bytes starting at an Align boundary, with no room
// beyond n.
func AlignedBuffer(n int) []byte {
	raw := make([]byte, n+Align)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % Align); r != 0 {
		shift = Align - r
	}
	return raw[shift : shift+n : shift+n]
}

// IsAligned reports whether buf starts at an Align boundary and has room
// for n bytes.
func IsAligned(buf []byte, n int64) bool {
	return int64(cap(buf)) >= n && uintptr(unsafe.Pointer(unsafe.SliceData(buf)))%Align == 0
}

// Resident reports, for each page of the mapped memory mem, whether it is
// in the page cache: vec[i]&1 for page i. vec must hold a byte per page.
func Resident(mem, vec []byte) error {
	if len(mem) == 0 {
		return nil
	}
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// ResidentFraction estimates how much of a file is in the page cache from
// samples windows of window bytes spread over it. Errors count as not
// cached.
func ResidentFraction(f *os.File, size int64, samples, window int64) float64 {
	pageSize := int64(os.Getpagesize())
	var resident, total int
	vec := make([]byte, window/pageSize+1)
	for i := int64(0); i < samples; i++ {
		off := size / samples * i
		off -= off % window // page aligned
		n := min(window, size-off)
		if n <= 0 {
			continue
		}
		m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return 0
		}
		pages := int((n + pageSize - 1) / pageSize)
		err = Resident(m, vec)
		_ = unix.Munmap(m)
		if err != nil {
			return 0
		}
		for _, v := range vec[:pages] {
			resident += int(v & 1)
		}
		total += pages
	}
	if total == 0 {
		return 0
	}
	return float64(resident) / float64(total)
}

// SetDirect switches O_DIRECT on or off for an open file; it reports
// whether the file system accepted the change.
func SetDirect(f *os.File, on bool) bool {
	fd := uintptr(f.Fd())
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return false
	}
	if on {
		flags |= unix.O_DIRECT
	} else {
		flags &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(fd, unix.F_SETFL, flags)
	return err == nil
}
