#!/usr/bin/env bash
# The README's second command, `make test`, on a fresh Debian 12 root (see
# scripts/fresh-root.sh): proves that scripts/test-deps.sh installs every
# package a test needs, which a machine with packages installed by hand
# cannot. Root; about 20 minutes on 2 cores.
exec "$(dirname "$0")/fresh-root.sh" 'make test'
