#!/usr/bin/env bash
# A Debian changelog entry for the package version ($1), dated by the last
# commit (reproducible).
set -euo pipefail
cd "$(dirname "$0")/.."
cat <<LOG
roost ($1-1) unstable; urgency=medium

  * Built from git commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown).

 -- Roost maintainers <roost@roost-mail.org>  $(LC_ALL=C date -u -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}")
LOG
