"""The fleet as an Argo Workflow (and a CronWorkflow when it has a schedule), built from hera's
typed models of Argo's API rather than from text templates.

Shape: the entrypoint DAG chains, per wave, an optional approval (a ``suspend`` template:
``argo resume`` is the approval), the wave, and an optional soak (a ``suspend`` with a
duration). A wave is a DAG template with ``parallelism`` = ``max_parallel`` and one task per
cluster (``cluster-<name>``); ``failFast`` when its failure budget is 0. Argo has no failure
*count* budget: in a wave with a budget above 0 a last ``budget`` task waits for every cluster
task to end (``depends``: each one Succeeded, Failed or Errored), counts the failed ones from the
tasks' statuses (an expression tag) and fails the wave when there are more than the budget. Each
cluster task runs the meshops image with the cluster's kubeconfig Secret
(``meshops-kubeconfig-<cluster>``, key ``config``) or, for a cluster that names a
``service_account``, in-cluster under it; its state directory (journal and report) is the
task's output artifact.

Argo facts this follows (argoproj/argo-workflows at v3.7.18; unchanged at v4.1.2), each checked
with a real expr-lang evaluator in ``tests/fleet/test_argo_semantics.py``:

- ``workflow/validate/validate.go`` (validateDAG) refuses a DAG template that uses ``depends``
  and also sets ``continueOn`` on a task ("Instead use 'dep-task.Failed'/'dep-task.Errored'"),
  or that has a task whose name begins with a digit. Cluster names are DNS labels, which may
  begin with a digit (and one may be called ``budget``): hence the ``cluster-`` prefix.
- ``docs/enhanced-depends-logic.md``: ``.Failed`` is a non-0 exit code; ``.Errored`` is any other
  error (pod deleted or evicted, deadline, image pull). ``workflow/controller/dag.go``
  (evaluateDependsLogic) turns ``-`` into ``_`` in task names and evaluates ``depends`` with
  expr-lang over each task's results.
- ``workflow/controller/dag.go`` (assessDAGPhase): only a DAG's leaf tasks decide its phase, so
  failed cluster tasks ahead of ``budget`` do not fail the wave by themselves; ``budget`` does.
"""

from __future__ import annotations

from typing import Any

from hera.workflows.models import (
    Arguments,
    Artifact,
    Container,
    CronWorkflow,
    CronWorkflowSpec,
    DAGTask,
    DAGTemplate,
    Inputs,
    ObjectMeta,
    Outputs,
    Parameter,
    SecretVolumeSource,
    SuspendTemplate,
    Template,
    Volume,
    VolumeMount,
    Workflow,
    WorkflowSpec,
)

from meshops.fleet.model import LoadedFleet, Wave

API_VERSION = "argoproj.io/v1alpha1"
STATE = "/var/lib/meshops"
KUBECONFIG_DIR = "/etc/meshops/kubeconfig"


def secret_name(cluster: str) -> str:
    return f"meshops-kubeconfig-{cluster}"


def _job_template(loaded: LoadedFleet, cluster: str) -> Template:
    spec = loaded.fleet.cluster(cluster)
    argv = ["--context", spec.kube_context, "--state-dir", STATE, "--log-format", "json"]
    volumes, mounts = [], []
    if not spec.service_account:
        argv += ["--kubeconfig", f"{KUBECONFIG_DIR}/config"]
        volumes.append(Volume(name="kubeconfig", secret=SecretVolumeSource(secret_name=secret_name(cluster))))
        mounts.append(VolumeMount(name="kubeconfig", mount_path=KUBECONFIG_DIR, read_only=True))
    job = loaded.job_argv(cluster)
    if job[0] == "run":
        # The playbook travels in the image (or a mounted ConfigMap) under the same relative path.
        job = ["run", loaded.fleet.job.playbook or job[1], *job[2:]]
    return Template(
        name=f"job-{cluster}",
        service_account_name=spec.service_account or None,
        automount_service_account_token=bool(spec.service_account) or None,
        container=Container(name="main", image=loaded.fleet.image, command=["meshops"], args=[*argv, *job], volume_mounts=mounts or None),
        volumes=volumes or None,
        outputs=Outputs(artifacts=[Artifact(name="run", path=STATE, optional=True)]),
    )


def task_name(cluster: str) -> str:
    """A cluster's task in its wave's DAG (see the module docstring for why not the bare name)."""
    return f"cluster-{cluster}"


# Node phases that mean "this cluster failed" (pkg/apis/workflow/v1alpha1 NodePhase): Failed is
# a non-0 exit (meshops exits 1 or 3); Error is the pod itself failing (evicted, deleted, OOM,
# deadline), the run's outcome unknown: it counts against the budget too.
FAILED_PHASES = ("Failed", "Error")


