"""The dispatcher process: wires the bus, intake, ticket store, shippers and worker actions together.

Devices' status messages and command results arrive on the MQTT network thread, like events, and
are queued the same way: one thread takes them in arrival order, stores each in a transaction of
its own and only then acknowledges it. A malformed or refused one is dead-lettered (the intake's
table and writer) and acknowledged; while the store cannot take writes, the message waits,
unacknowledged, and is tried again.
"""

from __future__ import annotations

import binascii
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.engine import RowMapping

from broker import topics
from broker.client import BusClient, BusSettings, Delivery, TlsSettings
from broker.messages import CommandResult, DeviceStatus, MessageError
from broker.mosquitto import DISPATCHER_ACCOUNT
from config.clock import Clock, SystemClock
from config.site import Site
from dispatcher import metrics, tickets, verify
from dispatcher.accounts import seed_users, worker_positions
from dispatcher.evidence import BadImage, EvidenceStore
from dispatcher.evidence import record as record_evidence
from dispatcher.hard_negatives import keep_after_rejection
from dispatcher.intake import (
    BatchContext,
    Intake,
    StoreRefused,
    internal_error,
    store_unavailable,
)
from dispatcher.lifecycle import InvalidTransition, Status, Transition
from dispatcher.push import PushHub, PushShipper
from dispatcher.reasons import Reason, ReasonCode
from dispatcher.settings import PLACEHOLDER_SECRET, DispatcherSettings
from dispatcher.store.db import make_engine, migrate
from dispatcher.store.schema import (
    citizen_reports,
    devices,
    verifications,
)
from dispatcher.store.schema import tickets as tickets_table
from dispatcher.timers import Timers

log = logging.getLogger(__name__)


# Two heartbeats whose device time minus uptime agree this closely come from one agent run.
SAME_RUN_TOLERANCE_S = 1.0

# Records one device message; returns why it is refused (dead-lettered), or None once stored.
DeviceRecorder = Callable[[Delivery], str | None]


def heartbeat_is_stale(status: DeviceStatus, newest: DeviceStatus | None) -> bool:
    """True for a heartbeat sent before ``newest``, the newest one already taken from the same
    device: a late delivery (queued while we were away) that must not be taken as the
    device's present. Only heartbeats of one agent run are compared (the same start: device
    time minus uptime), and the lower uptime is the older; after a restart of the agent, or a
    clock that was set, the heartbeat is taken, so a device's clock can always be learnt."""
    if newest is None:
        return False
    started = status.ts.timestamp() - status.uptime_s
    newest_started = newest.ts.timestamp() - newest.uptime_s
    same_run = abs(started - newest_started) <= SAME_RUN_TOLERANCE_S
    return same_run and status.uptime_s < newest.uptime_s


def refuse_sender(topic: str, device_id: str) -> str | None:
    """Why a device message on ``topic`` cannot be taken from ``device_id``, or None: a
    device speaks only for itself, under its own topic (as the intake requires of events)."""
    parsed = topics.parse_edge(topic)
    if parsed is None:
        return f"not an edge topic: {topic}"
    if parsed.device_id != device_id:
        return f"device_id {device_id!r} does not match topic device {parsed.device_id!r}"
    return None


class NotYours(PermissionError):
    """A worker acted on a ticket that is not assigned to them."""


