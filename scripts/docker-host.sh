#!/usr/bin/env bash
# Make this machine a Docker host for the container scenarios (make test, .ci/run):
# Debian's docker.io and debootstrap are installed when missing, and dockerd is
# started when no daemon answers. Where that cannot be done it says why in one line
# and fails: the container scenarios never skip.
set -euo pipefail

# Debian's client has BuildKit built in; a newer `docker` earlier on PATH may lack buildx.
DOCKER=${DOCKER:-/usr/bin/docker}
LOG=${DOCKERD_LOG:-/tmp/pkbs-dockerd.log}

fail() { echo "docker-host: $*" >&2; exit 1; }

need=()
{ command -v "$DOCKER" && command -v dockerd; } >/dev/null 2>&1 || need+=(docker.io)
# debootstrap makes the images' base where no registry is reachable (scripts/images.py).
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "needs ${need[*]} (apt-get install ${need[*]}) and is not root"
  command -v apt-get >/dev/null 2>&1 || fail "needs ${need[*]} and this is not a Debian system"
  echo "docker-host: installing ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || fail "apt-get install ${need[*]} failed"
fi

if "$DOCKER" info >/dev/null 2>&1; then
  echo "docker-host: dockerd is running"
  exit 0
fi
[ "$(id -u)" = 0 ] || fail "no Docker daemon answers and only root can start dockerd"
echo "docker-host: starting dockerd (log: $LOG)"
nohup dockerd >"$LOG" 2>&1 &
for _ in $(seq 1 60); do
  if "$DOCKER" info >/dev/null 2>&1; then
    echo "docker-host: dockerd is running"
    exit 0
  fi
  sleep 0.5
done
fail "dockerd did not start in 30 s: $(tail -n 1 "$LOG")"
