"""Undo from facts, not attempts: what this run created is decided once, journaled around the action."""

from __future__ import annotations

from typing import Any

from meshops.steps.istio_install_revision import InstallRevision, InstallRevisionInputs
from meshops.steps.istio_precheck import CheckInputs, UpgradeCheck
from tests.support.canary_fixtures import FakeWorld


def _ctx(world: FakeWorld, facts: dict[str, Any]) -> Any:
    ctx = world.ctx("install")
    ctx.facts = facts  # what the engine replays from the journal into each attempt
    ctx.record_fact = facts.__setitem__
    return ctx


def _setup() -> tuple[FakeWorld, InstallRevisionInputs, dict[str, Any]]:
    world = FakeWorld(apps=2, per_ns=1)
    before = world.state()
    check = UpgradeCheck().run(CheckInputs(to="1.25.2"), world.ctx("check"))
    return world, InstallRevisionInputs(version="1.25.2", revision=check.to_revision, overlay=check.overlay), before


def test_an_install_retried_or_resumed_is_still_undone() -> None:
    """Attempt 1 installs and is cut off before its outcome is journaled; attempt 2 finds the
    revision present. The undo must still remove it (before: installed=False, istiod-NEW left)."""
    world, inputs, before = _setup()
    facts: dict[str, Any] = {}
    InstallRevision().run(inputs, _ctx(world, facts))  # outcome lost: the process was killed here
    assert facts == {"install_begun": True, "installed": True}
    second = InstallRevision().run(inputs, _ctx(world, facts))
    assert second.installed
    InstallRevision().undo(inputs, second, _ctx(world, facts))
    assert world.state() == before


def test_a_step_that_never_began_installing_never_uninstalls() -> None:
    """A revision that was there before the run is left alone by an undo of a step cut off
    before it acted (outputs None, no facts). Before: undo uninstalled it."""
    world, inputs, _ = _setup()
    InstallRevision().run(inputs, _ctx(world, {}))  # installed by some earlier run
    present = world.state()
    InstallRevision().undo(inputs, None, _ctx(world, {}))
    assert world.state() == present


def test_a_step_whose_inputs_failed_validation_is_not_undone(tmp_path: Any) -> None:
    """b's inputs render (from a's outputs, so only at run time) to something invalid: the run rolls back a (exit 1), and never
    re-renders b's bad inputs for an undo (before: rollback_failed, exit 3)."""
    import pytest

    from meshops.domain.errors import RunFailed
    from meshops.engine.journal import LocalStateStore, RunState
    from meshops.engine.playbook import load_playbook_text
    from meshops.engine.runner import Engine, EngineOptions
    from tests.unit.test_engine import playbook

    text = playbook(f"""
        - id: a
          uses: test.write_file
          with: {{path: "{tmp_path}/a"}}
        - id: b
          uses: test.write_file
          with: {{path: "{tmp_path}/b", pause: "{{{{ steps.a.outputs.path }}}}"}}
    """)
    store = LocalStateStore(tmp_path / "state")
    with pytest.raises(RunFailed, match="rolled back"):
        Engine(store=store, options=EngineOptions()).start(load_playbook_text(text, path="t.yaml"), {})
    run_id = store.run_ids()[-1]
    state = RunState.replay(run_id, store.records(run_id))
    assert state.status == "rolled_back"
    assert state.steps["a"].undo_status == "undone" and state.steps["b"].undo_status is None
    assert not (tmp_path / "a").exists()


def test_restore_refuses_anything_a_backup_would_not_hold() -> None:
    """A journal backup edited in the cluster ConfigMap cannot make meshops create what it names
    (before: restore() created any apiVersion/kind it was given, with the operator's RBAC)."""
    import pytest

    from meshops.domain.errors import PermanentStepError
    from meshops.ops.istio_common import restore

    world = FakeWorld()
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "pwned"}, "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}
    evil = [
        {"ref": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "name": "pwned",
                 "namespace": None}, "object": binding},
        # A ref that looks like a webhook, carrying another kind of object.
        {"ref": {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                 "name": "istio-sidecar-injector", "namespace": None}, "object": binding},
    ]
    for entry in evil:
        writes = len(world.kube.writes)
        with pytest.raises(PermanentStepError, match="refusing to restore"):
            restore(world.kube, [entry])
        assert world.kube.writes[writes:] == []


def test_a_temporary_failure_in_an_undo_is_retried_and_the_rollback_finishes(tmp_path: Any) -> None:
    """Found by bench/chaos.py: one 5xx during an undo ended the rollback as rollback_failed (exit 3)."""
    import pytest

    from meshops.domain.errors import RunFailed
    from meshops.engine.journal import LocalStateStore, RunState
    from meshops.engine.playbook import load_playbook_text
    from meshops.engine.runner import Engine, EngineOptions
    from tests.support.fakeclock import FakeClock
    from tests.unit.test_engine import playbook

    text = playbook(f"""
        - id: a
          uses: test.undo_flaky
          with: {{marker: "{tmp_path}/m", failures: 2}}
        - id: b
          uses: core.fail
    """)
    store = LocalStateStore(tmp_path / "state")
    clock = FakeClock()
    with pytest.raises(RunFailed, match="rolled back"):
        Engine(store=store, options=EngineOptions(clock=clock, sleep=clock.sleep)).start(
            load_playbook_text(text, path="t.yaml"), {})
    state = RunState.replay(store.run_ids()[-1], store.records(store.run_ids()[-1]))
    assert state.status == "rolled_back" and state.steps["a"].undo_status == "undone"
    assert clock.slept  # it waited between tries, on the injected clock


def test_an_istioctl_conflict_is_temporary() -> None:
    """Found by bench/chaos.py: istioctl's "the object has been modified" (a 409) in an uninstall was
    permanent, so one conflict ended the rollback with exit 3; it is retried now."""
    import pytest

    from meshops.domain.errors import TemporaryStepError
    from meshops.drivers.istioctl_api import IstioctlFailed, IstioctlResult
    from meshops.ops.istio_common import run_istioctl

    class Conflicted:
        path, version = "istioctl", "1.25.2"

        def run(self, args: Any, **kw: Any) -> IstioctlResult:
            raise IstioctlFailed(IstioctlResult(
                argv=("istioctl", *args), exit_code=1, stdout="",
                stderr="Error: Operation cannot be fulfilled on configmaps \"istio-1-25-2\": the object has been "
                       "modified; please apply your changes to the latest version and try again"))

    with pytest.raises(TemporaryStepError):
        run_istioctl(Conflicted(), ["uninstall", "-y", "--revision", "1-25-2"])  # type: ignore[arg-type]
