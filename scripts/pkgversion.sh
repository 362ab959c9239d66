#!/usr/bin/env bash
# The package version from git: a v1.2.3 tag gives 1.2.3 (with ~git… after
# it when commits follow); without a tag, 0.0.0~git<commit date>.<hash>.
set -euo pipefail
if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
  v=${d#v}
  echo "${v/-/\~git}" | tr '-' '.'
else
  echo "0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S).$(git rev-parse --short=12 HEAD)"
fi
