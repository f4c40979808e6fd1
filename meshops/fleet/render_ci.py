"""The fleet as a GitHub Actions workflow or a GitLab CI pipeline.

Every cluster job runs ``meshops fleet exec FLEET --cluster NAME``: the same child the local
executor starts (one meshops run, its own journal and Lease), so the file the pipeline reads
is the fleet file itself and nothing is re-encoded in shell. Kubeconfigs come from one secret
per cluster (``KUBECONFIG_<NAME>``, the name upper-cased with ``-`` as ``_``); AWS (Route53
switchovers) from OIDC on GitHub. Neither engine has a failure *count* budget: a wave whose
budget is above 0 lets all its clusters finish (no fail-fast), and any failure still holds
the next wave; the local executor is the one that counts.
"""

from __future__ import annotations

from typing import Any

from meshops.fleet.model import LoadedFleet, Wave


def secret_suffix(cluster: str) -> str:
    return cluster.upper().replace("-", "_")


def _needs(chain: list[str]) -> dict[str, Any]:
    return {"needs": [chain[-1]]} if chain else {}


def github(loaded: LoadedFleet, fleet_path: str) -> dict[str, Any]:
    on: dict[str, Any] = {"workflow_dispatch": {}}
    if loaded.fleet.schedule:
        on["schedule"] = [{"cron": loaded.fleet.schedule}]
    jobs: dict[str, Any] = {}
    chain: list[str] = []
    for wave in loaded.waves:
        job_id = f"wave-{wave.name}"
        job: dict[str, Any] = {
            "name": f"wave {wave.name}",
            **_needs(chain),
            "runs-on": "ubuntu-latest",
            **({"container": loaded.fleet.image} if loaded.fleet.image else {}),
            "timeout-minutes": 120,
            "strategy": {
                "fail-fast": wave.spec.max_failures == 0,
                "max-parallel": wave.spec.max_parallel,
                "matrix": {"include": [{"cluster": c, "secret": secret_suffix(c)} for c in wave.clusters]},
            },
            "env": {"CLUSTER": "${{ matrix.cluster }}", "MESHOPS_STATE_DIR": "state/${{ matrix.cluster }}"},
            "steps": [
                {"uses": "actions/checkout@v4", "with": {"persist-credentials": False}},
                {"name": "AWS credentials (OIDC)", "if": "vars.MESHOPS_AWS_ROLE_ARN != ''",
                 "uses": "aws-actions/configure-aws-credentials@v4",
                 "with": {"role-to-assume": "${{ vars.MESHOPS_AWS_ROLE_ARN }}",
                          "aws-region": "${{ vars.AWS_REGION || 'us-east-1' }}"}},
                {"name": "Kubeconfig", "env": {"KUBECONFIG_DATA": "${{ secrets[format('KUBECONFIG_{0}', matrix.secret)] }}"},
                 # The runner context is not available in workflow or job env: the step exports the path.
                 "run": 'umask 077 && printf \'%s\' "$KUBECONFIG_DATA" > "$RUNNER_TEMP/kubeconfig" && '
                        'echo "KUBECONFIG=$RUNNER_TEMP/kubeconfig" >> "$GITHUB_ENV"'},
                {"name": "meshops", "run": f'meshops fleet exec {fleet_path} --cluster "$CLUSTER"'},
                {"name": "Run journal", "if": "always()", "uses": "actions/upload-artifact@v4",
                 "with": {"name": "meshops-${{ matrix.cluster }}", "path": "state/", "if-no-files-found": "ignore"}},
            ],
        }
        if wave.spec.gate != "none":
            # Required reviewers on this environment are the approval gate (a pause is one too:
            # CI has no "stop here until re-run" other than a protected environment).
            job["environment"] = f"meshops-{loaded.name}-{wave.name}"
        jobs[job_id] = job
        chain.append(job_id)
        if wave.spec.soak_seconds > 0 and wave is not loaded.waves[-1]:
            soak = f"soak-{wave.name}"
            jobs[soak] = {"name": f"soak after {wave.name}", **_needs(chain), "runs-on": "ubuntu-latest",
                          "steps": [{"run": f"sleep {int(wave.spec.soak_seconds)}"}]}
            chain.append(soak)
    return {
        "name": f"meshops fleet {loaded.name}",
        "on": on,
        "permissions": {"contents": "read", "id-token": "write"},
        "concurrency": {"group": f"meshops-fleet-{loaded.name}", "cancel-in-progress": False},
        "env": {"MESHOPS_LOG_FORMAT": "json"},
        "jobs": jobs,
    }


def _batches(wave: Wave) -> list[list[str]]:
    # GitLab has no max-parallel for a matrix: a wave runs in stages of at most max_parallel clusters.
    n = wave.spec.max_parallel
    return [wave.clusters[i:i + n] for i in range(0, len(wave.clusters), n)]


def gitlab(loaded: LoadedFleet, fleet_path: str) -> dict[str, Any]:
    stages: list[str] = []
    jobs: dict[str, Any] = {}
    chain: list[str] = []

    def add(name: str, job: dict[str, Any]) -> None:
        # `needs:` on the job before, not stage order alone: a manual gate then holds every later
        # job (a pipeline runner that ignores blocked stages, such as gitlab-ci-local, too).
        stages.append(job["stage"])
        jobs[name] = {**job, **({"needs": [chain[-1]]} if chain else {})}
        chain.append(name)

    for wave in loaded.waves:
        if wave.spec.gate != "none":
            add(f"approve {wave.name}", {"stage": f"gate-{wave.name}", "when": "manual", "allow_failure": False,
                                         "script": [f"echo 'wave {wave.name} approved by' \"$GITLAB_USER_LOGIN\""]})
        batches = _batches(wave)
        for i, batch in enumerate(batches):
            stage = f"wave-{wave.name}" + (f"-{i + 1}" if len(batches) > 1 else "")
            add(stage, {"extends": ".meshops-cluster", "stage": stage,
                        "parallel": {"matrix": [{"CLUSTER": c, "SECRET": secret_suffix(c)} for c in batch]},
                        **({"allow_failure": True} if wave.spec.max_failures else {})})
        if wave.spec.soak_seconds > 0 and wave is not loaded.waves[-1]:
            add(f"soak-{wave.name}", {"stage": f"soak-{wave.name}", "script": [f"sleep {int(wave.spec.soak_seconds)}"]})
    doc: dict[str, Any] = {
        "stages": stages,
        # No image: shell runners with meshops installed (and gitlab-ci-local's shell executor).
        **({"default": {"image": loaded.fleet.image}} if loaded.fleet.image else {}),
        "variables": {"MESHOPS_LOG_FORMAT": "json", "FLEET": fleet_path},
        ".meshops-cluster": {
            # One job per cluster at a time, across pipelines.
            "resource_group": "meshops-$CLUSTER",
            "variables": {"MESHOPS_STATE_DIR": "state/$CLUSTER"},
            "script": [
                # KUBECONFIG_<SECRET> is a File-type CI/CD variable: its value is the path of the kubeconfig.
                'export KUBECONFIG="$(printenv "KUBECONFIG_$SECRET")"',
                'meshops fleet exec "$FLEET" --cluster "$CLUSTER"',
            ],
            "artifacts": {"when": "always", "paths": ["state/"]},
        },
        **jobs,
    }
    if loaded.fleet.schedule:
        doc["workflow"] = {"rules": [{"if": '$CI_PIPELINE_SOURCE == "schedule"'},
                                     {"if": '$CI_PIPELINE_SOURCE == "web"'}]}
    return doc
