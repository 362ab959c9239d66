#!/usr/bin/env bash
# Debian's machine-readable copyright file for the package (DEP-5): Roost's
# licence, and the licences of the modules in the binaries (NOTICE).
set -euo pipefail
cd "$(dirname "$0")/.."
cat <<HDR
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: roost
Source: https://github.com/roost-mail/roost

Files: *
Copyright: Roost authors
License: Apache-2.0
Comment: The binaries include Go modules under their own licences; see
 /usr/share/doc/roost/NOTICE.

License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 can be found
 in /usr/share/common-licenses/Apache-2.0.
HDR
