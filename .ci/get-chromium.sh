#!/usr/bin/env bash
# Install Debian's chromium for the report tests (the HTML report is opened headless and
# screenshotted) and print the binary's path.
#
#   .ci/get-chromium.sh
#
# Idempotent: when a working chromium is already installed it only prints its path. DejaVu is
# the fallback font of the report: without any font the screenshot would show empty boxes.
set -euo pipefail

find_chromium() {
  command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || true
}

bin="$(find_chromium)"
if [[ -n "${bin}" ]] && "${bin}" --version >/dev/null 2>&1; then
  echo "${bin}"
  exit 0
fi

sudo=""
if [[ "$(id -u)" != 0 ]]; then
  sudo="sudo"
fi
# apt-get install needs package lists; fetch them only when the package is unknown.
if ! apt-cache show chromium >/dev/null 2>&1; then
  ${sudo} apt-get update -qq >&2
fi
DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2

bin="$(find_chromium)"
if [[ -z "${bin}" ]] || ! "${bin}" --version >/dev/null 2>&1; then
  echo "get-chromium: chromium did not install or does not run" >&2
  exit 1
fi
echo "${bin}"
