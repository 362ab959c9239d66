#!/bin/sh
# Roost post-remove: on purge (Debian) the state and the roost user go;
# a plain remove or an upgrade keeps them.
set -e
case "$1" in
  purge)
    rm -rf /var/lib/roost
    if getent passwd roost >/dev/null; then userdel roost >/dev/null 2>&1 || true; fi
    if getent group roost >/dev/null; then groupdel roost >/dev/null 2>&1 || true; fi
    ;;
esac
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
