#!/usr/bin/env bash
# The browser the dashboard tests drive (tests/test_dashboard.py): Debian's chromium,
# installed when missing and this runs as root. Where it cannot be installed this says
# why and the rest of the suite still runs; the dashboard tests then fail (never skip).
set -euo pipefail

CHROMIUM=${PKBS_TEST_CHROMIUM:-/usr/bin/chromium}

note() { echo "browser-host: $*" >&2; }

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  note "$CHROMIUM is missing and only root can install it (apt-get install chromium)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  note "$CHROMIUM is missing and this is not a Debian system"
  exit 0
fi
echo "browser-host: installing chromium"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
  || note "apt-get install chromium failed"
