#!/bin/sh
# Roost pre-remove: stop the agent when the package goes (not on upgrade).
set -e
case "$1" in
  remove|0)
    if [ -d /run/systemd/system ]; then
      systemctl disable --now roostd >/dev/null 2>&1 || true
    fi
    ;;
esac
