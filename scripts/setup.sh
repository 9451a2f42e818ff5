#!/usr/bin/env bash
# Installs what nbops needs on a fresh machine: Debian packages for the local lab (as root), then a
# virtualenv in .venv with nbops and its test tools. `--test` adds what the test suite needs (chromium). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
declare -A PKG=(
  [dockerd]=docker.io [containerd]=containerd [docker-registry]=docker-registry [ip]=iproute2
  [nsenter]=util-linux [iptables]=iptables [make]=make [git]=git
)
missing=()
for cmd in "${!PKG[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}"); done
# the lab's base image is FROM scratch + busybox: it must be the static build
bb_linkage=$(ldd "$(command -v busybox || echo /nonexistent)" 2>&1 || true)   # ldd exits 1 on static binaries
case "$bb_linkage" in
  *"not a dynamic"*|*statically*) ;;
  *) missing+=(busybox-static) ;;
esac
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# the test suite drives JupyterLab in a real browser (Debian's chromium; Playwright never downloads one)
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: install them (Debian/Ubuntu: sudo apt-get install -y ${missing[*]}) and run again" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c 'import nbops, docker, pandas, matplotlib, papermill' 
echo "setup: ok ($(.venv/bin/python --version), $(dockerd --version 2>/dev/null | cut -d, -f1))"
