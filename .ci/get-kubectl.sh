#!/usr/bin/env bash
# Fetch Debian's kubectl 1.20 for the sandbox tests and print the binary's path.
#
#   .ci/get-kubectl.sh [DEST]     (default DEST: $HOME/.cache/meshops/kubectl-1.20)
#
# `apt-get install kubernetes-client` conflicts with the kubectl that google-cloud-cli owns, so
# the .deb is downloaded and unpacked instead of installed. Idempotent: a second run only prints.
set -euo pipefail

dest="${1:-${HOME}/.cache/meshops/kubectl-1.20}"
bin="${dest}/usr/bin/kubectl"

if [[ -x "${bin}" ]] && "${bin}" version --client >/dev/null 2>&1; then
  echo "${bin}"
  exit 0
fi

mkdir -p "${dest}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# apt-get download needs package lists; fetch them only when the package is unknown.
if ! apt-cache show kubernetes-client >/dev/null 2>&1; then
  apt-get update -qq >&2
fi
# (apt warns that it downloads as root rather than _apt into a private temp dir: harmless.)
(cd "${work}" && apt-get download -qq kubernetes-client >&2)
dpkg-deb -x "${work}"/kubernetes-client_*.deb "${dest}"

if ! "${bin}" version --client >/dev/null 2>&1; then
  echo "get-kubectl: ${bin} does not run" >&2
  exit 1
fi
echo "${bin}"
