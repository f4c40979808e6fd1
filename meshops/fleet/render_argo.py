"""The fleet as an Argo Workflow (and a CronWorkflow when it has a schedule), built from hera's
typed models of Argo's API rather than from text templates.

Shape: the entrypoint DAG chains, per wave, an optional approval (a ``suspend`` template:
``argo resume`` is the approval), the wave, and an optional soak (a ``suspend`` with a
duration). A wave is a DAG template with ``parallelism`` = ``max_parallel`` and one task per
cluster; ``failFast`` when its failure budget is 0. Argo has no failure *count* budget: a wave
with a budget above 0 lets every cluster task finish (``continueOn.failed``) and a last task
counts the failed ones from the tasks' statuses. Each cluster task runs the meshops image with
the cluster's kubeconfig Secret (``meshops-kubeconfig-<cluster>``, key ``config``) or, for a
cluster that names a ``service_account``, in-cluster under it; its state directory (journal and
report) is the task's output artifact.
"""

from __future__ import annotations

from typing import Any

from hera.workflows.models import (
    Arguments,
    Artifact,
    Container,
    ContinueOn,
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


def _wave_template(wave: Wave) -> Template:
    budget = wave.spec.max_failures
    tasks = [DAGTask(name=c, template=f"job-{c}", continue_on=ContinueOn(failed=True) if budget else None)
             for c in wave.clusters]
    if budget:
        # Fails the wave once more clusters failed than its budget allows.
        failed = " + ".join(f"(tasks['{c}'].status == 'Failed' ? 1 : 0)" for c in wave.clusters)
        tasks.append(DAGTask(name="budget", template="budget", depends=" && ".join(f"({c}.Succeeded || {c}.Failed)" for c in wave.clusters),
                             arguments=Arguments(parameters=[
                                 Parameter(name="failed", value=f"{{{{=({failed})}}}}"),
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
