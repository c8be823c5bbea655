package sftp

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// pipeSize is the buffer asked for the pipes to and from ssh. With the
// default 64 KiB, ssh and dj wake each other for every 64 KiB, and a
// transfer costs several times the CPU of ssh's own encryption.
const pipeSize = 1 << 20

// growPipe enlarges the buffer of a pipe to ssh when the system allows
// (fs.pipe-max-size; a refusal leaves it as it was).
func growPipe(p any) {
	sc, ok := p.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize)
	})
}
