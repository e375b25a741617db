#!/usr/bin/env bash
# Generates the Go stubs of protos/lmrec/v1/*.proto into lmrecv1/ (git-ignored), so the client always
# speaks the contract checked into this repository. The M options repeat the protos' go_package, so
# the stubs land in this module's lmrecv1 package whatever the protos say.
#
# protoc: $PROTOC if set, else `protoc` on PATH, else grpcio-tools' bundled protoc from the repository's
# .venv. Plugins from PATH: protoc-gen-go and protoc-gen-go-grpc (Debian: protoc-gen-go, protoc-gen-go-grpc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto_root=$(cd "$here/../../protos" && pwd)
module=$(sed -n 's/^module[[:space:]]\{1,\}//p' "$here/go.mod")
package=$module/lmrecv1

if [ -n "${PROTOC:-}" ]; then
  read -r -a protoc <<<"$PROTOC"
elif command -v protoc >/dev/null 2>&1; then
  protoc=(protoc)
elif [ -x "$here/../../.venv/bin/python" ]; then
  protoc=("$here/../../.venv/bin/python" -m grpc_tools.protoc)  # adds the well-known types' include dir
else
  echo "generate.sh: no protoc (apt-get install protobuf-compiler, or make install for grpcio-tools)" >&2
  exit 1
fi
for plugin in protoc-gen-go protoc-gen-go-grpc; do
  command -v "$plugin" >/dev/null 2>&1 || { echo "generate.sh: $plugin not on PATH (apt-get install $plugin)" >&2; exit 1; }
done

files=()
mappings=()
for path in "$proto_root"/lmrec/v1/*.proto; do
  file=lmrec/v1/$(basename "$path")
  files+=("$file")
  mappings+=("--go_opt=M$file=$package" "--go-grpc_opt=M$file=$package")
done

rm -rf "$here/lmrecv1"
cd "$proto_root"
"${protoc[@]}" -I . \
  --go_out="$here" --go_opt=module="$module" \
  --go-grpc_out="$here" --go-grpc_opt=module="$module" \
  "${mappings[@]}" "${files[@]}"
echo "generated $(ls "$here/lmrecv1" | wc -l) files in clients/go/lmrecv1 from ${#files[@]} protos"
