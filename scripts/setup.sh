#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for sam-sidecar: system packages for the Python shim and
# the chart tests, the npm dependencies, and the build. Safe to run again.
#   Debian packages: python3 + numpy + torch + pytest + grpcio + packaging + prometheus-client
#   (the shim and its tests), Go with
#   sprig and yaml.v3 (renders the Helm chart in its tests: there is no helm binary), git,
#   redis-server and openssl (the sharing tests: a Redis on loopback, one serving TLS with a test CA).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else echo "setup: run as root or install sudo" >&2; exit 1; fi
fi
PACKAGES=(python3 python3-pytest python3-numpy python3-grpcio python3-torch python3-packaging python3-prometheus-client
          golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev git redis-server openssl)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: node $(node --version), npm $(npm --version)"
npm ci --no-audit --no-fund
npm run build --silent
echo "setup: done"
