"""A run lock on a Route53 record itself: the TXT record ``_meshops-lock.<record>``.

Two switchovers of one record from two machines (or two clusters' CI jobs) share no cluster, so
a Lease cannot keep them apart; the record's own zone can. Route53 applies a change batch whole
or not at all, rejects a CREATE of a record that exists and a DELETE that does not match the
record exactly (ChangeResourceRecordSets API reference). So:

- **acquire** is one batch ``CREATE _meshops-lock.<record> TXT "<value>"``, sent without a read
  first: exactly one of two concurrent runs gets it; the other, refused, reads the holder and
  raises ``LockHeld`` (exit 4);
- **take over** a stale lock (its expiry passed, or its holder is a dead process on this host)
  is one batch ``DELETE <the stale value, exactly>`` + ``CREATE <ours>``: if another run took it
  first, the DELETE no longer matches and the batch fails whole;
- **renew** is the same compare-and-swap from our value to our value with a later expiry;
- **release** deletes our value exactly (a lock someone took over after expiry is theirs).

The value holds the run id, the holder (``run@host/pid``), when it was taken and when it expires.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from meshops.domain.errors import DriverError, LockHeld
from meshops.domain.k8stime import format_micro
from meshops.domain.locks import holder_is_dead
from meshops.domain.weights import Change, ChangeBatch, RecordSet, fqdn
from meshops.drivers.route53 import ChangeOutcomeUnknown, Route53Api

LOCK_PREFIX = "_meshops-lock."
LOCK_TTL = 60
_VALUE = re.compile(r'^"meshops-lock run=(?P<run>\S+) holder=(?P<holder>\S+) since=(?P<since>\S+) '
                    r'expires=(?P<expires>\d+)"$')


def lock_name(record: str) -> str:
    return fqdn(LOCK_PREFIX + fqdn(record))


@dataclass(frozen=True, kw_only=True)
class LockValue:
    run_id: str
    holder: str
    since: str
    expires: int  # unix seconds

    def text(self) -> str:
        return f'"meshops-lock run={self.run_id} holder={self.holder} since={self.since} expires={self.expires}"'

    @classmethod
    def parse(cls, text: str) -> LockValue | None:
        m = _VALUE.match(text)
        if m is None:
            return None
        return cls(run_id=m["run"], holder=m["holder"], since=m["since"], expires=int(m["expires"]))


def _rejected(exc: DriverError) -> bool:
    """Route53 refused the batch because the record is not as the batch assumed (someone else won)."""
    text = exc.message
    return "InvalidChangeBatch" in text or "already exists" in text or "not found" in text or "do not match" in text


class RecordLock:
    """``RunLock`` (acquire/renew/release, ``duration``) over a TXT record in the record's zone."""

    def __init__(self, r53: Route53Api, zone_id: str, record: str, *, duration: float = 120.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.r53, self.zone_id = r53, zone_id
        self.record_name = lock_name(record)
        self.name = f"Route53 TXT {self.record_name}"
        self.duration = duration
        self._clock = clock
        self._mine: RecordSet | None = None

    # ---- reading and writing -----------------------------------------------------------------

    def read(self) -> RecordSet | None:
        found = [r for r in self.r53.list_records(self.zone_id, self.record_name) if r.type == "TXT"]
        return found[0] if found else None

    def _record(self, value: LockValue) -> RecordSet:
        return RecordSet(name=self.record_name, type="TXT", ttl=LOCK_TTL, values=(value.text(),))

    def _swap(self, old: RecordSet | None, new: RecordSet | None) -> bool:
        """One batch from ``old`` to ``new``; False when Route53 refused it (the record is not ``old``)."""
        changes = []
        if old is not None:
            changes.append(Change(action="DELETE", record=old))
        if new is not None:
            changes.append(Change(action="CREATE", record=new))
        batch = ChangeBatch(changes=tuple(changes), comment="meshops: record lock")
        for _ in range(3):
            try:
                # Validated against what we assume is there; Route53 decides whether it really is.
                self.r53.change(self.zone_id, batch, current=[old] if old is not None else [])
            except ChangeOutcomeUnknown:
                # The answer was lost (or was a 500): whether it applied is read back, never guessed.
                # Still as it was -> it did not apply, so it is sent again: giving up here would
                # leave a finished run's lock behind for its whole expiry (the chaos suite's
                # switchovers did, after one transient 500 on the release).
                now = self.read()
                if now == new:
                    return True
                if now != old:
                    return False
                continue
            except DriverError as exc:
                if _rejected(exc):
                    return False
                raise
            return True
        return False

    # ---- RunLock --------------------------------------------------------------------------------

    def acquire(self, holder: str) -> None:
        run_id = holder.partition("@")[0]
        # Usually nobody holds it: the CREATE alone decides (Route53 refuses it if the record
        # exists), and only a refused CREATE costs the read that finds out who holds it.
        first = True
        for _ in range(5):
            current = None if first else self.read()
            now = self._clock()
            mine = self._record(LockValue(run_id=run_id, holder=holder, since=format_micro(now),
                                          expires=int(now + self.duration)))
            first = False
            if current is None:
                if self._swap(None, mine):
                    self._mine = mine
                    return
                continue
            value = LockValue.parse(current.values[0] if current.values else "")
            ours = value is not None and value.run_id == run_id
            stale = value is None or value.expires <= now or holder_is_dead(value.holder)
            if not ours and not stale:
                assert value is not None
                raise LockHeld(holder=f"{value.holder} (run {value.run_id}, expires "
                                      f"{format_micro(value.expires)})", since=value.since, lock=self.name)
            if self._swap(current, mine):
                self._mine = mine
                return
        raise LockHeld(holder="(contended)", since=format_micro(self._clock()), lock=self.name)

    def renew(self) -> None:
        if self._mine is None:
            return
        value = LockValue.parse(self._mine.values[0])
        assert value is not None
        if value.expires - self._clock() > self.duration / 2:
            return  # the engine renews every few seconds; a change batch each time would only cost rate
        fresh = self._record(LockValue(run_id=value.run_id, holder=value.holder, since=value.since,
                                       expires=int(self._clock() + self.duration)))
        if self._swap(self._mine, fresh):
            self._mine = fresh

    def release(self) -> None:
        mine, self._mine = self._mine, None
        if mine is not None:
            self._swap(mine, None)
