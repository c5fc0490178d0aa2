#!/bin/sh
# Regenerates proto/hastorepb from proto/hastore.proto (called by `make proto`).
#
# The plugin versions are pinned so that regenerating on any machine gives
# byte-identical code; protoc-gen-go must match google.golang.org/protobuf
# in go.mod. The plugins are installed into a versioned cache directory, so
# the first run needs the Go module proxy and later runs need nothing.
# protoc itself comes from the OS (Debian: apt-get install protobuf-compiler);
# its version is only recorded in a comment of the generated files.
set -eu

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
PROTOC_WANT="libprotoc 3.21.12"

cd "$(dirname "$0")"

if ! command -v protoc >/dev/null 2>&1; then
	echo "gen.sh: protoc not found; install it (apt-get install -y protobuf-compiler)" >&2
	exit 1
fi
if [ "$(protoc --version)" != "$PROTOC_WANT" ]; then
	echo "gen.sh: warning: $(protoc --version), the checked-in code was made with $PROTOC_WANT" >&2
fi

bin="${XDG_CACHE_HOME:-$HOME/.cache}/hastore-tools/protoc-gen-go-$PROTOC_GEN_GO_VERSION-grpc-$PROTOC_GEN_GO_GRPC_VERSION"
if [ ! -x "$bin/protoc-gen-go" ] || [ ! -x "$bin/protoc-gen-go-grpc" ]; then
	mkdir -p "$bin"
	# Outside the module so that go.mod is neither read nor changed.
	(cd / && GOFLAGS= GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION")
	(cd / && GOFLAGS= GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION")
fi

PATH="$bin:$PATH" protoc -I . \
	--go_out=hastorepb --go_opt=paths=source_relative \
	--go-grpc_out=hastorepb --go-grpc_opt=paths=source_relative \
	hastore.proto
