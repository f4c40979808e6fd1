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
GITLAB = CI / "gitlab" / ".gitlab-ci.yml"
CRONJOB = CI / "kubernetes" / "cronjob.yaml"
DOCKERFILE = CI / "Dockerfile"

# ---- command lines ------------------------------------------------------------------------------

_SEPARATORS = re.compile(r"\|\||&&|[|;`]|\$\(|\)")
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


def _github() -> dict[Any, Any]:
    return yaml.safe_load(GITHUB.read_text())  # type: ignore[no-any-return]


def _gitlab() -> dict[str, Any]:
    return yaml.safe_load(GITLAB.read_text())  # type: ignore[no-any-return]


def _scripts() -> dict[str, list[str]]:
    """Every shell snippet of every template, by template."""
    gh = [step["run"] for job in _github()["jobs"].values() for step in job["steps"] if "run" in step]
    gl = [line for job in _gitlab().values() if isinstance(job, dict)
          for key in ("script", "before_script") for line in job.get(key, [])]
    cron = [doc for doc in yaml.safe_load_all(CRONJOB.read_text()) if doc["kind"] == "CronJob"]
    container = cron[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    docker = [re.sub(r"^RUN\s+", "", line) for line in _dockerfile_instructions("RUN")]
    return {"github": gh, "gitlab": gl, "cronjob": [shlex.join(["meshops", *container["args"]])], "dockerfile": docker}


@pytest.mark.parametrize(("template", "at_least"), [("github", 14), ("gitlab", 12), ("cronjob", 1), ("dockerfile", 2)])
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
        assert {"meshops upgrade", "meshops runs list", "meshops runs show", "meshops report", "meshops approve",
                "meshops resume", "meshops rollback"} <= used


def _schema_check(builtin: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", builtin, str(path)],
                          capture_output=True, text=True, timeout=60)


def test_the_github_workflow_fits_the_workflow_schema(tmp_path: Path) -> None:
    """SchemaStore's workflow schema (vendored by check-jsonschema) accepts it, and rejects a broken copy."""
    ok = _schema_check("vendor.github-workflows", GITHUB)
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
    assert {"ServiceAccount/meshops-system/meshops-runbook", "ConfigMap/meshops-system/meshops-kubeconfig", "ConfigMap/meshops-system/meshops-canary-params",
            "CronJob/meshops-system/meshops-canary-upgrade"} <= set(docs)
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


def test_the_cronjob_params_are_the_params_of_the_playbook_it_runs() -> None:
    """The vars file passes the playbook's own validation; the playbook path is where the image puts it."""
    from meshops.engine.playbook import load_playbook, resolve_params

    docs = _cron_docs()
    args = docs["CronJob/meshops-system/meshops-canary-upgrade"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    playbook = Path(args[args.index("run") + 1])
    env = dict(re.findall(r"^\s+(MESHOPS_PLAYBOOKS)=(\S+)", DOCKERFILE.read_text(), re.M))
    assert playbook.parent == Path(env["MESHOPS_PLAYBOOKS"])
    loaded = load_playbook(str(ROOT / "playbooks" / playbook.name))
    params = yaml.safe_load(docs["ConfigMap/meshops-system/meshops-canary-params"]["data"]["vars.yaml"])
    resolved = resolve_params(loaded.playbook, params)
    assert resolved["to"] == params["to"]


def test_the_in_cluster_kubeconfig_reads_the_service_account_token_file(tmp_path: Path) -> None:
    """The kubeconfig the pod gets loads with the Kubernetes client and takes its token from tokenFile."""
    from kubernetes import config as kconfig

    text = _cron_docs()["ConfigMap/meshops-system/meshops-kubeconfig"]["data"]["config"]
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    (tmp_path / "token").write_text("sa-token-from-file")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (tmp_path / "config").write_text(text.replace(sa, str(tmp_path)))
    api = kconfig.new_client_from_config(config_file=str(tmp_path / "config"), persist_config=False)
    assert api.configuration.host == "https://kubernetes.default.svc"
    assert "Bearer sa-token-from-file" in api.configuration.api_key.values()


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
