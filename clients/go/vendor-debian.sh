#!/usr/bin/env bash
# Offline dependencies: makes vendor/ a tree of symbolic links to the Go sources that Debian's packages
# install under /usr/share/gocode/src (one per module required in go.mod), with the vendor/modules.txt
# that `go build -mod=vendor` reads. No network and no module cache are involved.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
gocode=${GOCODE:-/usr/share/gocode/src}

# "path version" of every module go.mod requires (both the one-line and the block form).
requirements() {
  awk '$1 == "require" && $2 != "(" { print $2, $3 }
       $1 == "require" && $2 == "(" { block = 1; next }
       block && $1 == ")" { block = 0 }
       block && NF >= 2 && $1 !~ /^\/\// { print $1, $2 }' "$here/go.mod"
}

# The import paths of the packages of module $2 in directory $1: no tests, no nested modules.
packages() {
  local dir=$1 module=$2
  find "$dir" \( -name testdata -o -name vendor -o -name debian -o -name '.*' \) -prune -o \
       -type d -exec test -f '{}/go.mod' -a '{}' != "$dir" \; -prune -o \
       -type f -name '*.go' ! -name '*_test.go' -printf '%h\n' |
    sort -u | sed "s|^$dir|$module|"
}

missing=0
while read -r module _; do
  if [ ! -f "$gocode/$module/go.mod" ]; then
    echo "vendor-debian.sh: $module is not under $gocode" >&2
    missing=1
  fi
done < <(requirements)
if [ "$missing" -ne 0 ]; then
  echo "vendor-debian.sh: apt-get install golang-google-grpc-dev golang-google-protobuf-dev" \
       "golang-github-golang-protobuf-1-5-dev (see README.md)" >&2
  exit 1
fi

vendor=$here/vendor
rm -rf "$vendor"
mkdir -p "$vendor"
count=0
while read -r module version; do
  dir=$gocode/$module
  go_version=$(awk '$1 == "go" { print $2; exit }' "$dir/go.mod")
  {
    echo "# $module $version"
    echo "## explicit${go_version:+; go $go_version}"
    packages "$dir" "$module"
  } >>"$vendor/modules.txt"
  mkdir -p "$vendor/$(dirname "$module")"
  ln -s "$dir" "$vendor/$module"
  count=$((count + 1))
done < <(requirements)
echo "vendor/: $count modules linked from $gocode"
