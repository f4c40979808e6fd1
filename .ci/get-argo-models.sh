#!/usr/bin/env bash
# Argo Workflows' schema for the fleet render tests: the npm package @kubernetes-models/argo-workflows
# ships validators compiled from Argo's own Go API types (argoproj/argo-workflows pkg/apis/workflow/v1alpha1).
#
#   .ci/get-argo-models.sh        prints the directory holding validate.mjs
#
# Idempotent: nothing is installed when the package is already there. Without node/npm it says so
# and exits 0; the test that needs it then skips (the hera structural check still runs).
set -euo pipefail

DIR="${MESHOPS_ARGO_MODELS:-/opt/meshops-npm/argo-workflows}"
PKG="@kubernetes-models/argo-workflows@2.0.0"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "get-argo-models: node/npm not found; the Argo schema test will skip" >&2
  exit 0
fi
mkdir -p "$DIR"
if [[ ! -f "$DIR/node_modules/@kubernetes-models/argo-workflows/package.json" ]]; then
  # The package asks for node >= 22 in its engines field; its validators run on node 20 too.
  (cd "$DIR" && npm install --no-audit --no-fund --engine-strict=false --loglevel=error "$PKG" >&2)
fi
cat > "$DIR/validate.mjs" <<'JS'
// node validate.mjs FILE.json: each object (a JSON list) checked by its kind's validator; exit 1 on the first invalid.
import fs from "node:fs";
import { Workflow } from "@kubernetes-models/argo-workflows/argoproj.io/v1alpha1/Workflow";
import { CronWorkflow } from "@kubernetes-models/argo-workflows/argoproj.io/v1alpha1/CronWorkflow";
const kinds = { Workflow, CronWorkflow };
for (const doc of JSON.parse(fs.readFileSync(process.argv[2], "utf8"))) {
  const Model = kinds[doc.kind];
  if (!Model) { console.log(`unknown kind ${doc.kind}`); process.exit(1); }
  try { new Model(doc).validate(); console.log(`${doc.kind}: valid`); }
  catch (e) { console.log(`${doc.kind}: ${e.message}`); process.exit(1); }
}
JS
echo "$DIR"
