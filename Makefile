# dj — build, demo, test, bench. Every target works on a fresh Debian machine
# as root (the test and bench targets install what they need with apt-get).

GO        ?= go
BIN       := bin/dj
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# Packages the tests need: FUSE, rsync/attr/acl for the round-trip checks,
# restic (0.14 on Debian 12) for the agreement tests, OpenSSH's server and
# client for the SFTP tests, rclone for its backend, and e2fsprogs and fdisk
# (mkfs.ext4, sfdisk) for the disk images of the VM tests, and gcc with
# libc6-dev so that the tests build dj with zstd's C library (cgo) as
# `make build` does.
TEST_DEBS := fuse3 rsync attr acl restic openssh-server openssh-client rclone e2fsprogs fdisk gcc libc6-dev
TEST_CMDS := fusermount3 rsync getfattr setfacl restic sshd ssh ssh-keygen rclone mkfs.ext4 sfdisk gcc
BENCH_DEBS := restic time fio
DEMO      := demo
# With a C compiler that links statically, dj compresses with zstd's C
# library (repo/zstd_cgo.go: a third less CPU in a backup's largest stage)
# and is still one static binary that runs on any Linux; without one it
# builds in pure Go (klauspost/compress's encoder, repo/zstd_nocgo.go).
CGO       := $(shell printf 'int main(void){return 0;}\n' | $${CC:-gcc} -x c -static -o /dev/null - >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(CGO),1)
BUILD_TAGS    := -tags osusergo,netgo
STATIC_LDFLAGS := -linkmode external -extldflags -static
endif

.PHONY: all build install demo test test-deps unit integration bench bench-deps vet race-battery stress reliability-short clean

all: build

build:
	CGO_ENABLED=$(CGO) $(GO) build -trimpath $(BUILD_TAGS) -ldflags '$(LDFLAGS) $(STATIC_LDFLAGS)' -o $(BIN) ./cmd/dj

install: build
	install -m 0755 $(BIN) $${PREFIX:-/usr/local}/bin/dj

# The main job on an embedded default: a local repository under ./demo, a
# backup of a real directory (this checkout's source), the snapshot list, a
# restore, and a browse through the FUSE mount.
demo: build
	@DJ=$(BIN) DEMO=$(DEMO) ./scripts/demo.sh

# Install missing system packages (only what is missing; needs root).
test-deps:
	@missing=0; for c in $(TEST_CMDS); do command -v $$c >/dev/null 2>&1 || PATH=$$PATH:/usr/sbin command -v $$c >/dev/null 2>&1 || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_DEBS) >/dev/null; \
	  else echo "missing test tools; run as root or install: $(TEST_DEBS)" >&2; exit 1; fi; \
	fi
	@[ -e /dev/fuse ] || echo "warning: /dev/fuse is missing; mount tests will fail" >&2

vet:
	$(GO) vet ./...

# Every test: unit tests (with the race detector on the concurrent
# packages), then the end-to-end tests of the built binary.
test: test-deps vet
	# The test servers built from source (versitygw for S3, restic's
	# rest-server) are built once here, with time to spare, and cached.
	$(GO) test -count=1 -timeout 30m -run 'TestS3Server' ./internal/testserver/
	# The end-to-end tests with their battery take about 18 minutes here.
	$(GO) test -count=1 -timeout 28m ./...
	$(GO) test -count=1 -race ./cache/... ./fusefs/... ./repo/... ./backend/... ./maint/...
	# The pure-Go build (no C compiler): its encoder and the repository.
	CGO_ENABLED=0 $(GO) test -count=1 ./repo/

# The reliability battery at full length (issue 12): every TestBattery*
# test with DJ_STRESS=1 (200 kills per command and backend, 50 power cuts,
# ...), then the short battery again with dj built with the race detector
# (DJ_TEST_RACE=1; too slow for make test: the kills alone take minutes),
# then every fuzz target for FUZZTIME each; the counts go to
# integration/bench/RELIABILITY.md. Hours, not minutes.
RELIABILITY_DIR ?= $(CURDIR)/integration/bench/reliability/latest
FUZZTIME ?= 10m
stress: test-deps
	$(MAKE) build
	rm -rf $(RELIABILITY_DIR) && mkdir -p $(RELIABILITY_DIR)
	DJ_STRESS=1 DJ_RELIABILITY_DIR=$(RELIABILITY_DIR) $(GO) test -count=1 -timeout 24h -run 'TestBattery' ./...
	$(MAKE) race-battery
	FUZZTIME=$(FUZZTIME) DJ_RELIABILITY_DIR=$(RELIABILITY_DIR) ./scripts/fuzz.sh
	./scripts/reliability-report.sh $(RELIABILITY_DIR)

# The short battery with dj and the tests built with the race detector.
race-battery: test-deps
	DJ_TEST_RACE=1 $(GO) test -race -count=1 -timeout 4h -run 'TestBattery' ./integration/

# The battery in its short form (as in make test), recording its counts:
# minutes instead of hours, for a RELIABILITY.md between stress runs.
reliability-short: test-deps
	$(MAKE) build
	rm -rf $(RELIABILITY_DIR) && mkdir -p $(RELIABILITY_DIR)
	DJ_RELIABILITY_DIR=$(RELIABILITY_DIR) $(GO) test -count=1 -timeout 2h -run 'TestBattery' ./...
	FUZZTIME=1m DJ_RELIABILITY_DIR=$(RELIABILITY_DIR) ./scripts/fuzz.sh
	FORM="the short battery, \`make reliability-short\` (fuzzing 1 minute a target)" ./scripts/reliability-report.sh $(RELIABILITY_DIR)

bench-deps: test-deps
	@command -v restic >/dev/null 2>&1 && command -v fio >/dev/null 2>&1 && [ -x /usr/bin/time ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS) >/dev/null; }

# (build after the packages: make decides on cgo when it reads this file,
# so a machine that just got gcc builds again.)
bench: bench-deps
	$(MAKE) build
	./integration/bench/run.sh

clean:
	rm -rf bin $(DEMO)
