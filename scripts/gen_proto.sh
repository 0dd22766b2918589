#!/usr/bin/env bash
# Regenerate the committed gRPC code from proto/externalscaler.proto.
# With --check, fail if the committed code differs from what regeneration gives.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=src/helios_scaler/_proto
target=$out
if [[ "${1:-}" == "--check" ]]; then target=$(mktemp -d); fi
"$PY" -m grpc_tools.protoc -Iproto --python_out="$target" --pyi_out="$target" --grpc_python_out="$target" proto/externalscaler.proto
# grpc_tools emits an absolute import; make it package-relative.
sed -i 's/^import externalscaler_pb2 as externalscaler__pb2/from . import externalscaler_pb2 as externalscaler__pb2/' "$target/externalscaler_pb2_grpc.py"
if [[ "${1:-}" == "--check" ]]; then
  for f in externalscaler_pb2.py externalscaler_pb2.pyi externalscaler_pb2_grpc.py; do
    if ! diff -q "$target/$f" "$out/$f" >/dev/null; then
      echo "generated code is stale: $out/$f differs from proto/externalscaler.proto; run scripts/gen_proto.sh" >&2
      exit 1
    fi
  done
  echo "generated gRPC code is up to date"
fi
