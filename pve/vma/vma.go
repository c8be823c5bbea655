// Package vma reads and writes Proxmox VE's Virtual Machine Archive format
// (VMA), the stream `vzdump --stdout` writes for a QEMU guest: a header
// with the guest's configuration files and the list of its disks, then the
// disks' contents in extents of up to 59 clusters of 64 KiB each, in any
// order and interleaved between disks.
//
// The format, from PVE's vma_spec.txt: every number is big-endian except
// the 2-byte length in front of each blob of the header's blob buffer,
// which is little-endian (as PVE's writer and reader have it). The header
// and every extent header carry the archive's UUID and an MD5 sum of the
// header with the sum's field zeroed. A cluster is 16 blocks of 4 KiB; an
// extent's block info says, per cluster, which blocks follow (a mask bit
// per block) and which are zero (not stored). A cluster whose mask is zero
// is all zeros.
//
// Reader checks every length before it allocates, every checksum and UUID,
// and that each cluster lies inside its disk and comes once; Writer makes
// a stream that Reader, and PVE's own vma tool, accept.
package vma

import (
	"errors"
	"fmt"
)

// Sizes of the format.
const (
	// BlockSize is the unit a cluster's mask counts in.
	BlockSize = 4096
	// ClusterSize is the unit of a disk's content in the stream.
	ClusterSize = 16 * BlockSize
	// ClustersPerExtent is the most clusters one extent holds.
	ClustersPerExtent = 59
	// MaxConfigs is the most configuration files an archive holds.
	MaxConfigs = 256
	// MaxDevices is the most disks an archive holds (ids 1 to 255).
	MaxDevices = 255

	extentHeaderSize = 512
	headerFixedSize  = 12288           // up to the blob buffer
	maxHeaderSize    = 4 << 20         // far above what vzdump writes
	maxDeviceSize    = uint64(1) << 50 // 1 PiB; cluster numbers are 32 bits
)

var (
	headerMagic = [4]byte{'V', 'M', 'A', 0}
	extentMagic = [4]byte{'V', 'M', 'A', 'E'}
)

// ErrFormat is wrapped by every error about a stream that is not valid VMA.
var ErrFormat = errors.New("not a valid VMA stream")

func formatError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// Header is what an archive says before its disks' contents.
type Header struct {
	// UUID marks the archive; every extent repeats it.
	UUID [16]byte
	// CTime is the backup's time, in seconds since 1970.
	CTime int64
	// Configs are the guest's configuration files, such as
	// qemu-server.conf, in the order they are stored.
	Configs []Config
	// Devices are the disks, by id.
	Devices []Device
}

// Config is one configuration file of an archive.
type Config struct {
	Name string
	Data []byte
}

// Device is one disk of an archive.
type Device struct {
	// ID is the disk's number in the stream, 1 to 255.
	ID uint8
	// Name is the disk's name, such as "drive-scsi0"; "vmstate" holds the
	// guest's memory.
	Name string
	// Size is the disk's length in bytes.
	Size uint64
}

// Clusters returns the number of clusters of a disk of the device's size.
func (d Device) Clusters() uint64 { return (d.Size + ClusterSize - 1) / ClusterSize }

// Magic reports whether b starts like a VMA stream (for recognising one
// on stdin).
func Magic(b []byte) bool {
	return len(b) >= 8 && [4]byte(b[:4]) == headerMagic && b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 1
}
