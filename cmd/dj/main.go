// Command dj is a deduplicating, encrypted, compressed backup tool whose
// repositories can be mounted as read-only file systems.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"dj/internal/hugeheap"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit codes, kept equal to restic's so scripts carry over.
const (
	exitOK           = 0
	exitError        = 1
	exitIncomplete   = 3
	exitNoRepository = 10
	exitLocked       = 11
	exitWrongPass    = 12
	exitInterrupted  = 130
)

// Exit codes of dj's own, for failures to reach or use a remote
// repository that restic reports as 1. Each says what to fix.
const (
	exitUnreachable = 20 // the server did not answer: host, port, network, or the server is down
	exitAuth        = 21 // the server refused the credentials: user, password, key or secret
	exitHostKey     = 22 // the SSH host key differs from known_hosts
	exitDenied      = 23 // the server refused the request: permissions, policy, append-only
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run executes the CLI and returns the exit code; no panic escapes it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	// -v is --verbose, as in restic; --version keeps its long name only.
	// (Set here rather than in main so that tests of run see the same CLI.)
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version"}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, abort := withAbort(ctx)
	defer abort(nil)
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "dj: internal error: %v (please report this)\n", r)
			code = exitError
		}
	}()
	if c := addressSpaceCap(); c > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(c)
	}
	if f := os.Getenv("DJ_CPUPROFILE"); f != "" {
		stopProfile := startCPUProfile(f, stderr)
		defer stopProfile()
	}
	if f := os.Getenv("DJ_TRACE"); f != "" {
		if out, err := os.Create(f); err == nil {
			_ = trace.Start(out)
			defer func() { trace.Stop(); out.Close() }()
		}
	}
	if f := os.Getenv("DJ_HEAPPROFILE"); f != "" {
		defer func() {
			if out, err := os.Create(f); err == nil {
				_ = pprof.Lookup("heap").WriteTo(out, 0)
				out.Close()
			}
		}()
	}
	app := newApp(stdin, stdout, stderr)
	if n := len(args); n > 1 && args[n-1] == completionFlag {
		// The shell asks for completions: answer from the command tree,
		// never run a command, never print an error.
		complete(app, args[1:n-1], stdout)
		return exitOK
	}
	guardUsage(app, args)
	if flag, path := danglingValueFlag(app, args); flag != "" {
		fmt.Fprintf(stderr, "dj: flag %s needs a value (see dj %s --help)\n", flag, path)
		return exitError
	}
	err := app.RunContext(ctx, interspersed(app, args))
	if err == nil {
		return exitOK
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) && err.Error() == "" {
		return ec.ExitCode()
	}
	if cause := abortCause(ctx); cause != nil && errors.Is(err, context.Canceled) {
		err = cause // the command was stopped: its lock was lost
	} else if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "dj: interrupted")
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "dj: %s\n", withRemoteHint(err, oneLine(err)))
	return exitCode(err)
}

// startCPUProfile writes a CPU profile to file until the returned function
// is called (DJ_CPUPROFILE, for developers; DJ_HEAPPROFILE and DJ_TRACE
// write a heap profile at exit and an execution trace).
func startCPUProfile(file string, stderr io.Writer) func() {
	f, err := os.Create(file)
	if err != nil {
		fmt.Fprintf(stderr, "dj: cpu profile: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(stderr, "dj: cpu profile: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// ioThreads raises GOMAXPROCS by n above the cores and returns the cores,
// for commands whose n reader goroutines feed CPU-bound workers (one per
// core). With only as many Ps as cores, a reader whose disk read has
// completed waits for a worker to be preempted (up to 10 ms) before it can
// issue the next read, and the disk idles: `check --read-data` runs 14%
// faster with its two readers on Ps of their own. A backup takes one more
// P: a thread blocked in a pack's fsync or a file's O_DIRECT read keeps
// its P until the runtime takes it back, and meanwhile a core idles with
// blob workers waiting to run (0.44 P-seconds of a 1.25 s backup of 512
// MiB in an execution trace; the bench corpus backs up about 5% faster).
// GOMAXPROCS in the environment wins.
func ioThreads(n int) (cores int) {
	cores = runtime.GOMAXPROCS(0)
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(cores + n)
	}
	return cores
}

// setMemoryLimit sets the Go runtime's soft memory limit to what the
// process holds now (the repository's index, once loaded) plus work, what the command itself needs (packs being filled and
// chunks in flight for a backup; the cache and the loads in flight for a
// mount), so garbage does not double the footprint. Call it once the index
// is loaded: a fixed limit below the live heap makes the collector run
// without pause (a mount of a repository with a 30 MiB index and a 64 MiB
// cache under a 96 MiB limit read 3x slower). GOMEMLIMIT in the environment
// wins.
func setMemoryLimit(work int64) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	// The heap's objects, live or not yet collected: no collection is
	// forced (it cost an unchanged backup tens of milliseconds), and the
	// garbage of loading the index only raises the limit a little.
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	var heap int64
	if s[0].Value.Kind() == metrics.KindUint64 {
		heap = int64(s[0].Value.Uint64())
	}
	limit := heap + work
	if c := addressSpaceCap(); c > 0 && c < limit {
		limit = c
	}
	debug.SetMemoryLimit(limit)
}

// hugeHeap backs the heap with transparent huge pages, for the commands
// that stream data through fresh buffers (mount, restore): this project's
// machines fault a 4 KiB page in tens of microseconds, and a cold read
// through the mount spent a sixth of its CPU on the faults of its cache's
// buffers. Address space for reserve bytes (at most maxHugeReserve, and
// a quarter of an address-space limit) is marked before first use, and
// the heap's later growth every hugeAdviseInterval. Paired runs on
// 2026-12-06 (cold page cache): through a mount with the default cache,
// cat of a 1 GiB file 523 -> 582 MB/s and CPU 2.74 -> 2.44 s, tar of the
// Go tree 3.86 -> 3.22 s and CPU 4.08 -> 3.16 s, peak RSS 275 -> 295 MiB;
// see restoreHeap for restore. Backup does not do it (-5% time, +10% peak
// RSS, and its peak RSS is what the bench holds against restic's).
func hugeHeap(ctx context.Context, reserve int64) {
	n := min(reserve, maxHugeReserve)
	if c := addressSpaceCap(); c > 0 {
		n = min(n, c/4)
	}
	hugeheap.Reserve(int(n))
	hugeheap.Keep(ctx, hugeAdviseInterval)
}

// Limits of hugeHeap.
const (
	maxHugeReserve     = 1 << 30
	hugeAdviseInterval = time.Second
)

// addressSpaceCap returns three quarters of the process's address-space
// limit (ulimit -v), or 0 when it has none. dj starts with it as its soft
// memory limit: under a limit, the collector works harder as the heap
// nears it, instead of letting garbage grow the heap into an out-of-memory
// crash (a copy of a directory of a million entries crashed under a 2 GiB
// limit; its live heap was smaller).
func addressSpaceCap() int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &rl); err != nil || rl.Cur > math.MaxInt64 {
		return 0
	}
	return int64(rl.Cur / 4 * 3)
}
