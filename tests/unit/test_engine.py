"""Engine behaviour with test steps and a fake clock: nothing here really waits."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from meshops.domain.errors import AwaitingApproval, BadInput, Interrupted, LockHeld, RollbackFailed, RunFailed
from meshops.engine.journal import LocalStateStore, RunState
from meshops.engine.lock import FileLock
from meshops.engine.playbook import load_playbook_text, resolve_params
from meshops.engine.runner import Engine, EngineOptions, StopFlag
from tests.support.fakeclock import FakeClock


def playbook(body: str, params: str = "", on_failure: str = "rollback") -> str:
    return (
        "apiVersion: meshops.dev/v1\nkind: Playbook\nmetadata: {name: t}\n"
        f"on_failure: {on_failure}\n"
        + (f"params:\n{textwrap.indent(textwrap.dedent(params), '  ')}" if params else "")
        + "steps:\n" + textwrap.indent(textwrap.dedent(body), "  ")
    )


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = FakeClock()
        self.store = LocalStateStore(tmp / "state")
        self.stop = StopFlag()

    def engine(self, **opts: Any) -> Engine:
        return Engine(store=self.store, stop=self.stop,
                      options=EngineOptions(clock=self.clock, sleep=self.clock.sleep, **opts))

    def run(self, text: str, params: dict[str, Any] | None = None, **opts: Any):  # type: ignore[no-untyped-def]
        loaded = load_playbook_text(text, path="t.yaml")
        return self.engine(**opts).start(loaded, resolve_params(loaded.playbook, params or {}))

    def last_state(self) -> RunState:
        run_id = self.store.run_ids()[-1]
        return RunState.replay(run_id, self.store.records(run_id))

    def actions(self) -> list[str]:
        log = self.tmp / "actions.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_steps_run_in_order_and_outputs_flow_into_templates(h: Harness) -> None:
    """A later step's inputs are rendered from params and earlier outputs, keeping native types."""
    result = h.run(playbook("""
        - id: first
          uses: test.echo
          with: {value: "{{ params.names }}", count: 3}
        - id: second
          uses: test.echo
          with: {value: "{{ steps.first.outputs.value | length }} names, count {{ steps.first.outputs.count * 2 }}"}
    """, params="names: {type: list, default: [a, b]}\n"))
    assert result.status == "succeeded"
    state = h.last_state()
    assert state.steps["first"].outputs["value"] == ["a", "b"]
    assert state.steps["second"].outputs["value"] == "2 names, count 6"


def test_temporary_errors_are_retried_with_backoff_on_the_injected_clock(h: Harness) -> None:
    """Two temporary failures then success: three attempts, delays growing by the factor."""
    h.run(playbook("""
        - id: flaky
          uses: test.flaky
          with: {failures: 2}
          retries: {count: 3, backoff: 2, factor: 3, jitter: 0}
    """))
    state = h.last_state()
    assert state.status == "succeeded"
    assert state.steps["flaky"].outputs == {"attempts": 3}
    assert sum(h.clock.slept) == pytest.approx(2 + 6)


def test_retries_run_out(h: Harness, tmp_path: Path) -> None:
    """More temporary failures than retries fails the step and rolls back what ran before it."""
    with pytest.raises(RunFailed, match="after 3 attempts"):
        h.run(playbook(f"""
            - id: write
              uses: test.write_file
              with: {{path: "{tmp_path}/a"}}
            - id: flaky
              uses: test.flaky
              with: {{failures: 5}}
              retries: 2
        """))
    assert not (tmp_path / "a").exists()
    assert h.last_state().status == "rolled_back"


def test_permanent_errors_are_not_retried(h: Harness) -> None:
    """A permanent error fails at once, whatever the retry budget."""
    with pytest.raises(RunFailed):
        h.run(playbook("""
            - id: flaky
              uses: test.flaky
              with: {failures: 1, permanent: true}
              retries: 5
        """))
    assert h.last_state().steps["flaky"].attempts == 1


def test_server_requested_delay_overrides_backoff(h: Harness) -> None:
    """A TemporaryStepError with a delay (say, Retry-After) waits exactly that long."""
    h.run(playbook("""
        - id: flaky
          uses: test.flaky
          with: {failures: 1, delay: 7.5}
          retries: {count: 1, backoff: 100}
    """))
    assert sum(h.clock.slept) == pytest.approx(7.5)


