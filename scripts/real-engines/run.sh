#!/usr/bin/env bash
# Runs the real-engine checks in the chroot that make-chroot.sh built, against a live sidecar
# started here from this checkout (npm run build first). Prints the CHECK lines.
#   run.sh CHROOT
set -euo pipefail
CHROOT=$1
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OPT=$CHROOT/opt/real-engines
rm -rf "$OPT/shim" "$OPT/checks" && mkdir -p "$OPT/shim" "$OPT/checks" "$OPT/tmp"
cp -r "$REPO/python/src/sam_sidecar" "$OPT/shim/"
cp "$HERE"/*.py "$OPT/checks/"
SOCKET=$OPT/tmp/sidecar.sock
SAM_SIDECAR_SOCKET=$SOCKET SAM_SIDECAR_HTTP_PORT=0 SAM_SIDECAR_LOG_LEVEL=warn node "$REPO/dist/cli.js" serve >"$OPT/tmp/sidecar.log" 2>&1 &
SIDECAR=$!
trap 'kill $SIDECAR 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S "$SOCKET" ] && break; sleep 0.1; done
check() {  # SOURCES CHECK [ENV=VALUE...]: SOURCES is "vllm" or "vllm-ascend"
  local sources=/opt/real-engines/vllm:/opt/real-engines/site-vllm script=$2
  [ "$1" = vllm ] || sources=$sources:/opt/real-engines/ascend:/opt/real-engines/$1
  shift 2
  env "$@" PYTHONPATH="$sources:/opt/real-engines/stubs:/opt/real-engines/shim:/opt/real-engines/checks" \
    USE_LIBUV=0 TORCHDYNAMO_DISABLE=1 SAM_SIDECAR_SOCKET=/opt/real-engines/tmp/sidecar.sock SAM_SIDECAR_DEADLINE_MS=500 \
    chroot "$CHROOT" python3 "/opt/real-engines/checks/$script" 2>&1 | grep -E "^CHECK|sam-sidecar|sam drafter|Error" || true
}
echo "== vLLM row"; check vllm check_vllm.py
echo "== vLLM-Ascend row"; check site-ascend check_ascend.py
echo "== SAM_SIDECAR_DISABLE=1"; check site-ascend check_switches.py SAM_SIDECAR_DISABLE=1
echo "== a vLLM-Ascend outside the matrix"; check site-ascend-unsupported check_switches.py