def budget_expression(tasks: list[str]) -> str:
    """The expression tag counting the wave's failed cluster tasks.

    ``docs/variables.md`` (v3.7.18): ``{{=...}}`` is evaluated with expr-lang; ``tasks.<TASKNAME>.status``
    is the phase of a previous task; a hyphenated name must be indexed (``tasks['cluster-c1']``),
    as ``tasks.cluster-c1`` parses as a subtraction. Only ancestors are in scope
    (dag.go buildLocalScopeFromTask), so ``budget`` depends on every cluster task.
    """
    phases = ", ".join(f"'{p}'" for p in FAILED_PHASES)
    return "{{=" + " + ".join(f"(tasks['{t}'].status in [{phases}] ? 1 : 0)" for t in tasks) + "}}"


def budget_depends(tasks: list[str]) -> str:
    """``budget`` runs once every cluster task has ended, however it ended (no ``continueOn``: Argo
    refuses it beside ``depends``). Cluster tasks have no ``when``/``depends``, so they are never
    Skipped or Omitted."""
    return " && ".join(f"({t}.Succeeded || {t}.Failed || {t}.Errored)" for t in tasks)


def _wave_template(wave: Wave) -> Template:
    budget = wave.spec.max_failures
    names = [task_name(c) for c in wave.clusters]
    tasks = [DAGTask(name=n, template=f"job-{c}") for n, c in zip(names, wave.clusters, strict=True)]
    if budget:
        tasks.append(DAGTask(name="budget", template="budget", depends=budget_depends(names),
                             arguments=Arguments(parameters=[
                                 Parameter(name="failed", value=budget_expression(names)),
                                 Parameter(name="budget", value=str(budget))])))
    return Template(name=f"wave-{wave.name}", parallelism=wave.spec.max_parallel,
                    dag=DAGTemplate(fail_fast=budget == 0, tasks=tasks))


def _budget_template(image: str) -> Template:
    return Template(name="budget", inputs=Inputs(parameters=[Parameter(name="failed"), Parameter(name="budget")]),
                    container=Container(name="main", image=image, command=["test"],
                                        args=["{{inputs.parameters.failed}}", "-le", "{{inputs.parameters.budget}}"]))


def workflow_spec(loaded: LoadedFleet) -> Any:
    tasks: list[Any] = []
    templates: list[Any] = []
    previous: str | None = None

    def chain(task: Any) -> None:
        nonlocal previous
        if previous:
            task.dependencies = [previous]
        tasks.append(task)
        previous = task.name

    for wave in loaded.waves:
        if wave.spec.gate != "none":
            chain(DAGTask(name=f"approve-{wave.name}", template="approval"))
        chain(DAGTask(name=f"wave-{wave.name}", template=f"wave-{wave.name}"))
        templates.append(_wave_template(wave))
        if wave.spec.soak_seconds > 0 and wave is not loaded.waves[-1]:
            chain(DAGTask(name=f"soak-{wave.name}", template=f"soak-{wave.name}"))
            templates.append(Template(name=f"soak-{wave.name}", suspend=SuspendTemplate(duration=f"{int(wave.spec.soak_seconds)}s")))
    templates += [_job_template(loaded, c.name) for c in loaded.fleet.clusters]
    if any(w.spec.gate != "none" for w in loaded.waves):
        templates.append(Template(name="approval", suspend=SuspendTemplate()))
    if any(w.spec.max_failures for w in loaded.waves):
        templates.append(_budget_template(loaded.fleet.image))
    entry = Template(name="fleet", dag=DAGTemplate(fail_fast=True, tasks=tasks))
    return WorkflowSpec(entrypoint="fleet", templates=[entry, *templates])


def render(loaded: LoadedFleet) -> list[dict[str, Any]]:
    """The Workflow, and a CronWorkflow when the fleet has a schedule, as plain objects."""
    if not loaded.fleet.image:
        from meshops.domain.errors import BadInput

        raise BadInput("image: an Argo Workflow runs containers; give the meshops image in the fleet file")
    labels = {"app.kubernetes.io/managed-by": "meshops", "meshops.dev/fleet": loaded.name}
    docs: list[Any] = [Workflow(api_version=API_VERSION, kind="Workflow",
                                metadata=ObjectMeta(generate_name=f"fleet-{loaded.name}-", labels=labels),
                                spec=workflow_spec(loaded))]
    if loaded.fleet.schedule:
        docs.append(CronWorkflow(api_version=API_VERSION, kind="CronWorkflow",
                                 metadata=ObjectMeta(name=f"fleet-{loaded.name}", labels=labels),
                                 spec=CronWorkflowSpec(schedules=[loaded.fleet.schedule], concurrency_policy="Forbid",
                                                       workflow_spec=workflow_spec(loaded))))
    return [d.model_dump(by_alias=True, exclude_none=True, mode="json") for d in docs]