def test_timeout_stops_a_step_that_takes_too_long(h: Harness) -> None:
    """A step sleeping past its timeout fails with a timeout, at the deadline on the fake clock."""
    start = h.clock()
    with pytest.raises(RunFailed, match="ran out of time"):
        h.run(playbook("""
            - id: slow
              uses: test.slow
              with: {seconds: 600}
              timeout: 90s
        """))
    assert h.clock() - start == pytest.approx(90)


def test_when_false_skips_and_is_journaled(h: Harness) -> None:
    """`when` evaluates against params; a skipped step is recorded, not run."""
    h.run(playbook("""
        - id: maybe
          uses: test.echo
          when: "{{ params.go }}"
        - id: other
          uses: test.echo
          when: not params.go
    """, params="go: {type: boolean, default: false}\n"))
    state = h.last_state()
    assert state.steps["maybe"].status == "skipped"
    assert state.steps["other"].status == "succeeded"


def test_foreach_runs_every_item_with_bounded_concurrency(h: Harness, tmp_path: Path) -> None:
    """Each item gets its own journal key; outputs come back in item order."""
    h.run(playbook(f"""
        - id: waves
          uses: test.write_file
          foreach: "{{{{ params.items }}}}"
          concurrency: 2
          with: {{path: "{tmp_path}/{{{{ item }}}}", content: "{{{{ index }}}}"}}
    """, params="items: {type: list, default: [w1, w2, w3, w4, w5]}\n"))
    state = h.last_state()
    assert [state.steps[f"waves[{i}]"].status for i in range(5)] == ["succeeded"] * 5
    assert state.steps["waves"].outputs["items"][4]["path"].endswith("w5")
    assert (tmp_path / "w3").read_text() == "2"


def test_foreach_failure_rolls_back_finished_items_in_reverse(h: Harness, tmp_path: Path) -> None:
    """One failing item: the items that finished are undone, newest first, and earlier steps too."""
    with pytest.raises(RunFailed):
        h.run(playbook(f"""
            - id: before
              uses: test.write_file
              with: {{path: "{tmp_path}/before"}}
            - id: waves
              uses: test.write_file
              foreach: ["a", "b", "/nonexistent-dir/c"]
              with: {{path: "{{{{ item if item.startswith('/') else '{tmp_path}/' + item }}}}"}}
        """))
    undos = [a for a in h.actions() if a.startswith("undo")]
    assert undos == ["undo b", "undo a", "undo before"]
    assert not any((tmp_path / n).exists() for n in ("a", "b", "before"))


def test_on_failure_freeze_keeps_everything_and_reports(h: Harness, tmp_path: Path) -> None:
    """freeze stops without undoing, names what is half-done, and resume then carries on."""
    text = playbook(f"""
        - id: write
          uses: test.write_file
          with: {{path: "{tmp_path}/kept"}}
        - id: gate
          uses: test.flaky
          with: {{failures: 1, permanent: true}}
    """, on_failure="freeze")
    with pytest.raises(RunFailed, match="frozen"):
        h.run(text)
    assert (tmp_path / "kept").exists()
    state = h.last_state()
    assert state.status == "frozen" and state.failed_step == "gate"
    # Resuming retries the failed step (its second attempt succeeds).
    result = h.engine().resume(state.run_id)
    assert result.status == "succeeded"
    assert h.actions().count("write kept created=True") == 1


def test_on_failure_continue_goes_on(h: Harness) -> None:
    """A step marked continue records its failure and the run finishes."""
    result = h.run(playbook("""
        - id: optional
          uses: test.flaky
          with: {failures: 1, permanent: true}
          on_failure: continue
        - id: after
          uses: test.echo
    """))
    assert result.status == "succeeded"
    assert h.last_state().steps["optional"].status == "failed_continued"


@pytest.mark.parametrize(("choice", "status"), [("freeze", "frozen"), ("rollback", "rolled_back")])
def test_on_failure_from_a_param(h: Harness, tmp_path: Path, choice: str, status: str) -> None:
    """A command's choice of failure policy is a param the playbook templates, not an edit of its YAML."""
    text = playbook(f"""
        - id: write
          uses: test.write_file
          with: {{path: "{tmp_path}/kept"}}
        - id: gate
          uses: test.flaky
          with: {{failures: 1, permanent: true}}
          on_failure: "{{{{ params.on_failure }}}}"
    """, params="""
        on_failure: {type: string, enum: [rollback, freeze], default: rollback}
    """)
    with pytest.raises(RunFailed):
        h.run(text, {"on_failure": choice})
    assert h.last_state().status == status
    assert (tmp_path / "kept").exists() == (choice == "freeze")


