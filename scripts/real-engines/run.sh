#!/usr/bin/env bash
# Runs the real-engine checks in the chroot that make-chroot.sh built, against a live sidecar
# started here from this checkout (npm run build first). Prints the CHECK lines.
#   run.sh CHROOT [NAME [ROWS]]   (NAME as given to make-chroot.sh; ROWS: "all"; "ascend" where
#   the vLLM under that vLLM-Ascend is not itself a supported vLLM row; "vllm" for a vLLM row alone,
#   with the switches checked on vLLM)
set -euo pipefail
CHROOT=$1 NAME=${2:-real-engines} ROWS=${3:-all}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OPT=$CHROOT/opt/$NAME
rm -rf "$OPT/shim" "$OPT/checks" && mkdir -p "$OPT/shim" "$OPT/checks" "$OPT/tmp"
cp -r "$REPO/python/src/sam_sidecar" "$OPT/shim/"
cp "$HERE"/*.py "$OPT/checks/"
SOCKET=$OPT/tmp/sidecar.sock
SAM_SIDECAR_SOCKET=$SOCKET SAM_SIDECAR_HTTP_PORT=0 SAM_SIDECAR_LOG_LEVEL=warn node "$REPO/dist/cli.js" serve >"$OPT/tmp/sidecar.log" 2>&1 &
SIDECAR=$!
MOUNTED_PROC=
# vLLM reads /proc (memory, CPU information) while it builds its config.
if [ ! -r "$CHROOT/proc/meminfo" ]; then mount -t proc proc "$CHROOT/proc" && MOUNTED_PROC=1; fi
trap 'kill $SIDECAR 2>/dev/null || true; [ -z "$MOUNTED_PROC" ] || umount "$CHROOT/proc"' EXIT
for _ in $(seq 1 100); do [ -S "$SOCKET" ] && break; sleep 0.1; done
check() {  # SITE CHECK [ENV=VALUE...]: SITE is vLLM's metadata folder (site-vllm*) or vLLM-Ascend's (site-ascend*)
  local sources=/opt/$NAME/vllm:/opt/$NAME/site-vllm script=$2
  case $1 in
    site-vllm*) sources=/opt/$NAME/vllm:/opt/$NAME/$1 ;;
    *) sources=$sources:/opt/$NAME/ascend:/opt/$NAME/$1 ;;
  esac
  shift 2
  env "$@" PYTHONPATH="$sources:/opt/$NAME/deps:/opt/$NAME/stubs:/opt/$NAME/shim:/opt/$NAME/checks" \
    SAM_CHECK_MODEL=/opt/$NAME/tiny-qwen2 USE_LIBUV=0 TORCHDYNAMO_DISABLE=1 SAM_SIDECAR_SOCKET=/opt/$NAME/tmp/sidecar.sock SAM_SIDECAR_DEADLINE_MS=500 \
    chroot "$CHROOT" python3 "/opt/$NAME/checks/$script" 2>&1 | grep -E "^CHECK|sam-sidecar|sam drafter|Error" || true
}
if [ "$ROWS" != ascend ]; then echo "== vLLM row"; check site-vllm check_vllm.py; fi
if [ "$ROWS" = vllm ]; then
  echo "== SAM_SIDECAR_DISABLE=1"; check site-vllm check_switches.py SAM_SIDECAR_DISABLE=1
  echo "== a vLLM outside the matrix"; check site-vllm-unsupported check_switches.py
  exit 0
fi
echo "== vLLM-Ascend row"; check site-ascend check_ascend.py
echo "== SAM_SIDECAR_DISABLE=1"; check site-ascend check_switches.py SAM_SIDECAR_DISABLE=1
echo "== a vLLM-Ascend outside the matrix"; check site-ascend-unsupported check_switches.py
