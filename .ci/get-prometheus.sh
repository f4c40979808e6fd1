#!/usr/bin/env bash
# Install Debian's prometheus (prometheus + promtool) for the tune tests and the tune benchmark.
#
#   .ci/get-prometheus.sh          prints the directory holding both binaries
#
# Idempotent: when both binaries already run, nothing is installed. The package's service is
# never needed (tests start their own server on 127.0.0.1 over backfilled data); on hosts
# without systemd, policy-rc.d keeps the postinst from starting it anyway.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 && "$1" --version >/dev/null 2>&1; }

if have prometheus && have promtool; then
  dirname "$(command -v prometheus)"
  exit 0
fi

sudo=""
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "get-prometheus: need root (or sudo) to apt-get install prometheus" >&2; exit 1
  fi
fi

# apt-get install needs package lists; fetch them only when the package is unknown.
if ! apt-cache show prometheus >/dev/null 2>&1; then
  $sudo apt-get update -qq >&2
fi
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >&2

if ! have prometheus || ! have promtool; then
  echo "get-prometheus: prometheus/promtool still do not run after apt-get install" >&2
  exit 1
fi
dirname "$(command -v prometheus)"
