#!/usr/bin/env bash
# The README's first command, `make demo`, once (ROOST_DEMO_ONESHOT=1) on a
# fresh Debian 12 root (see scripts/fresh-root.sh). Root; about 5 minutes.
exec "$(dirname "$0")/fresh-root.sh" 'ROOST_DEMO_ONESHOT=1 make demo'
