# hastore — see README.md. `make run` starts a local cluster, `make test` passes the tests.
GO        ?= go
BIN       := bin/hastore
STATICCHECK_VERSION := v0.8.2
GOBIN     := $(shell $(GO) env GOPATH)/bin
export GOFLAGS := -mod=mod

.PHONY: all build test lint vet unit deps bench bench-scale soak run proto clean fuzz chaos chaos-short damage

all: build

build:
	$(GO) build -o $(BIN) ./cmd/hastore

# The test command the README gives; CI (.ci/run) runs exactly this.
test: deps lint unit chaos-short

# System packages the end-to-end tests drive (real clients, real peers).
# Idempotent: installs only what is missing.
deps:
	@bash testing/deps.sh test

vet:
	$(GO) vet ./...

lint: vet
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN)/staticcheck ./...

unit: build
	$(GO) test -race -timeout 20m ./...

# Bytes flipped in the metadata tables of a running node, repeated: the
# test is part of `unit`; this runs it alone DAMAGE_COUNT times, to measure
# how often a run fails (docs/storage.md "Damaged files" has the figures).
DAMAGE_COUNT ?= 30
damage:
	$(GO) test -race -count=$(DAMAGE_COUNT) -run '^TestFSMDamagedWhileRunning$$' ./replica/meta/

# Short fuzzing of what faces untrusted bytes: the decoders, and the SMTP,
# LMTP, IMAP and HTTP frontends driven with raw client input. Each target
# runs FUZZTIME (default 30s), one after the other; a failing input is saved
# under the package's testdata/fuzz/ and replays in `make test`. Minimizing
# each new interesting input is capped at FUZZMINIMIZE, or a short run
# spends most of its time there. HASTORE_FUZZ_FINDINGS=file collects what the
# frontend targets tolerate but report (SERVERBUG answers, bare CRs).
FUZZTIME ?= 30s
FUZZMINIMIZE ?= 5s
FUZZ_TARGETS := storage:FuzzParseShard replica/meta:FuzzDecodeCommand \
	mailserver/mailbox:FuzzParseInfo webfs/httpserve:FuzzDecodePath \
	webfs/httpserve:FuzzHTTPRequest mailserver/smtp:FuzzSMTPSession \
	mailserver/imap:FuzzIMAPCommand
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $${t#*:} ($${t%%:*}, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./$${t%%:*}/; \
	done

# Benchmarks: printed tables, never pass/fail. See docs/ for how to read them.
bench: build
	@bash testing/deps.sh bench
	$(GO) run ./testing/storagebench
	$(GO) test -run '^$$' -bench . -benchtime 2s ./storage/
	$(GO) run ./testing/clusterbench
	$(GO) run ./testing/mailbench
	$(GO) run ./testing/imapbench -bin $(BIN)
	$(GO) run ./testing/fusebench
	$(GO) run ./testing/webbench
	$(GO) run ./testing/idlebench -bin $(BIN) $(SCALE_ARGS)

# Availability at hosting scale on its own: 9,000 IMAPS IDLE clients on a
# 3-node cluster, steady deliveries, then the busiest node SIGKILLed
# (SCALE_ARGS="... -cpu-hog 14" adds load average). See docs/availability.md.
SCALE_ARGS ?= -users 900 -devices 10 -kill
bench-scale: build
	$(GO) run ./testing/idlebench -bin $(BIN) $(SCALE_ARGS)

# Measurements kept out of `make test` (each test skips unless its variable
# is set): a 4-minute Raft soak under load counting leader changes, five
# SIGKILLs of the leader timing its replacement, and the RSS of 2,000 idle
# IMAP connections.
soak: build
	HASTORE_RAFT_SOAK=4m HASTORE_RAFT_KILL=5 $(GO) test -count=1 -timeout 30m -run 'TestLeaderStabilityUnderLoad|TestKilledLeaderReplacedProcesses' -v ./replica/
	HASTORE_IMAP_MEM_CONNS=2000 $(GO) test -count=1 -timeout 30m -run 'TestIdleMemory' -v ./mailserver/imap/

run: build
	./$(BIN) dev

# Chaos run: faults under mail, web and FUSE load, then verification
# (CHAOS_DURATION, default 5m; CHAOS_SEED replays a schedule). See docs/availability.md.
chaos:
	$(GO) run ./testing/chaos $(if $(CHAOS_SEED),-seed $(CHAOS_SEED))

# The 60-second chaos run of `make test`, on its own after the other tests
# (it wants the CPUs), with a fixed seed whose schedule holds seven kinds of
# fault: kill-leader, replace, disk-full, corrupt, split, partition, slow.
CHAOS_SHORT_SEED ?= 2
chaos-short:
	HASTORE_CHAOS=1 CHAOS_SEED=$(CHAOS_SHORT_SEED) $(GO) test -count=1 -timeout 15m -run 'TestChaos60s$$' -v ./testing/chaos/

proto:
	bash proto/gen.sh

clean:
	rm -rf bin
