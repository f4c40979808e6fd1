"""What a run will need, checked for real before anything changes (``--dry-run`` and every run).

A plan that only validates its input says yes to ``--prometheus http://127.0.0.1:1``; the real
run then installs a revision, restarts a wave and rolls back at its first gate. So before the
first change: Prometheus answers and every gate is evaluated once (its result shown), every
probe URL resolves and answers, and for DNS work the AWS identity is known. A failure is exit 2,
with every problem listed. A gate that is merely false now is reported, not refused: it may be
written to hold only once traffic flows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from meshops.cli import output
from meshops.domain.errors import BadInput

if TYPE_CHECKING:
    from meshops.drivers.api import Drivers, DriverSettings
    from meshops.drivers.aws_session import AwsSession

# Upgrade gates are written per wave ({namespaces}); before the first wave, all namespaces.
ALL_NAMESPACES = ".+"


def check_gates(drivers: Drivers, prometheus: str, exprs: Sequence[str]) -> list[str]:
    """Each gate evaluated once; problems for an unreachable Prometheus or a query it rejects."""
    if not exprs or not prometheus:
        return []
    from meshops.drivers.prometheus_api import NoData
    from meshops.ops.health import check_promql

    client = drivers.prometheus(prometheus)  # the run's own client: the same URL's token
    problems = []
    for expr in exprs:
        concrete = check_promql(expr.replace("{namespaces}", ALL_NAMESPACES))
        try:
            samples = list(client.query(concrete))
        except NoData:
            samples = []  # answered; nothing matches now
        except Exception as exc:  # DriverError and BadQuery: unreachable, refused, not PromQL
            problems.append(f"--prometheus {prometheus}: {getattr(exc, 'message', exc)}")
            if "reach" in str(exc) or "connect" in str(exc).lower():
                break  # the server is not there: one line says it
            continue
        # As the gate judges it: the condition holds when it returns at least one series.
        ok = bool(samples)
        detail = f"{len(samples)} series hold" if ok else "no series: the condition is false now (or no data yet)"
        output.notice(f"gate {'holds' if ok else 'does not hold now'}: {' '.join(expr.split())[:100]}: {detail}",
                      event="dryrun.gate", level="info" if ok else "warning", gate=expr, ok=ok, detail=detail)
    return problems


def check_probes(drivers: Drivers, urls: Sequence[str], *, timeout: float = 5.0) -> list[str]:
    """Each probe URL resolved and hit once, as the gates will."""
    if not urls:
        return []
    prober = drivers.http()
    problems = []
    for url in urls:
        result = prober.probe(url, timeout=timeout, expect_status=(200, 399), expect_text=None)
        output.notice(f"probe {url}: {'HTTP ' + str(result.status) if result.ok else result.error}",
                      event="dryrun.probe", level="info" if result.ok else "warning", url=url, ok=result.ok)
        if not result.ok:
            problems.append(f"--probe {url}: {result.error}")
    return problems


def check_aws_identity(settings: DriverSettings, aws: AwsSession | None = None) -> list[str]:
    from meshops.drivers.aws_identity import caller_identity

    try:
        who = caller_identity(profile=settings.aws_profile, region=settings.aws_region, aws=aws)
    except BadInput as exc:
        return [str(exc)]
    output.notice(f"AWS identity {who.arn} (account {who.account})", event="dryrun.aws_identity",
                  account=who.account, arn=who.arn)
    return []


def require(problems: list[str], what: str) -> None:
    if problems:
        raise BadInput(f"{what} cannot start; nothing was changed:\n  - " + "\n  - ".join(problems))


def upgrade(drivers: Drivers, params: dict[str, Any]) -> None:
    problems = check_gates(drivers, str(params.get("prometheus") or ""), list(params.get("gates") or []))
    problems += check_probes(drivers, list(params.get("probes") or []))
    require(problems, "the upgrade")
