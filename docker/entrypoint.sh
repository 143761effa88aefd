#!/bin/sh
# Container entrypoint: sockets group-accessible (the vLLM container shares the group through the
# pod's fsGroup), the socket directory present, then node replaces this shell (signals go to it).
set -eu
umask 0007
socket_dir=$(dirname "${SAM_SIDECAR_SOCKET:-/run/sam-sidecar/sidecar.sock}")
mkdir -p "$socket_dir"
case "${1:-serve}" in
  serve|replay|rollout|synth|demo|help|--help|-h|--version|-V) exec node /app/dist/cli.js "$@" ;;
  copy-shim)
    # Copies the Python shim bundle into a shared volume for the vLLM container's PYTHONPATH.
    target=${2:?usage: copy-shim TARGET_DIR}
    cp -R /app/shim/. "$target"/
    echo "sam-sidecar shim copied to $target"
    ;;
  *) exec "$@" ;;
esac
