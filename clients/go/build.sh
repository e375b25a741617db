#!/usr/bin/env bash
# Builds the lmrec Go client offline from Debian's packages: stubs from protos/ (generate.sh), vendor/
# from /usr/share/gocode (vendor-debian.sh), then go vet, go test and go build.
# Usage: clients/go/build.sh [OUTPUT]   (default: clients/go/bin/lmrec-go)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:-$here/bin/lmrec-go}")
export GOPROXY=off GOFLAGS=-mod=vendor GOTOOLCHAIN=local

"$here/generate.sh"
"$here/vendor-debian.sh"
cd "$here"
go vet ./...
go test ./...
go build -o "$out" ./cmd/lmrec-go
echo "built $out"
