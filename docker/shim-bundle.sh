#!/bin/sh
# Builds a PYTHONPATH-ready bundle of the Python shim: the package plus a dist-info with the
# vllm.general_plugins entry point, which importlib.metadata finds on sys.path without pip.
#   sh docker/shim-bundle.sh PYTHON_DIR OUT_DIR
set -eu
src=${1:?python dir}
out=${2:?output dir}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$src/pyproject.toml" | head -n 1)
mkdir -p "$out"
cp -R "$src/src/sam_sidecar" "$out/"
find "$out" -name '__pycache__' -type d -prune -exec rm -rf {} +
info="$out/sam_sidecar-$version.dist-info"
mkdir -p "$info"
printf 'Metadata-Version: 2.1\nName: sam-sidecar\nVersion: %s\n' "$version" > "$info/METADATA"
printf '[vllm.general_plugins]\nsam = sam_sidecar.plugin:register\n' > "$info/entry_points.txt"
printf 'sam_sidecar\n' > "$info/top_level.txt"