@dataclass
class Dispatcher:
    """One dispatcher process. ``start()`` connects and begins work; ``stop()`` ends it."""

    settings: DispatcherSettings
    site: Site
    clock: Clock = SystemClock()  # noqa: RUF009 - stateless and immutable
    newest_heartbeats: dict[str, DeviceStatus] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = make_engine(s.database_url)
        migrate(self.engine)
        with self.engine.begin() as conn:
            seed_users(
                conn,
                self.site,
                self.clock.now(),
                s.admin_password.get_secret_value() if s.admin_password else None,
            )
        self.evidence = EvidenceStore(s.state_dir / "evidence")
        self.bus = BusClient(
            BusSettings(
                client_id=s.mqtt_client_id,
                host=self.site.broker.host,
                port=self.site.broker.port,
                username=DISPATCHER_ACCOUNT,
                password=self.site.broker.dispatcher_password,
                manual_ack=True,
                tls=TlsSettings(ca_file=self.site.broker.ca_file) if self.site.broker.tls else None,
            )
        )
        self.hub = PushHub()
        self.pushes = PushShipper(self.engine, self.site, self.bus)
        self.influx = metrics.connect(
            s.influx_url,
            s.influx_db,
            token=s.influx_token.get_secret_value() if s.influx_token else None,
            org=s.influx_org,
            username=s.influx_username,
            password=s.influx_password.get_secret_value() if s.influx_password else None,
        )
        self.metrics = metrics.MetricsShipper(self.engine, self.influx)
        self.intake = Intake(
            self.engine,
            self.site,
            self.clock,
            self.evidence,
            on_committed=self.committed,
            batch_size=s.intake_batch_size,
        )
        self.timers = Timers(
            self.engine,
            self.site,
            self.clock,
            on_committed=self.committed,
            tick_s=s.timer_tick_s,
        )
        self._device_inbox: queue.Queue[tuple[DeviceRecorder, Delivery]] = queue.Queue()
        self._stopping = threading.Event()
        self._device_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, wait_s: float | None = 15) -> None:
        group = self.settings.share_group
        self.bus.subscribe(topics.shared(topics.all_edge("event"), group), self.intake.submit)
        self.bus.subscribe(topics.shared(topics.all_edge("cmd/result"), group), self._on_result)
        self.bus.subscribe(topics.all_edge("status"), self._on_status)
        self.hub.follow(self.bus, f"{topics.ROOT}/worker/+/tickets")
        if self.settings.placeholder_secret:
            log.warning(
                "GW_SECRET_KEY is not set (or is the placeholder %r): anyone can sign tokens "
                "for this dispatcher; set a real secret (refused outside development)",
                PLACEHOLDER_SECRET,
            )
        self._stopping.clear()
        self._device_thread = threading.Thread(
            target=self._take_device_messages, name="device-messages", daemon=True
        )
        self._device_thread.start()
        self.intake.start()
        self.pushes.start()
        self.metrics.start()
        self.timers.start()
        self.bus.start(wait_s=wait_s)
        log.info("dispatcher %s started", self.settings.mqtt_client_id)

    def stop(self) -> None:
        self.timers.stop()
        self.intake.stop()
        self._stopping.set()
        if self._device_thread is not None:
            self._device_thread.join(10)
        self.bus.stop()
        self.pushes.stop()
        self.metrics.stop()
        self.engine.dispose()
        log.info("dispatcher %s stopped", self.settings.mqtt_client_id)

    def committed(self) -> None:
        """After any commit that wrote audit rows: ship pushes and points now."""
        self.pushes.wake()
        self.metrics.wake()

    # -- worker actions (called by the API) ----------------------------------------------
    def _own(self, row: RowMapping, worker_id: str | None) -> None:
        if worker_id is not None and row["worker_id"] != worker_id:
            raise NotYours(f"ticket {row['id']} is not assigned to {worker_id}")

    def act(
        self,
        ticket_id: int,
        transition: Transition,
        *,
        worker_id: str | None,
        actor: str,
        reason: str | None = None,
    ) -> RowMapping:
        """A plain lifecycle step by a worker (accept, arrived) or a supervisor (worker_id None)."""
        at = self.clock.now()
        with self.engine.begin() as conn:
            self._own(tickets.load(conn, ticket_id), worker_id)
            row = tickets.apply(conn, ticket_id, transition, at=at, actor=actor, reason=reason)
        self.committed()
        return row

    def decline(self, ticket_id: int, *, worker_id: str, reason: str) -> RowMapping:
        """The worker cannot take it: back to open, then to someone else."""
        at = self.clock.now()
        with self.engine.begin() as conn:
            self._own(tickets.load(conn, ticket_id), worker_id)
            tickets.apply(
                conn,
                ticket_id,
                Transition.DECLINED,
                at=at,
                actor=f"worker:{worker_id}",
                worker_id=None,
                reason=reason,
            )
            row = tickets.assign(
                conn,
                self.site,
                ticket_id,
                at=at,
                actor=tickets.SYSTEM_ACTOR,
                exclude=frozenset({worker_id}),
                positions=worker_positions(conn),
                reason=Reason(ReasonCode.DECLINED_BY, {"worker": worker_id}),
            )
        self.committed()
        return row

    def resolve(
        self, ticket_id: int, *, worker_id: str, photo: bytes, note: str | None
    ) -> RowMapping:
        """The worker says it is fixed; store the after-photo and ask the cameras to check.

        The photo is required: it is the worker's evidence, and what a category closes on when
        no camera answers. Raises BadImage when it is missing or not an acceptable image."""
        if not photo:
            raise BadImage("an after-photo is required to resolve a ticket")
        at = self.clock.now()
        stored = self.evidence.save(photo, "after_photo", at)
        with self.engine.begin() as conn:
            self._own(tickets.load(conn, ticket_id), worker_id)
            row = tickets.apply(
                conn,
                ticket_id,
                Transition.RESOLVED,
                at=at,
                actor=f"worker:{worker_id}",
                reason=note,
            )
            record_evidence(conn, stored, "after_photo", at, ticket_id)
            commands = verify.ask_cameras(conn, self.site, row, at)
        for cmd in commands:
            self.bus.publish(topics.command(cmd.device_id), cmd)
        self.committed()
        self.settle(ticket_id)
        return row

    def reject(
        self, ticket_id: int, *, actor: str, worker_id: str | None, reason: str
    ) -> RowMapping:
        """A false alarm (by its worker, or a supervisor with worker_id None): close it as
        rejected, then keep the camera snapshots as hard negatives for retraining. Writing
        them never fails the committed rejection: a failure is logged, and the next rejection
        writes what is missing (dispatcher.hard_negatives)."""
        at = self.clock.now()
        with self.engine.begin() as conn:
            self._own(tickets.load(conn, ticket_id), worker_id)
            row = tickets.apply(
                conn, ticket_id, Transition.REJECTED, at=at, actor=actor, reason=reason
            )
        self.committed()
        keep_after_rejection(
            self.engine, self.evidence, self.settings.state_dir / "hard_negatives", ticket_id, at
        )
        return row

    def reassign(
        self, ticket_id: int, *, actor: str, to_worker: str | None, reason: str
    ) -> RowMapping:
        """A supervisor moves an unfinished ticket to the named worker, or (None) away from its
        current worker to whoever the assignment rules pick."""
        at = self.clock.now()
        with self.engine.begin() as conn:
            row = tickets.load(conn, ticket_id)
            current = Status(row["status"])
            if current not in (Status.OPEN, Status.ASSIGNED, Status.ACCEPTED):
                raise InvalidTransition(Transition.REASSIGNED, current)
            if to_worker is None:
                held = frozenset({row["worker_id"]}) if row["worker_id"] else frozenset()
                row = tickets.assign(
                    conn,
                    self.site,
                    ticket_id,
                    at=at,
                    actor=actor,
                    exclude=held,
                    positions=worker_positions(conn),
                    reason=reason,
                )
            else:
                first = current is Status.OPEN and row["assigned_at"] is None
                row = tickets.apply(
                    conn,
                    ticket_id,
                    Transition.ASSIGNED if first else Transition.REASSIGNED,
                    at=at,
                    actor=actor,
                    worker_id=to_worker,
                    reason=reason,
                )
        self.committed()
        return row

    # -- verification --------------------------------------------------------------------
    def settle(self, ticket_id: int) -> None:
        """Apply the verification judgement to a resolved ticket, if one can be made now."""
        with self.engine.begin() as conn:
            judgement = verify.settle(conn, self.site, ticket_id, self.clock.now())
        if judgement is not None:
            self.committed()

    # -- device messages (status, command results) ----------------------------------------
    def _on_result(self, d: Delivery) -> None:
        """Called on the network thread: queue and return at once."""
        self._device_inbox.put((self._record_result, d))

    def _on_status(self, d: Delivery) -> None:
        """Called on the network thread: queue and return at once."""
        self._device_inbox.put((self._record_status, d))

    def device_backlog(self) -> int:
        """Device messages (status, command results) received and waiting to be stored."""
        return self._device_inbox.qsize()

    def _take_device_messages(self) -> None:
        while not self._stopping.is_set():
            try:
                record, d = self._device_inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._record_with_retry(record, d)
            except Exception:
                # Not the store, not the message (those are retried or dead-lettered): a fault
                # here. The message stays unacknowledged: the broker delivers it again on the next
                # connection.
                log.exception("message on %s could not be recorded", d.topic)

    def _record_with_retry(self, record: DeviceRecorder, d: Delivery) -> None:
        """Record one device message and acknowledge it once it is stored or dead-lettered.
        While the store cannot take writes it stays unacknowledged and is tried again (until
        the dispatcher stops: the broker then delivers it again)."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self._record_once(record, d)
            except Exception as exc:
                if not store_unavailable(exc):
                    raise
                log.error(
                    "ticket store unavailable; message on %s retried in %.1fs: %s",
                    d.topic,
                    delay,
                    exc,
                    extra={"topic": d.topic},
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, 30)
            else:
                d.ack()
                return

    def _record_once(self, record: DeviceRecorder, d: Delivery) -> None:
        """Record, or dead-letter, one message. Raises only when the store cannot take writes
        (``store_unavailable``)."""
        try:
            reason = record(d)
        except Exception as exc:
            if store_unavailable(exc):
                raise
            log.exception("message on %s failed; dead-lettered", d.topic)
            reason = internal_error(exc)
        if reason is None:
            return
        try:
            with self.engine.begin() as conn:
                self._dead_letter(conn, d, reason)
        except Exception as exc:
            if store_unavailable(exc):
                raise
            raise StoreRefused(f"cannot dead-letter a message from {d.topic}: {exc!r}") from exc

    def _dead_letter(self, conn: Connection, d: Delivery, reason: str) -> None:
        """The intake's dead-letter writer, for device messages."""
        self.intake._dead_letter(conn, d, reason, self.clock.now(), BatchContext(conn))

    def _record_result(self, d: Delivery) -> str | None:
        """A device's command result: a verify answer is recorded on the verification it
        answers (found by its command id; the ticket is that verification's, whatever the
        device says) and the ticket is settled. Returns why it is refused, or None."""
        try:
            result = CommandResult.from_json(d.payload)
        except MessageError as exc:
            return exc.reason
        refused = refuse_sender(d.topic, result.device_id)
        if refused is not None:
            return refused
        if result.action != "verify":
            log.debug("%s result from %s not needed", result.action, result.device_id)
            return None
        now = self.clock.now()
        with self.engine.begin() as conn:
            asked = (
                conn.execute(
                    select(verifications)
                    .where(verifications.c.command_id == str(result.command_id))
                    .with_for_update()
                )
                .mappings()
                .first()
            )
            if asked is None:
                return f"unknown command {result.command_id}: no verification was asked with it"
            if asked["device_id"] != result.device_id:
                return (
                    f"command {result.command_id} was sent to {asked['device_id']!r}, "
                    f"not to {result.device_id!r}"
                )
            ticket_id = int(asked["ticket_id"])
            if result.ticket_id is not None and result.ticket_id != str(ticket_id):
                log.warning(
                    "verify result from %s names ticket %r; the command was for ticket %s",
                    result.device_id,
                    result.ticket_id,
                    ticket_id,
                    extra={"device_id": result.device_id, "ticket_id": ticket_id},
                )
            outcome = verify.result_outcome(result)
            if outcome is None:
                log.info(
                    "camera %s could not verify ticket %s: %s",
                    result.camera_id,
                    ticket_id,
                    result.detail,
                    extra={"device_id": result.device_id, "ticket_id": ticket_id},
                )
                return None
            if asked["answered_at"] is None:  # else: delivered again; settle it all the same
                conn.execute(
                    update(verifications)
                    .where(verifications.c.command_id == asked["command_id"])
                    .values(
                        answered_at=now,
                        outcome=outcome,
                        evidence_id=self._verify_snapshot(conn, result, ticket_id, now),
                    )
                )
            judgement = verify.settle(conn, self.site, ticket_id, now)
        if judgement is not None:
            self.committed()
        return None

    def _verify_snapshot(
        self, conn: Connection, result: CommandResult, ticket_id: int, now: datetime
    ) -> int | None:
        """Store a verify result's snapshot as the ticket's evidence; its id, or None (no
        snapshot, or an unusable one: the outcome is kept without it)."""
        if result.snapshot is None:
            return None
        try:
            stored = self.evidence.save(result.snapshot.jpeg(), "verify", now)
        except (BadImage, binascii.Error) as exc:
            log.warning(
                "verify snapshot from %s unusable (%s); outcome kept without it",
                result.device_id,
                exc,
                extra={"device_id": result.device_id},
            )
            return None
        return record_evidence(conn, stored, "verify", now, ticket_id)

    def _record_status(self, d: Delivery) -> str | None:
        """A device's heartbeat or last will: the device's row. Returns why it is refused, or
        None."""
        try:
            status = DeviceStatus.from_json(d.payload)
        except MessageError as exc:
            return exc.reason
        refused = refuse_sender(d.topic, status.device_id)
        if refused is not None:
            return refused
        if status.online:
            newest = self.newest_heartbeats.get(status.device_id)
            if newest is not None and heartbeat_is_stale(status, newest):
                log.info(
                    "late heartbeat from %s (%.0fs older than one already seen) ignored",
                    status.device_id,
                    newest.uptime_s - status.uptime_s,
                    extra={"device_id": status.device_id},
                )
                return None
            self.newest_heartbeats[status.device_id] = status
        body: dict[str, Any] = status.model_dump(mode="json", by_alias=True)
        values: dict[str, Any] = {"online": status.online, "last_seen": status.ts, "status": body}
        if status.online and not d.retain:
            # A live heartbeat (a retained one may be old): estimate the device's clock offset.
            values["clock_offset_s"] = self.intake.heartbeat(
                status.device_id, status.ts, self.clock.now()
            )
        with self.engine.begin() as conn:
            done = conn.execute(
                update(devices).where(devices.c.device_id == status.device_id).values(**values)
            ).rowcount
            if not done:
                tickets.insert_ignore(conn, devices, {"device_id": status.device_id, **values})
        return None

    # -- citizen reports (Open311) -------------------------------------------------------
    def report_citizen(
        self, *, kind: str, lat: float, lon: float, details: dict[str, Any]
    ) -> tuple[int, int | None]:
        """A citizen's report enters the same pipeline as a camera's event: it merges into an
        open incident of its kind nearby, or opens one with its ticket. Returns the report's
        id (Open311 service_request_id) and the ticket's id. Raises Rejected for a kind the
        site does not have."""
        at = self.clock.now()
        obs = self.intake.citizen(
            kind=kind,
            lat=lat,
            lon=lon,
            at=at,
            body={"service_code": kind, **{k: v for k, v in details.items() if v is not None}},
        )
        with self.engine.begin() as conn:
            self.intake.lock(conn, [obs])
            incident_id = self.intake.record(conn, obs, at)
            report_id = conn.execute(
                insert(citizen_reports)
                .values(
                    service_code=kind,
                    event_id=obs.event_id,
                    incident_id=incident_id,
                    lat=lat,
                    lon=lon,
                    requested_at=at,
                    **details,
                )
                .returning(citizen_reports.c.id)
            ).scalar_one()
            ticket_id = (
                conn.execute(
                    select(tickets_table.c.id).where(tickets_table.c.incident_id == incident_id)
                ).scalar()
                if incident_id is not None
                else None
            )
        self.committed()
        log.info(
            "citizen report %s (%s) → incident %s, ticket %s",
            report_id,
            kind,
            incident_id,
            ticket_id,
            extra={"ticket_id": ticket_id},
        )
        return int(report_id), ticket_id
