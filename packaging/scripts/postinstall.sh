#!/bin/sh
# Roost post-install: the roost group (members may use nodectl on the
# local socket) and the state directory. The service is not started: it
# needs a configuration first.
set -e
if ! getent group roost >/dev/null; then
  groupadd --system roost
fi
if ! getent passwd roost >/dev/null; then
  useradd --system --gid roost --home-dir /var/lib/roost --no-create-home --shell /usr/sbin/nologin --comment "Roost agent" roost
fi
mkdir -p /var/lib/roost
chmod 0750 /var/lib/roost
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
cat <<'MSG'
roost: installed, not started. Write /etc/roost/roost.yaml (see
/usr/share/doc/roost/README.md), check it with
  roostd check-config --config /etc/roost/roost.yaml
then start it with
  systemctl enable --now roostd
MSG