def test_on_failure_must_be_a_policy_or_a_template() -> None:
    with pytest.raises(BadInput, match="on_failure"):
        load_playbook_text(playbook("""
            - id: a
              uses: core.noop
              on_failure: explode
        """), path="bad.yaml")


def test_irreversible_steps_are_passed_over_in_rollback(h: Harness) -> None:
    """Rollback skips a step that declares itself irreversible, and says so in the journal."""
    with pytest.raises(RunFailed):
        h.run(playbook("""
            - id: one-way
              uses: test.one_way
            - id: boom
              uses: core.fail
        """))
    events = [(e["type"], e.get("step")) for e in h.last_state().events]
    assert ("undo_skipped", "one-way") in events


def test_failed_rollback_needs_a_human(h: Harness, tmp_path: Path) -> None:
    """An undo that fails stops the rollback with exit 3 semantics, leaving the rest for later."""
    with pytest.raises(RollbackFailed, match="rollback failed at stubborn"):
        h.run(playbook(f"""
            - id: write
              uses: test.write_file
              with: {{path: "{tmp_path}/f"}}
            - id: stubborn
              uses: test.undo_fails
            - id: boom
              uses: core.fail
        """))
    assert (tmp_path / "f").exists()  # not undone: the rollback stopped before it
    assert h.last_state().status == "rollback_failed"


def test_rollback_of_a_finished_run(h: Harness, tmp_path: Path) -> None:
    """`meshops rollback` undoes a run that succeeded, and a second rollback is a no-op."""
    result = h.run(playbook(f"""
        - id: a
          uses: test.write_file
          with: {{path: "{tmp_path}/a"}}
        - id: b
          uses: test.write_file
          with: {{path: "{tmp_path}/b"}}
    """))
    out = h.engine().rollback(result.run_id)
    assert out.status == "rolled_back"
    assert [a for a in h.actions() if a.startswith("undo")] == ["undo b", "undo a"]
    assert h.engine().rollback(result.run_id).message == "already rolled back"


def test_stop_request_leaves_a_resumable_run(h: Harness, tmp_path: Path) -> None:
    """A stop (SIGINT/SIGTERM) between steps ends the run as interrupted; resume finishes it."""
    text = playbook(f"""
        - id: a
          uses: test.write_file
          with: {{path: "{tmp_path}/a"}}
        - id: b
          uses: test.write_file
          with: {{path: "{tmp_path}/b"}}
    """)
    original_sleep = h.clock.sleep
    h.stop.set()
    with pytest.raises(Interrupted):
        h.run(text)
    state = h.last_state()
    assert state.status == "interrupted"
    h.stop = StopFlag()
    h.clock.sleep = original_sleep  # type: ignore[method-assign]
    assert h.engine().resume(state.run_id).status == "succeeded"
    assert (tmp_path / "b").exists()


def test_approval_gate_pauses_then_resumes_after_approve(h: Harness) -> None:
    """With nobody to ask, a gate pauses the run; after an approval record, resume goes on."""
    from meshops.engine.journal import Journal

    text = playbook("""
        - id: approve
          uses: gate.approve
          with: {message: "ship it?", timeout: 1h}
        - id: after
          uses: test.echo
    """)
    with pytest.raises(AwaitingApproval, match="meshops approve"):
        h.run(text)
    run_id = h.last_state().run_id
    assert h.last_state().status == "awaiting_approval"
    Journal(h.store, run_id).write("approved", step="approve", by="alice")
    assert h.engine().resume(run_id).status == "succeeded"
    assert h.last_state().steps["approve"].outputs == {"approved": True, "by": "meshops approve"}


def test_approval_gate_expires(h: Harness) -> None:
    """A gate resumed after its timeout applies on_timeout (fail rolls back; continue goes on)."""
    text = playbook("""
        - id: approve
          uses: gate.approve
          with: {timeout: 10m, on_timeout: continue}
        - id: after
          uses: test.echo
    """)
    with pytest.raises(AwaitingApproval):
        h.run(text)
    h.clock.sleep(11 * 60)
    run_id = h.last_state().run_id
    assert h.engine().resume(run_id).status == "succeeded"
    assert h.last_state().steps["approve"].outputs == {"approved": False, "by": "timeout"}


def test_approval_gate_waits_for_an_approval_within_wait(h: Harness) -> None:
    """A gate given `wait` polls the journal until someone approves (here: on the third look)."""
    from meshops.engine.journal import Journal

    text = playbook("""
        - id: approve
          uses: gate.approve
          with: {wait: 5m}
    """)
    looks = {"n": 0}
    real_sleep = h.clock.sleep

    def sleep(seconds: float) -> None:
        looks["n"] += 1
        if looks["n"] == 3:
            Journal(h.store, h.store.run_ids()[-1]).write("approved", step="approve", by="bob")
        real_sleep(seconds)

    h.clock.sleep = sleep  # type: ignore[method-assign]
    assert h.run(text).status == "succeeded"


