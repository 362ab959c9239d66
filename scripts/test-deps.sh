#!/usr/bin/env bash
# Installs (as root, from Debian packages) and checks what `make test` needs.
# A missing component is a failure, never a silent skip.
set -euo pipefail

fail() { echo "test-deps: $*" >&2; exit 1; }
need_pkgs=()
command -v go >/dev/null || fail "go is not on PATH (Go 1.26 expected)"
[ "$(id -u)" = 0 ] || fail "make test must run as root: the filesystem tests mount FUSE and mount fusectl"
[ -c /dev/fuse ] || fail "/dev/fuse is missing: load the fuse module (modprobe fuse)"
command -v git >/dev/null || need_pkgs+=(git)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need_pkgs[*]}; run as root or install them" >&2; exit 1
  fi
  echo "== installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi
echo "== test dependencies present: $(go version), root, /dev/fuse"
