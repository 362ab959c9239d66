#!/usr/bin/env bash
# Runs a command from the README in a fresh Debian 12 root, as a new user
# would on a new machine: a debootstrap minbase chroot with only make, git
# and ca-certificates added (and this host's Go and module cache,
# bind-mounted), in a clone of this repository's HEAD. Root. It removes
# the root and its mounts when done, and prints how long the command took.
#   scripts/fresh-root.sh 'make test'
# The Debian base is cached in /var/cache/roost-test (made on first use).
set -euo pipefail
[ $# = 1 ] || { echo "usage: $0 'COMMAND'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "fresh-root: run as root (it uses chroot and mounts)" >&2; exit 2; }
SRC=$(cd "$(dirname "$0")/.." && pwd)
CACHE=/var/cache/roost-test/bookworm-minbase.tgz
MIRROR=http://deb.debian.org/debian
command -v debootstrap >/dev/null || { echo "fresh-root: debootstrap is not installed (scripts/test-deps.sh installs it)" >&2; exit 1; }
if [ ! -f "$CACHE" ]; then
  mkdir -p "$(dirname "$CACHE")"
  tmp=$(mktemp -d /var/tmp/roost-base-XXXX)
  debootstrap --variant=minbase --make-tarball="$CACHE" bookworm "$tmp" "$MIRROR" >/dev/null
  rm -rf "$tmp"
fi
GOROOT_HOST=$(go env GOROOT) MODCACHE=$(go env GOMODCACHE)
# The root gets this host's module cache, filled here first: the host
# trusts what its own network needs (a proxy's CA, say) and the root
# would not.
# (download for the build, tidy -diff for what `make lint`'s tidy reads).
(cd "$SRC" && go mod download && go mod tidy -diff >/dev/null)
R=$(mktemp -d /var/tmp/roost-fresh-XXXX)
chmod 755 "$R" # the root of a system: its services' users must enter it
cleanup() {
  # Whatever the command left mounted inside goes first, the root's own
  # bind mount last (lazily: a FUSE mount whose daemon died answers
  # nothing).
  awk -v r="$R" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$R"
}
trap cleanup EXIT
debootstrap --variant=minbase --unpack-tarball="$CACHE" bookworm "$R" "$MIRROR" >/dev/null
# The root is a mount of its own, as on a real machine: `ip netns exec`
# remounts / (make-rslave), which fails on a plain directory.
mount --bind "$R" "$R"
mount --bind /proc "$R/proc"; mount --bind /sys "$R/sys"; mount --bind /dev "$R/dev"; mount --bind /dev/pts "$R/dev/pts"
mount -t tmpfs tmpfs "$R/run"
mkdir -p "$R/usr/local/go" "$R/root/go/pkg/mod"
mount --bind "$GOROOT_HOST" "$R/usr/local/go"
mount --bind "$MODCACHE" "$R/root/go/pkg/mod"
cp /etc/resolv.conf "$R/etc/resolv.conf"
git clone -q "$SRC" "$R/src"
start=$(date +%s)
rc=0
chroot "$R" /usr/bin/env -i HOME=/root PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb /bin/bash -c "
  set -e
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make git ca-certificates >/dev/null
  cd /src && $1" || rc=$?
echo "fresh-root: '$1' exited $rc after $(( $(date +%s) - start )) s in a fresh Debian 12 root"
exit $rc
