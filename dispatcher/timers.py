"""Ticket timers: accept timeouts, SLA reminders and escalations, verification timeouts, shift
changes; scheduled with APScheduler, kept in the ticket store.

Each ticket row carries ``timer_at``, the time its next timer is due, recomputed by every
transition from the ticket's state (``lifecycle.timers_of``). The store is therefore the job
store: nothing is lost in a restart, and at start every overdue timer fires. APScheduler only
decides when to look: one interval job (every second by default) reads the earliest
``timer_at`` (an index lookup) and fires what is due, and hands work over when a shift has
changed; timers set by other dispatcher processes are seen as soon as by their own.

Firing is idempotent: each ticket is handled in its own transaction, locked (PostgreSQL:
``FOR UPDATE SKIP LOCKED``, so two processes never handle one ticket at once; SQLite: the
write lock), and ``due_timers`` is re-evaluated on the locked row. A timer whose action has
happened is no longer due (the state moved, or its once-only mark is set), so a second
firing finds nothing to do. Every decision takes ``now`` as an argument: tests move a
ManualClock and call ``run_due``/``handover`` directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection, Engine, func, select, update

from config.clock import Clock
from config.site import Site
from dispatcher import tickets as ticket_ops
from dispatcher import verify
from dispatcher.accounts import worker_positions
from dispatcher.assign import in_shift, next_shift_change
from dispatcher.lifecycle import Status, TimerKind, Transition, due_timers, next_timer
from dispatcher.reasons import Reason, ReasonCode, utc_iso
from dispatcher.store.schema import tickets

log = logging.getLogger(__name__)

REMINDER_ACTOR = "timer:reminder"
SLA_ACTOR = "timer:sla"
SHIFT_ACTOR = "timer:shift"
BATCH = 200


@dataclass(frozen=True)
class Fired:
    """One timer that acted: on which ticket, which timer, and what happened."""

    ticket_id: int
    kind: TimerKind | str
    outcome: str


class Timers:
    """The timers of one dispatcher process (several processes may share one store)."""

    def __init__(
        self,
        engine: Engine,
        site: Site,
        clock: Clock,
        on_committed: Callable[[], None] = lambda: None,
        tick_s: float = 1.0,
    ) -> None:
        self.engine, self.site, self.clock = engine, site, clock
        self.on_committed = on_committed
        self.tick_s = tick_s
        self._postgres = engine.dialect.name == "postgresql"
        self._scheduler: BackgroundScheduler | None = None
        self._next_shift: datetime | None = None

    # -- scheduling ----------------------------------------------------------------------
    def start(self) -> None:
        """Fire what fell due while we were away (the first tick runs at once), then look
        every ``tick_s``: one fixed job, so no job is ever added or replaced while the
        scheduler runs (that races inside APScheduler)."""
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._scheduler.add_job(
            self.tick, "interval", seconds=self.tick_s, id="timers", next_run_time=datetime.now(UTC)
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None

    def tick(self) -> None:
        """One look: hand work over if a shift changed since the last look, then fire the
        timers that are due (an indexed MIN over ``tickets.timer_at`` when none is)."""
        try:
            now = self.clock.now()
            if self._next_shift is None or self._next_shift <= now:
                if self._next_shift is not None:
                    self.handover(now)
                self._next_shift = next_shift_change(self.site, now)
            if (earliest := self.earliest()) is not None and earliest <= now:
                self.run_due(now)
        except Exception:
            log.exception("timer tick failed; the next tick retries")

    def earliest(self) -> datetime | None:
        """When the store's next timer is due."""
        with self.engine.connect() as conn:
            at: datetime | None = conn.execute(select(func.min(tickets.c.timer_at))).scalar()
            return at

    # -- firing --------------------------------------------------------------------------
    def run_due(self, now: datetime | None = None) -> list[Fired]:
        """Handle every timer due at ``now`` (default: the clock's now)."""
        now = now or self.clock.now()
        fired: list[Fired] = []
        tried: set[int] = set()
        while True:
            with self.engine.connect() as conn:
                ids = [
                    i
                    for i in conn.execute(
                        select(tickets.c.id)
                        .where(tickets.c.timer_at <= now)
                        .order_by(tickets.c.timer_at)
                        .limit(BATCH + len(tried))
                    ).scalars()
                    if i not in tried
                ]
            if not ids:
                break
            for ticket_id in ids:
                tried.add(ticket_id)
                try:
                    fired += self._fire(ticket_id, now)
                except ticket_ops.StaleTicket:
                    log.info(
                        "ticket %s changed while its timer fired; the next tick retries",
                        ticket_id,
                        extra={"ticket_id": ticket_id},
                    )
                except Exception:
                    log.exception(
                        "timer of ticket %s failed", ticket_id, extra={"ticket_id": ticket_id}
                    )
        if fired:
            self.on_committed()
        return fired

    def _locked(self, conn: Connection, ticket_id: int) -> bool:
        """Lock the ticket for this transaction; False if another process holds it."""
        if not self._postgres:
            return True
        got = conn.execute(
            select(tickets.c.id).where(tickets.c.id == ticket_id).with_for_update(skip_locked=True)
        ).first()
        return got is not None

    def _fire(self, ticket_id: int, now: datetime) -> list[Fired]:
        out: list[Fired] = []
        with self.engine.begin() as conn:
            if not self._locked(conn, ticket_id):
                return out
            for _ in range(len(TimerKind)):
                row = ticket_ops.load(conn, ticket_id)
                due = due_timers(row, now)
                if not due:
                    break
                out.append(Fired(ticket_id, due[0], self._act(conn, row, due[0], now)))
            row = ticket_ops.load(conn, ticket_id)
            expected = next_timer(row)
            if row["timer_at"] != expected:  # stale (e.g. written by an older version)
                conn.execute(
                    update(tickets).where(tickets.c.id == ticket_id).values(timer_at=expected)
                )
        return out

    def _act(self, conn: Connection, t: Mapping[Any, Any], kind: TimerKind, now: datetime) -> str:
        ticket_id = int(t["id"])
        if kind is TimerKind.VERIFY_TIMEOUT:
            judgement = verify.settle(conn, self.site, ticket_id, now)
            if judgement is None:  # cannot happen once the timeout passed; never loop on it
                ticket_ops.apply(
                    conn,
                    ticket_id,
                    Transition.ESCALATED,
                    at=now,
                    actor=verify.REVIEW_ACTOR,
                    reason=Reason(ReasonCode.VERIFY_UNDECIDED),
                    review_at=now,
                )
                return "review"
            return judgement.verdict
        if kind is TimerKind.ACCEPT_TIMEOUT:
            after = ticket_ops.assign(
                conn,
                self.site,
                ticket_id,
                at=now,
                actor=ticket_ops.ACCEPT_TIMEOUT_ACTOR,
                exclude=frozenset({str(t["worker_id"])}) if t["worker_id"] else frozenset(),
                positions=worker_positions(conn),
                reason=Reason(
                    ReasonCode.ACCEPT_TIMEOUT,
                    {"worker": str(t["worker_id"]), "seconds": float(t["accept_timeout_s"])},
                ),
            )
            return f"to {after['worker_id']}" if after["worker_id"] else "to the supervisor"
        if kind is TimerKind.REMINDER:
            ticket_ops.apply(
                conn,
                ticket_id,
                Transition.REMINDED,
                at=now,
                actor=REMINDER_ACTOR,
                reason=Reason(ReasonCode.REMINDER, {"deadline": utc_iso(t["deadline"])}),
                reminded_at=now,
            )
            return "reminded"
        ticket_ops.apply(
            conn,
            ticket_id,
            Transition.ESCALATED,
            at=now,
            actor=SLA_ACTOR,
            reason=Reason(ReasonCode.SLA_BREACHED, {"deadline": utc_iso(t["deadline"])}),
            breached_at=now,
        )
        return "escalated"

    # -- shift changes -------------------------------------------------------------------
    def handover(self, now: datetime | None = None) -> list[Fired]:
        """At a shift change: tickets waiting for a worker get one who is now on duty, and
        tickets not yet accepted by a worker whose shift has ended go to one who is on duty
        (accepted work stays with whoever accepted it)."""
        now = now or self.clock.now()
        with self.engine.connect() as conn:
            waiting = conn.execute(
                select(tickets.c.id, tickets.c.worker_id, tickets.c.status).where(
                    tickets.c.status.in_([Status.OPEN.value, Status.ASSIGNED.value])
                )
            ).all()
        workers = {w.id: w for w in self.site.workers}
        out: list[Fired] = []
        for ticket_id, worker_id, status in waiting:
            if status == Status.ASSIGNED.value:
                worker = workers.get(worker_id)
                if worker is not None and in_shift(worker, now, self.site):
                    continue
            elif worker_id is not None:
                continue
            try:
                result = self._hand_over(int(ticket_id), now)
            except Exception:
                log.exception(
                    "handover of ticket %s failed", ticket_id, extra={"ticket_id": ticket_id}
                )
                continue
            if result is not None:
                out.append(Fired(int(ticket_id), "shift_change", result))
        if out:
            self.on_committed()
        return out

    def _hand_over(self, ticket_id: int, now: datetime) -> str | None:
        with self.engine.begin() as conn:
            if not self._locked(conn, ticket_id):
                return None
            row = ticket_ops.load(conn, ticket_id)
            before = row["worker_id"]
            if Status(row["status"]) not in (Status.OPEN, Status.ASSIGNED):
                return None
            after = ticket_ops.assign(
                conn,
                self.site,
                ticket_id,
                at=now,
                actor=SHIFT_ACTOR,
                exclude=frozenset({before}) if before else frozenset(),
                positions=worker_positions(conn),
                reason=Reason(ReasonCode.SHIFT_CHANGE if before else ReasonCode.ON_DUTY_NOW),
                escalate_if_none=False,
            )
            if after["worker_id"] == before:
                return None
            return f"to {after['worker_id']}"