def test_assume_yes_answers_gates(h: Harness) -> None:
    """--yes approves a gate without waiting."""
    result = h.run(playbook("""
        - id: approve
          uses: gate.approve
    """), assume_yes=True)
    assert result.status == "succeeded"


def test_lock_is_exclusive_and_expires(tmp_path: Path) -> None:
    """A second holder is refused while the first renews; after the duration it takes over."""
    clock = FakeClock()
    a = FileLock(tmp_path / "l", duration=30, clock=clock)
    b = FileLock(tmp_path / "l", duration=30, clock=clock)
    a.acquire("run-a")
    with pytest.raises(LockHeld, match="run-a"):
        b.acquire("run-b")
    clock.sleep(20)
    a.renew()
    clock.sleep(20)
    with pytest.raises(LockHeld):
        b.acquire("run-b")
    clock.sleep(31)
    b.acquire("run-b")
    a.release()  # not a's any more: must not free b's lock
    with pytest.raises(LockHeld, match="run-b"):
        a.acquire("run-a")


def test_secret_params_never_reach_the_journal(h: Harness) -> None:
    """A param declared secret is redacted in every journal record, and resume asks for it again."""
    text = playbook("""
        - id: use
          uses: test.echo
          with: {value: "token={{ params.token }}"}
    """, params="token: {type: string, secret: true, required: true}\n")
    loaded = load_playbook_text(text, path="t.yaml")
    h.engine().start(loaded, {"token": "s3cr3t-value-123"}, secret_params={"token"})
    raw = (h.tmp / "state" / "runs" / h.store.run_ids()[-1] / "journal.jsonl").read_text()
    assert "s3cr3t-value-123" not in raw
    assert "<redacted>" in raw


def test_plan_runs_read_only_steps_and_predicts_the_rest(h: Harness, tmp_path: Path) -> None:
    """plan changes nothing: the write step reports a create, and no file appears."""
    text = playbook(f"""
        - id: look
          uses: core.noop
          with: {{values: {{name: planned}}}}
        - id: write
          uses: test.write_file
          with: {{path: "{tmp_path}/{{{{ steps.look.outputs['values']['name'] }}}}"}}
    """)
    loaded = load_playbook_text(text, path="t.yaml")
    planned = h.engine().plan(loaded, {})
    assert planned[1].changes[0].target.endswith("/planned")
    assert not (tmp_path / "planned").exists()
    assert h.store.run_ids() == []


def test_a_dead_local_holder_is_taken_over_at_once(tmp_path: Path) -> None:
    """A lock held by a process that no longer exists on this host does not block a resume."""
    import socket
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from meshops.domain.locks import holder_identity; print(holder_identity('run-x'))"],
                          capture_output=True, text=True, check=True)
    dead = proc.stdout.strip()
    assert dead.startswith(f"run-x@{socket.gethostname()}/")
    clock = FakeClock()
    FileLock(tmp_path / "l", duration=30, clock=clock).acquire(dead)
    FileLock(tmp_path / "l", duration=30, clock=clock).acquire("run-y@elsewhere/1")
    with pytest.raises(LockHeld, match="run-y"):
        FileLock(tmp_path / "l", duration=30, clock=clock).acquire("run-z@elsewhere/2")


def test_bad_input_found_before_any_change_is_a_refusal(h: Harness) -> None:
    """A step refusing its input (BadInput) after only read-only steps ends the run as refused, nothing undone."""
    from meshops.domain.errors import BadInput

    with pytest.raises(BadInput, match="before any change: no such version"):
        h.run(playbook("""
            - id: look
              uses: core.noop
            - id: check
              uses: test.refuse
              with: {message: no such version}
        """))
    state = h.last_state()
    assert state.status == "refused"
    assert not any(e["type"] == "rollback_started" for e in state.events)


def test_bad_input_after_a_change_still_rolls_back(h: Harness, tmp_path: Path) -> None:
    """Once something changed, a refusal is a failure like any other: rolled back, exit 1."""
    with pytest.raises(RunFailed, match="rolled back"):
        h.run(playbook(f"""
            - id: write
              uses: test.write_file
              with: {{path: "{tmp_path}/w"}}
            - id: check
              uses: test.refuse
        """))
    assert not (tmp_path / "w").exists()
