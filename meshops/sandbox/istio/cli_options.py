"""The `meshops sandbox` flags and command this part adds: Istio, scenarios, faults.

`sandbox up` folds the flags into the JSON options its extensions receive (see setup.py);
`sandbox fault` talks to a running sandbox's fault control endpoint. Heavy imports stay
inside the functions so `meshops --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

ISTIO_EXTENSION = "meshops.sandbox.istio.setup:configure"


def istio_flags(fn: Any) -> Any:
    for option in reversed([
        click.option("--istio", "istio_version", default=None, metavar="VERSION",
                     help="Install this Istio at start (e.g. 1.24.1); DIR/bin/istioctl is that version."),
        click.option("--istio-versions", default=None, metavar="V1,V2",
                     help="Also write DIR/bin/istioctl-<version> for each of these versions."),
        click.option("--unrevisioned", is_flag=True, default=False, help="Install Istio without a revision (istiod)."),
        click.option("--revision", default=None, metavar="NAME", help="Install Istio as revision NAME (istiod-NAME)."),
        click.option("--scenario", default=None, metavar="NAME|FILE",
                     help="default, revisioned, blue-green, fleet-200, istioctl-plain, fleet (c1..c6 each with the default mesh; --clusters picks others), or a multi-document YAML file applied after start."),
        click.option("--faults", "faults_file", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="YAML file of faults to inject at start (see `sandbox fault --help`)."),
    ]):
        fn = option(fn)
    return fn


def fold_istio_flags(ctx: click.Context, names: list[str], options_json: str | None,
                     flags: dict[str, Any]) -> tuple[list[str], str | None]:
    """Validate the flags and merge them into (cluster names, options JSON) for `serve`."""
    opts: dict[str, Any] = json.loads(options_json) if options_json else {}
    version = flags.get("istio_version")
    versions = [v.strip() for v in (flags.get("istio_versions") or "").split(",") if v.strip()]
    if flags.get("unrevisioned") and flags.get("revision"):
        raise click.BadParameter("use --unrevisioned or --revision, not both")
    scenario_name = flags.get("scenario")
    if scenario_name:
        from meshops.sandbox import scenarios

        try:
            scenario = scenarios.load(scenario_name)
        except scenarios.ScenarioError as e:
            raise click.BadParameter(str(e), param_hint="--scenario") from None
        if Path(scenario_name).is_file():
            scenario_name = str(Path(scenario_name).resolve())
        opts["scenario"] = scenario_name
        source = ctx.get_parameter_source("clusters")
        if scenario.clusters and source == click.core.ParameterSource.DEFAULT:
            names = list(scenario.clusters)
    if version or versions:
        from meshops.sandbox.istio.versions import IstioVersion, UnsupportedVersion

        for v in [version, *versions]:
            if v:
                try:
                    IstioVersion.parse(v)
                except UnsupportedVersion as e:
                    raise click.BadParameter(str(e), param_hint="--istio/--istio-versions") from None
    if version:
        opts["istio"] = version
    if versions:
        opts["istio_versions"] = versions
    if flags.get("unrevisioned"):
        opts["unrevisioned"] = True
    if flags.get("revision"):
        from meshops.sandbox.istio.versions import valid_revision

        if not valid_revision(flags["revision"]):
            raise click.BadParameter("invalid revision specified: a DNS-1123 label (no dots)", param_hint="--revision")
        opts["revision"] = flags["revision"]
    if flags.get("faults_file"):
        from meshops.sandbox import faults

        try:
            found = faults.load_file(flags["faults_file"], default_cluster=names[0])
        except (faults.FaultError, OSError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="--faults") from None
        unknown = sorted({f.cluster for f in found} - set(names))
        if unknown:
            raise click.BadParameter(f"names cluster(s) {', '.join(unknown)} not in {', '.join(names)}",
                                     param_hint="--faults")
        opts["faults_file"] = str(Path(flags["faults_file"]).resolve())
    return names, (json.dumps(opts) if opts else options_json)


@click.command("fault")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--cluster", default=None, help="Cluster the faults apply to (required to add).")
@click.option("--clear", is_flag=True, help="Remove active faults (of --cluster, or all).")
@click.option("--list", "list_", is_flag=True, help="Show active faults.")
@click.argument("specs", nargs=-1)
def fault_command(directory: Path, cluster: str | None, clear: bool, list_: bool, specs: tuple[str, ...]) -> None:
    """Inject faults into a running sandbox, or clear them.

    \b
    SPEC is KIND[:key=value,...]:
      proxy-not-ready:revision=R         proxies of revision R never become Ready
      ingress-503[:share=0.5]            the cluster's ingress answers 503
      api-error:code=500|429|409[,rate=0.2][,retry-after=2][,resource=pods][,verbs=get+list]
      api-latency:ms=200[,rate=1]        added API latency
      watch-cut:after=N[,abrupt=true]    watch streams end after N events
      node-not-ready:node=NAME           a node goes NotReady; its pods lose Ready
    Every change is written to the cluster's audit log (verb fault-added / fault-cleared).
    """
    from meshops.sandbox import faults

    state_path = directory.resolve() / "state.json"
    try:
        url = json.loads(state_path.read_text())["faults"]["url"]
    except (OSError, ValueError, KeyError):
        raise click.ClickException(f"no running sandbox with faults in {directory} (no faults URL in {state_path})") from None
    try:
        if clear:
            if specs:
                raise click.UsageError("--clear takes no SPEC")
            removed = faults.clear(url, cluster)
            click.echo(f"cleared {len(removed)} fault(s)")
        elif list_ or not specs:
            for f in faults.listing(url):
                click.echo(f"{f['id']}\t{f['cluster']}\t{faults.Fault(**f).describe()}")
        else:
            if not cluster:
                raise click.UsageError("--cluster is required to add faults")
            for f in faults.send(url, cluster, list(specs)):
                click.echo(f"fault {f['id']} on {f['cluster']}: {faults.Fault(**f).describe()}")
    except faults.FaultError as e:
        raise click.BadParameter(str(e), param_hint="SPEC") from None
    except OSError as e:
        raise click.ClickException(f"cannot reach the sandbox at {url}: {e}") from None
