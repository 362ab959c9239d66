#!/usr/bin/env bash
# The README's first command on a fresh Debian 12 root: a debootstrap minbase
# chroot with only make, git and ca-certificates added (and this host's Go,
# bind-mounted), running `make demo` once (ROOST_DEMO_ONESHOT=1) from a clone
# of this repository's HEAD. Root; about 5 minutes. Needs the debootstrap
# cache that make test leaves in /var/cache/roost-test. It removes the root
# and its mounts when done.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -f /var/cache/roost-test/bookworm-minbase.tgz ] || { echo "fresh-demo: run make test once first (it caches the Debian base)" >&2; exit 1; }
GOROOT_HOST=$(go env GOROOT) MODCACHE=$(go env GOMODCACHE)
R=$(mktemp -d /var/tmp/roost-fresh-XXXX)
cleanup() {
  for m in usr/local/go root/go/pkg/mod dev/pts dev sys proc; do umount -l "$R/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$R"
}
trap cleanup EXIT
debootstrap --variant=minbase --unpack-tarball=/var/cache/roost-test/bookworm-minbase.tgz bookworm "$R" http://deb.debian.org/debian >/dev/null
mount --bind /proc "$R/proc"; mount --bind /sys "$R/sys"; mount --bind /dev "$R/dev"; mount --bind /dev/pts "$R/dev/pts"
mkdir -p "$R/usr/local/go" "$R/root/go/pkg/mod"
mount --bind "$GOROOT_HOST" "$R/usr/local/go"
mount --bind "$MODCACHE" "$R/root/go/pkg/mod"
cp /etc/resolv.conf "$R/etc/resolv.conf"
git clone -q "$SRC" "$R/src"
chroot "$R" /usr/bin/env -i HOME=/root PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb /bin/bash -c '
  set -e
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make git ca-certificates >/dev/null
  cd /src && ROOST_DEMO_ONESHOT=1 make demo'
