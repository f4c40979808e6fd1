#!/usr/bin/env bash
# Fetch gitlab-ci-local (npm) and rsync (Debian; gitlab-ci-local copies the checkout with it) for
# the test that runs docs/ci/gitlab/.gitlab-ci.yml on the shell executor against the sandbox.
#
#   .ci/get-gitlab-ci-local.sh [DEST]   (default DEST: $HOME/.cache/meshops/gitlab-ci-local-4.72.0)
#
# 4.72.0: the newest release that runs on Debian 12's Node 20 from a single bundled file (later
# ones need Node 22's Set.prototype.union; some earlier ones build re2 with node-gyp).
# Idempotent: a second run only prints the binary's path.
set -euo pipefail

version=4.72.0
dest="${1:-${HOME}/.cache/meshops/gitlab-ci-local-${version}}"
bin="${dest}/node_modules/.bin/gitlab-ci-local"

if ! command -v rsync >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-cache show rsync >/dev/null 2>&1 || apt-get update -qq >&2
    apt-get install -y -qq rsync >&2
  else
    echo "rsync is missing (sudo apt-get install rsync)" >&2
  fi
fi

if [[ -x "${bin}" ]] && "${bin}" --version >/dev/null 2>&1; then
  echo "${bin}"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: gitlab-ci-local not installed (its test will be skipped)" >&2
  exit 0
fi
mkdir -p "${dest}"
npm install --silent --no-audit --no-fund --prefix "${dest}" "gitlab-ci-local@${version}" >&2
"${bin}" --version >/dev/null
echo "${bin}"
