#!/usr/bin/env bash
# Installs (as root, from Debian packages) and checks what `make test` needs.
# A missing component is a failure, never a silent skip.
#   scripts/test-deps.sh               everything make test needs
#   scripts/test-deps.sh demo [sqlite|postgres] [2.3|2.4]   what make demo needs
set -euo pipefail
mode=${1:-test}
demo_db=${2:-sqlite}
demo_dovecot=${3:-2.3}

fail() { echo "test-deps: $*" >&2; exit 1; }
need_pkgs=()
command -v go >/dev/null || fail "go is not on PATH (Go 1.26 expected)"
[ "$(id -u)" = 0 ] || fail "make $mode must run as root: it mounts FUSE and runs Dovecot"
[ -c /dev/fuse ] || fail "/dev/fuse is missing: load the fuse module (modprobe fuse)"
command -v git >/dev/null || need_pkgs+=(git)
if [ "$mode" != demo ]; then
  # go test -race needs cgo: a C compiler and the C library's headers.
  command -v gcc >/dev/null || need_pkgs+=(gcc)
  dpkg-query -W -f='${Status}' libc6-dev 2>/dev/null | grep -q "install ok installed" || need_pkgs+=(libc6-dev)
  # systemd-analyze verifies the packaged unit (a minimal root has no systemd).
  command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
fi
# Real Dovecot 2.3 for the health checks, kicks and end-to-end (its SQLite
# passdb driver for the proxy_maybe tests); real PostgreSQL and MariaDB for
# routing; HAProxy in front; Alertmanager; promtool (from prometheus) for
# the alert rules; iproute2 for network namespaces; lintian and rpm to
# check the packages, debootstrap for their install test (its Debian base
# is cached in /var/cache/roost-test). The tests
# start private servers; the packages' own stay off.
pkgs=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-submissiond dovecot-managesieved dovecot-sieve dovecot-sqlite dovecot-pgsql dovecot-mysql
      postgresql mariadb-server haproxy iproute2 nftables prometheus-alertmanager prometheus lintian rpm debootstrap)
if [ "$mode" = demo ]; then
  # The demo's mail cluster: Dovecot with every protocol its nodes serve
  # (IMAP, POP3, LMTP, submission, ManageSieve), the SQLite passdb and
  # Sieve, and HAProxy; PostgreSQL only for `make demo DEMO_DB=postgres`.
  pkgs=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-submissiond dovecot-managesieved dovecot-sieve dovecot-sqlite haproxy)
  [ "$demo_db" = postgres ] && pkgs+=(dovecot-pgsql postgresql)
  [ "$demo_dovecot" = 2.4 ] && pkgs+=(debootstrap)
fi
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need_pkgs[*]}; run as root or install them" >&2; exit 1
  fi
  echo "== installing ${need_pkgs[*]}"
  # The packages must not start the distro's Dovecot on *:143, PostgreSQL,
  # MariaDB, HAProxy, Alertmanager or Prometheus: tests run their own. policy-rc.d (exit 101)
  # stops invoke-rc.d.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; created_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
  [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
getent passwd vmail >/dev/null || useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin vmail
command -v dovecot >/dev/null || fail "dovecot is not installed"
command -v sievec >/dev/null || fail "sievec (dovecot-sieve) is not installed"
command -v haproxy >/dev/null || fail "haproxy is not installed"
if [ "$mode" = demo ]; then
  [ "$demo_db" != postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || fail "PostgreSQL's server is not installed"
  dovecot=$(dovecot --version)
  if [ "$demo_dovecot" = 2.4 ]; then
    dovecot=$("$(dirname "$0")/dovecot24-root.sh" | tail -1) || fail "the Dovecot 2.4 root could not be made (scripts/dovecot24-root.sh)"
  fi
  echo "== demo dependencies present: dovecot $dovecot, $(haproxy -v | head -1)"
  exit 0
fi
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || fail "PostgreSQL's server is not installed"
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || fail "MariaDB's server is not installed"
command -v prometheus-alertmanager >/dev/null && command -v amtool >/dev/null || fail "prometheus-alertmanager (with amtool) is not installed"
command -v promtool >/dev/null || fail "promtool (Debian's prometheus package) is not installed"
command -v lintian >/dev/null && command -v rpm >/dev/null || fail "lintian and rpm (to check the packages) are not installed"
command -v systemd-analyze >/dev/null || fail "systemd-analyze (to check the packaged unit) is not installed"
command -v debootstrap >/dev/null || fail "debootstrap (for the package install test) is not installed"
command -v ip >/dev/null || fail "ip (iproute2) is not installed"
command -v nft >/dev/null || fail "nft (nftables, for make ttr's power-off) is not installed"
command -v unshare >/dev/null || fail "unshare (util-linux, to run Dovecot 2.4 from its root) is not installed"
# Dovecot 2.4 (Debian 13's) for the tests that run both versions: a root
# made once with debootstrap and cached (scripts/dovecot24-root.sh).
dovecot24=$("$(dirname "$0")/dovecot24-root.sh" | tail -1) || fail "the Dovecot 2.4 root could not be made (scripts/dovecot24-root.sh)"
echo "== test dependencies present: $(go version), root, /dev/fuse, dovecot $(dovecot --version) and $dovecot24, $(ls -d /usr/lib/postgresql/*/bin | head -1), $(/usr/sbin/mariadbd --version | head -1)"
