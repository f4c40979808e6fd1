"""Runs a playbook: steps in order, journaled, retried, timed out, waved, rolled back.

Every decision the engine makes is recorded before it acts on it, so a run that is
killed at any instant can be resumed (``meshops resume``) or rolled back
(``meshops rollback``) from its journal alone.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import structlog
from pydantic import ValidationError

from meshops.domain import redact
from meshops.domain.errors import (
    AwaitingApproval,
    BadInput,
    DriverError,
    ExitCode,
    Interrupted,
    LockHeld,
    MeshopsError,
    RunFailed,
    StepError,
)
from meshops.domain.locks import LockLost
from meshops.domain.runlog import RunStatus, StepStatus
from meshops.drivers.api import Drivers, NoDrivers
from meshops.engine import run_secrets, templating
from meshops.engine.failure import blank, half_done, nothing_changed, on_failure_policy, settle_finished
from meshops.engine.fencing import Fence, FencedDrivers
from meshops.engine.journal import Journal, MirrorFailed, RunState, StateStore, new_run_id
from meshops.engine.lock import LockRenewer, RunLock, holder_identity
from meshops.engine.planning import plan_run
from meshops.engine.playbook import LoadedPlaybook, StepSpec, load_playbook_text
from meshops.engine.preflight import preflight
from meshops.engine.runtypes import (
    EngineOptions,
    JournalApprovals,
    PlannedStep,
    RunResult,
    StepFailed,
    StopFlag,
)
from meshops.engine.undo import roll_back
from meshops.ops.context import RunCache
from meshops.steps import registry
from meshops.steps.base import Approvals, Step, StepContext, StepInputs, StepOutputs

__all__ = ["Engine", "EngineOptions", "PlannedStep", "RunResult", "StepFailed", "StopFlag"]

log = structlog.get_logger("meshops.engine")


class Engine:
    def __init__(
        self,
        *,
        store: StateStore,
        drivers: Drivers | None = None,
        lock: RunLock | None = None,
        options: EngineOptions | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self.store = store
        # Without drivers (engine tests, local-only playbooks) a step that reaches out fails clearly.
        self.drivers: Drivers = drivers if drivers is not None else NoDrivers()
        self.lock = lock
        self.opts = options or EngineOptions()
        self.stop = stop or StopFlag()
        self.secrets = redact.SecretRegistry(parent=redact.CREDENTIALS)
        self.secret_params: set[str] = set()
        self.fence = Fence(clock=self.opts.monotonic)
        self._temp_dir: str | None = None
        # What the run's steps share in memory (ops.context.RunCache): one per run, never global.
        self.run_cache = RunCache()

    # ---- entry points ---------------------------------------------------------------------

    def start(self, loaded: LoadedPlaybook, params: dict[str, Any], *, secret_params: set[str] | None = None) -> RunResult:
        run_id = new_run_id(loaded.playbook.metadata.name, self.opts.clock())
        self._new_secrets(params, secret_params or set())
        public = {k: v for k, v in params.items() if k not in (secret_params or set())}
        try:
            preflight(loaded, params)  # before the lock and the journal: bad input writes nothing
        except BadInput as exc:
            run_secrets.scrub_error(exc, self.secrets)
            raise

        # The run is born before it takes the lock, whole (playbook and first record together,
        # locally only): a kill at any moment after the lock is held leaves a run that resume and
        # rollback can read. A run refused with exit 4 is discarded and leaves nothing behind.
        journal = self._journal(run_id)
        started = journal.record("run_started", playbook=loaded.path, name=loaded.playbook.metadata.name,
                                 params=public, hidden_params=sorted(secret_params or ()))
        self.store.create_run(run_id, playbook_text=loaded.source.text, playbook_path=loaded.path, first=[started])

        def begin() -> RunResult:
            if self.opts.on_started is not None:
                self.opts.on_started(run_id)
            return self._execute(run_id, loaded, params, journal, RunState(run_id=run_id))

        try:
            return self._locked(run_id, begin)
        except LockHeld:
            self.store.discard_run(run_id)
            raise

    def resume(self, run_id: str, *, secret_values: dict[str, Any] | None = None) -> RunResult:
        state, loaded, params = self._reload(run_id, secret_values)
        if state.status == "succeeded":
            settle_finished(self.store, self.lock, run_id)
            return RunResult(run_id=run_id, status="succeeded", message="already finished")
        if state.status in ("rolled_back", "rolling_back", "rollback_failed", "abandoned"):
            raise BadInput(f"run {run_id} is {state.status.replace('_', ' ')}; it cannot be resumed "
                           f"(to finish a rollback: meshops rollback {run_id})")
        journal = self._journal(run_id)

        def go() -> RunResult:
            # Journaled under the lock: a resume refused with exit 4 leaves no trace.
            journal.write("run_resumed", previous_status=state.status)
            return self._execute(run_id, loaded, params, journal, state)

        return self._locked(run_id, go)

    def rollback(self, run_id: str, *, secret_values: dict[str, Any] | None = None) -> RunResult:
        state, loaded, params = self._reload(run_id, secret_values)
        if state.status == "rolled_back":
            settle_finished(self.store, self.lock, run_id)
            return RunResult(run_id=run_id, status="rolled_back", message="already rolled back")
        journal = self._journal(run_id)

        def go() -> RunResult:
            ctx = self._template_context(run_id, params, state)
            return roll_back(self, run_id, loaded, ctx, journal, state, cause="requested")

        return self._locked(run_id, go)

    def abandon(self, run_id: str, *, reason: str, by: str) -> str:
        """Give up RUN_ID: journal who and why, and release the lock it keeps while paused.

        Its changes stay as they are (``meshops rollback RUN_ID`` can still undo them).
        """
        if not reason.strip():
            raise BadInput("--reason is required: say why the run is abandoned (it is journaled)")
        state = RunState.replay(run_id, self.store.records(run_id))
        if state.status == RunStatus.UNKNOWN:
            raise BadInput(f"no run {run_id} (see: meshops runs list)")
        journal = self._journal(run_id)
        journal.strict = False
        journal.write("run_abandoned", reason=reason, by=by, previous_status=str(state.status))
        released = self.lock.abandon(run_id) if self.lock is not None else False
        return f"{run_id} abandoned (was {state.status}); lock {'released' if released else 'not held by it'}"

    # ---- plumbing -------------------------------------------------------------------------

    def _new_secrets(self, params: dict[str, Any], names: set[str]) -> None:
        self.secrets = run_secrets.new_registry(params, names)
        self.secret_params = set(names)

    def _journal(self, run_id: str) -> Journal:
        return Journal(self.store, run_id, wall=self.opts.clock, secrets=self.secrets)

    def _reload(self, run_id: str, secret_values: dict[str, Any] | None) -> tuple[RunState, LoadedPlaybook, dict[str, Any]]:
        sync = getattr(self.store, "sync", None)
        if sync is not None:
            sync(run_id)  # a mirror left behind by a failed write is brought level first
        records = self.store.records(run_id)
        state = RunState.replay(run_id, records)
        if state.status == RunStatus.UNKNOWN:
            # Its directory made, killed before its first record: no params, so neither its steps
            # nor the locks it took (a switchover's record lock and source Lease) can be known. A
            # rollback used to "succeed" here, under the default Lease only, and leave those held.
            raise BadInput(f"run {run_id} never started (it stopped before its first journal record): "
                           "nothing to resume or roll back; start it again (its locks are taken over)")
        loaded = load_playbook_text(self.store.playbook_text(run_id), path=state.playbook or f"{run_id}/playbook.yaml")
        params = dict(state.params)
        self._new_secrets(params, set(state.hidden_params))
        for name in state.hidden_params:
            value = (secret_values or {}).get(name)
            if value is None:
                raise BadInput(f"run {run_id} needs the secret param {name!r} again (it is never journaled): "
                               f"pass --var {name}=... or set MESHOPS_PARAM_{name.upper()}")
            run_secrets.register(self.secrets, value)
            params[name] = value
        return state, loaded, params

    def _locked(self, run_id: str, body: Callable[[], RunResult]) -> RunResult:
        self.run_cache = RunCache()  # start, resume and rollback each begin with nothing remembered
        try:
            with redact.activated(self.secrets):
                return self._locked_body(run_id, body)
        except MeshopsError as exc:
            run_secrets.scrub_error(exc, self.secrets)
            raise

    def _locked_body(self, run_id: str, body: Callable[[], RunResult]) -> RunResult:
        if self.lock is None:
            return body()
        lock = self.lock
        lock.acquire(holder_identity(run_id))
        # Renewals come every quarter of the lease; unrenewed for 80 % of it and another runner
        # may soon take it over: stop writing before it can (the rest is margin for clock skew
        # between runners). Real elapsed time, as the lease's.
        self.fence = Fence(clock=self.opts.monotonic, duration=lock.duration * 0.8, verify=lock.verify)

        def renew_failed(exc: Exception) -> None:
            log.warning("lock.renew_failed", run_id=run_id, error=str(exc))
            if isinstance(exc, LockLost):
                self.fence.lose(exc.message)  # another holder: stop at once

        renewer = LockRenewer(lock, on_error=renew_failed, on_renewed=self.fence.renewed)
        renewer.start()
        paused = False
        try:
            return body()
        except Interrupted:
            paused = True  # exit 130: the run keeps its lock, marked paused with its id
            raise
        finally:
            renewer.stop()
            if paused and self.fence.lost is None:
                lock.pause(run_id)
            else:
                lock.release()

    def _regain(self, run_id: str, journal: Journal) -> bool:
        """After losing the lock: take it back if it is free again (then a rollback may write)."""
        if self.lock is None:
            return True
        self.fence.verify_now()  # a step may have failed because someone else has the lock
        if self.fence.lost is None:
            return True
        reason = self.fence.lost
        try:
            self.lock.acquire(holder_identity(run_id))
        except MeshopsError as exc:
            journal.write("lock_lost", reason=reason, regained=False, error=exc.message)
            return False
        journal.write("lock_lost", reason=reason, regained=True)
        self.fence.reset()
        return True

    def _template_context(self, run_id: str, params: dict[str, Any], state: RunState) -> dict[str, Any]:
        steps: dict[str, Any] = {}
        for key, s in state.steps.items():
            if "[" not in key and s.status in ("succeeded", "skipped", "failed_continued"):
                steps[key] = {"outputs": s.outputs or {}, "status": s.status}
        return {"params": params, "steps": steps, "run": {"id": run_id}}

    def _step_type(self, spec: StepSpec) -> Step[Any, Any]:
        cls = registry.get(spec.uses)
        if cls is None:
            raise BadInput(f"unknown step type {spec.uses}")
        return cls()

    def _render_inputs(self, spec: StepSpec, step: Step[Any, Any], ctx: dict[str, Any], key: str) -> StepInputs:
        try:
            rendered = templating.render_value(spec.with_, ctx)
            # A value computed from a secret (`{{ params.token | upper }}`) is a secret too.
            # One that still shows the secret as is is already caught where it appears.
            for value in templating.derived_from(spec.with_, rendered, self.secret_params):
                if self.secrets.scrub_text(str(value)) == str(value):
                    self.secrets.add(value)
            return step.Inputs.model_validate(rendered)
        except templating.TemplateError as exc:
            raise StepFailed(key, f"inputs: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise StepFailed(key, f"with.{where}: {first['msg']}") from None

    def _make_ctx(self, run_id: str, spec: StepSpec, key: str, item: Any, attempt: int, deadline: float | None,
                  first_started: float | None = None, journal: Journal | None = None,
                  facts: dict[str, Any] | None = None, drivers: Drivers | None = None) -> StepContext:
        approvals: Approvals = JournalApprovals(self.store, run_id, self.opts.sleep, self.opts.clock)
        progress = self.opts.progress(key) if self.opts.progress else None
        ctx = StepContext(
            run_id=run_id, step_id=spec.id, step_key=key, attempt=attempt, item=item,
            log=log.bind(run_id=run_id, step=key, attempt=attempt),
            clock=self.opts.clock, sleep_fn=self.opts.sleep, deadline=deadline,
            stop_requested=self.stop, drivers=drivers or self._fenced_drivers(), approvals=approvals,
            interactive=self.opts.interactive, assume_yes=self.opts.assume_yes,
            first_started=first_started, confirm=self.opts.confirm,
        )
        if progress is not None:
            ctx.progress = progress
        ctx.facts = dict(facts or {})
        ctx.temp_dir = self._temp_dir
        ctx.cache = self.run_cache
        ctx.fence = self.fence.check
        if journal is not None:
            def record_fact(name: str, value: Any) -> None:
                # Durable before the step goes on: a retry, resume or rollback decides from it.
                journal.write("fact", step=key, name=name, value=value)
                ctx.facts[name] = value
            ctx.record_fact = record_fact
        return ctx

    def _fenced_drivers(self) -> Any:
        return self.drivers if self.lock is None or self.drivers is None else FencedDrivers(self.drivers, self.fence)

    # ---- forward execution ----------------------------------------------------------------

    def _fresh_temp_dir(self, run_id: str) -> None:
        """The run's temp directory, emptied: files a killed session left behind go now."""
        make = getattr(self.store, "temp_dir", None)
        d = make(run_id) if make is not None else None
        if d is None:
            self._temp_dir = None
            return
        for leftover in d.iterdir():
            if leftover.is_file() or leftover.is_symlink():
                leftover.unlink(missing_ok=True)
            elif leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        self._temp_dir = str(d)

    def _execute(self, run_id: str, loaded: LoadedPlaybook, params: dict[str, Any], journal: Journal, state: RunState) -> RunResult:
        pb = loaded.playbook
        self._fresh_temp_dir(run_id)
        ctx = self._template_context(run_id, params, state)
        bound = log.bind(run_id=run_id, playbook=pb.metadata.name)
        bound.info("run.start", steps=len(pb.steps), resumed=bool(state.steps))
        for spec in pb.steps:
            if state.done(spec.id):
                continue
            if self.stop():
                return self._interrupted(journal, run_id, spec.id, None)
            try:
                if not templating.evaluate_condition(spec.when, ctx):
                    journal.write("step_skipped", step=spec.id, reason="when is false")
                    ctx["steps"][spec.id] = {"outputs": {}, "status": "skipped"}
                    continue
                outputs = self._run_step(run_id, spec, ctx, journal, state)
                ctx["steps"][spec.id] = {"outputs": outputs, "status": "succeeded"}
            except Interrupted as exc:
                return self._interrupted(journal, run_id, spec.id, exc)
            except (StepFailed, templating.TemplateError, LockLost, MirrorFailed) as exc:
                reason = exc.reason if isinstance(exc, StepFailed) else exc.message if isinstance(exc, MeshopsError) else str(exc)
                key = exc.key if isinstance(exc, StepFailed) else spec.id
                if not self._regain(run_id, journal):
                    # Another run has the lock now: undoing would fight it. Stop, say so, exit 1.
                    journal.write("step_failed", step=spec.id, error=reason)
                    msg = (f"{key} stopped: {reason}; this run lost its lock and cannot roll back "
                           f"while another holds it. Half-done: {half_done(self.store, run_id)}")
                    journal.write("run_finished", status="frozen", failed_step=spec.id, message=msg)
                    raise RunFailed(f"run {run_id}: {msg}\n  next: `meshops rollback {run_id}` once the lock is free") from None
                if isinstance(exc, StepFailed) and exc.refused and nothing_changed(self.store, run_id, pb):
                    journal.write("step_failed", step=spec.id, error=reason)
                    journal.write("run_finished", status="refused", failed_step=spec.id, message=reason)
                    raise BadInput(f"run {run_id} refused at {key}, before any change: {reason}",
                                   hint=exc.hint if isinstance(exc, StepFailed) else None) from None
                policy = on_failure_policy(spec, pb.on_failure, ctx)
                bound.error("step.failed", step=key, error=reason, on_failure=policy)
                if policy == "continue":
                    journal.write("step_failed", step=spec.id, error=reason, continued=True)
                    ctx["steps"][spec.id] = {"outputs": {}, "status": "failed_continued"}
                    state.steps.setdefault(spec.id, blank(spec.id)).status = StepStatus.FAILED_CONTINUED
                    continue
                journal.write("step_failed", step=spec.id, error=reason)
                if policy == "freeze":
                    msg = f"{key} failed: {reason}; frozen as the playbook says. Half-done: {half_done(self.store, run_id)}"
                    journal.write("run_finished", status="frozen", failed_step=spec.id, message=msg)
                    raise RunFailed(f"run {run_id}: {msg}\n  next: fix it, then `meshops resume {run_id}`, "
                                    f"or `meshops rollback {run_id}`") from None
                fresh = RunState.replay(run_id, self.store.records(run_id))
                result = roll_back(self, run_id, loaded, ctx, journal, fresh, cause=f"{key} failed: {reason}")
                raise RunFailed(f"run {run_id}: {key} failed: {reason}; rolled back ({result.message})") from None
        journal.write("run_finished", status="succeeded")
        bound.info("run.done", status="succeeded")
        return RunResult(run_id=run_id, status="succeeded")

    def _interrupted(self, journal: Journal, run_id: str, step_id: str, exc: Interrupted | None) -> RunResult:
        status = exc.status if exc is not None else "interrupted"
        msg = exc.message if isinstance(exc, AwaitingApproval) else f"interrupted at {step_id}; resume with: meshops resume {run_id}"
        extra = {"waiting_gate": exc.step_key} if isinstance(exc, AwaitingApproval) else {}
        journal.write("run_finished", status=status, failed_step=step_id, message=msg, **extra)
        if isinstance(exc, AwaitingApproval):
            raise exc
        raise Interrupted(msg)

    def _run_step(self, run_id: str, spec: StepSpec, ctx: dict[str, Any], journal: Journal, state: RunState) -> Any:
        step = self._step_type(spec)
        if spec.foreach is None:
            return self._attempts(run_id, spec, step, spec.id, None, ctx, journal, state)
        items = templating.render_value(spec.foreach, ctx)
        if not isinstance(items, list):
            raise StepFailed(spec.id, f"foreach must give a list, got {type(items).__name__}")
        concurrency = templating.render_value(spec.concurrency, ctx)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise StepFailed(spec.id, f"concurrency must be a whole number >= 1, got {concurrency!r}")
        journal.write("foreach_started", step=spec.id, items=len(items), concurrency=concurrency)
        results: list[Any] = [None] * len(items)
        pending = []
        for i, item in enumerate(items):
            key = f"{spec.id}[{i}]"
            if state.done(key):
                results[i] = state.steps[key].outputs
            else:
                pending.append((i, item, key))
        failure: StepFailed | Interrupted | None = None
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=spec.id) as pool:
            running: dict[Future[Any], int] = {}
            queue = list(pending)
            while queue or running:
                while queue and len(running) < concurrency and failure is None and not self.stop():
                    i, item, key = queue.pop(0)
                    item_ctx = {**ctx, "item": item, "index": i}
                    running[pool.submit(self._attempts, run_id, spec, step, key, item, item_ctx, journal, state)] = i
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = running.pop(fut)
                    try:
                        results[i] = fut.result()
                    except (StepFailed, Interrupted) as exc:
                        failure = failure or exc
        if failure is not None:
            raise failure
        if self.stop():
            raise Interrupted(f"stopped during {spec.id}")
        outputs = {"items": results}
        journal.write("step_succeeded", step=spec.id, outputs=outputs)
        return outputs

    def _attempts(self, run_id: str, spec: StepSpec, step: Step[Any, Any], key: str, item: Any,
                  ctx: dict[str, Any], journal: Journal, state: RunState) -> Any:
        inputs = self._render_inputs(spec, step, ctx, key)
        timeout = spec.timeout_seconds(templating.render_value(spec.timeout, ctx) if spec.timeout else None)
        policy = spec.retry_policy
        previous = state.steps.get(key)
        attempt = (previous.attempts if previous else 0) + 1
        first_attempt = attempt
        first_started = previous.started if previous and previous.started else self.opts.clock()
        while True:
            deadline = None if timeout is None else self.opts.clock() + timeout
            facts = {**(previous.facts if previous else {}), **(state.steps[key].facts if key in state.steps else {})}
            sctx = self._make_ctx(run_id, spec, key, item, attempt, deadline, first_started, journal=journal, facts=facts)
            facts_seen = sctx.facts
            dumped_inputs = inputs.model_dump(mode="json")
            if not step.side_effect_free:
                self.fence.check()
                journal.write("step_started", step=key, attempt=attempt, inputs=dumped_inputs)
            sctx.log.info("step.start", uses=spec.uses)
            try:
                result = step.run(inputs, sctx)
                if not isinstance(result, StepOutputs):
                    raise StepError(f"{spec.uses} returned {type(result).__name__}, not its Outputs", temporary=False)
                outputs: Any = result.model_dump(mode="json")
            except Interrupted:
                raise
            except (StepError, DriverError) as exc:
                if exc.exit_code == ExitCode.BAD_INPUT:
                    # A driver that never reached its system (an API server that never answered)
                    # cannot have changed anything: a refusal, like bad input.
                    journal.write("attempt_failed", step=key, attempt=attempt, error=exc.message, temporary=False)
                    raise StepFailed(key, exc.message, refused=True, hint=exc.hint) from None
                temporary, delay, message = exc.temporary, getattr(exc, "delay", None), exc.message
            except BadInput as exc:
                journal.write("attempt_failed", step=key, attempt=attempt, error=exc.message, temporary=False)
                raise StepFailed(key, exc.message, refused=True, hint=exc.hint) from None
            except MeshopsError as exc:
                temporary, delay, message = False, None, exc.message
            except Exception as exc:  # a bug in a step; fail it permanently, keep the type for the journal
                temporary, delay, message = False, None, f"{type(exc).__name__}: {exc}"
                sctx.log.error("step.crashed", error=message, exc_info=True)
            else:
                journal.write("step_succeeded", step=key, attempt=attempt, outputs=outputs,
                              inputs=dumped_inputs if step.side_effect_free else None)
                sctx.log.info("step.done")
                return outputs
            journal.write("attempt_failed", step=key, attempt=attempt, error=message, temporary=temporary)
            state.steps.setdefault(key, blank(key)).facts.update(facts_seen)
            if self.fence.lost is not None:
                raise StepFailed(key, f"{message} (lock lost: {self.fence.lost})")
            retries_used = attempt - first_attempt
            if not temporary or retries_used >= policy.count:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise StepFailed(key, message + suffix)
            if delay is None:
                base = min(policy.max_delay, policy.backoff * policy.factor ** retries_used)
                delay = base * (1 + policy.jitter * (2 * self.opts.rng.random() - 1))
            sctx.log.warning("step.retry", error=message, delay=round(delay, 3))
            end = self.opts.clock() + delay
            while self.opts.clock() < end:
                if self.stop():
                    raise Interrupted(f"stopped while waiting to retry {key}")
                self.opts.sleep(min(0.5, end - self.opts.clock()))
            attempt += 1

    # ---- planning ---------------------------------------------------------------------------

    def plan(self, loaded: LoadedPlaybook, params: dict[str, Any], *,
             secret_params: set[str] | None = None) -> list[PlannedStep]:
        """What each step would do, with every secret and value derived from one redacted (planning.py)."""
        self._new_secrets(params, set(secret_params or ()))
        self.run_cache = RunCache()
        return plan_run(self, loaded, params)
