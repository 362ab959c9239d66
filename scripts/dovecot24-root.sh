#!/usr/bin/env bash
# Makes the Dovecot 2.4 root that the tests run Dovecot 2.4 from: a Debian
# 13 (trixie) minbase root with Debian's Dovecot 2.4 packages, in
# /var/cache/roost-test/trixie-dovecot24 (made once; remade when the
# package list below changes). tests/dovecotlab runs its `dovecot` and
# `doveadm` by chroot, in the host's network namespace, with the host's
# /tmp bind-mounted at the same path (see scripts/chroot-run.sh). Its
# vmail user has the host's vmail uid and gid (made before the packages
# take theirs), so one shared maildir serves 2.3 and 2.4 nodes alike. Root; a few minutes the first time.
#   scripts/dovecot24-root.sh          make it if needed, print its Dovecot version
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "dovecot24-root: run as root (debootstrap, chroot)" >&2; exit 2; }
ROOT=${ROOST_DOVECOT24_ROOT:-/var/cache/roost-test/trixie-dovecot24}
MIRROR=http://deb.debian.org/debian
PKGS="dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-submissiond dovecot-managesieved dovecot-sieve dovecot-sqlite dovecot-pgsql dovecot-mysql"
VMAIL_UID=$(id -u vmail) VMAIL_GID=$(id -g vmail)
STAMP="packages: $PKGS; vmail $VMAIL_UID:$VMAIL_GID"
if [ -f "$ROOT/.roost-stamp" ] && [ "$(cat "$ROOT/.roost-stamp")" = "$STAMP" ] && [ -x "$ROOT/usr/sbin/dovecot" ]; then
  chroot "$ROOT" dovecot --version
  exit 0
fi
command -v debootstrap >/dev/null || { echo "dovecot24-root: debootstrap is not installed (scripts/test-deps.sh installs it)" >&2; exit 1; }
# Made beside the final place and moved there whole: an interrupted run
# never leaves a half-made root that looks finished.
mkdir -p "$(dirname "$ROOT")"
tmp=$(mktemp -d "$ROOT.new-XXXX")
cleanup() {
  for m in proc dev; do mountpoint -q "$tmp/$m" && umount -l "$tmp/$m"; done
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
chmod 755 "$tmp"
debootstrap --variant=minbase trixie "$tmp" "$MIRROR" >/dev/null
# Nothing starts inside the root on install.
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
mount -t proc proc "$tmp/proc"
mount --bind /dev "$tmp/dev"
chroot "$tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive sh -ec "
  groupadd -g $VMAIL_GID vmail
  useradd -u $VMAIL_UID -g $VMAIL_GID -d /nonexistent -s /usr/sbin/nologin vmail
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
  apt-get clean"
umount "$tmp/proc" "$tmp/dev"
echo "$STAMP" >"$tmp/.roost-stamp"
rm -rf --one-file-system "$ROOT"
mv "$tmp" "$ROOT"
trap - EXIT
chroot "$ROOT" dovecot --version
