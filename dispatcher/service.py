"""The dispatcher process: wires the bus, intake, ticket store, shippers and worker actions together."""

from __future__ import annotations

import binascii
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, insert, select, update
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
from dispatcher.hard_negatives import keep_hard_negatives
from dispatcher.intake import Intake
from dispatcher.lifecycle import InvalidTransition, Status, Transition
from dispatcher.push import PushHub, PushShipper
from dispatcher.settings import DispatcherSettings
from dispatcher.store.db import make_engine, migrate
from dispatcher.store.schema import (
    citizen_reports,
    devices,
    evidence,
    incidents,
    verifications,
)
from dispatcher.store.schema import tickets as tickets_table
from dispatcher.timers import Timers

log = logging.getLogger(__name__)


# Two heartbeats whose device time minus uptime agree this closely come from one agent run.
SAME_RUN_TOLERANCE_S = 1.0


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

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, wait_s: float | None = 15) -> None:
        group = self.settings.share_group
        self.bus.subscribe(topics.shared(topics.all_edge("event"), group), self.intake.submit)
        self.bus.subscribe(topics.shared(topics.all_edge("cmd/result"), group), self._on_result)
        self.bus.subscribe(topics.all_edge("status"), self._on_status)
        self.bus.subscribe(f"{topics.ROOT}/worker/+/tickets", self.hub.deliver)
        self.intake.start()
        self.pushes.start()
        self.metrics.start()
        self.timers.start()
        self.bus.start(wait_s=wait_s)
        log.info("dispatcher %s started", self.settings.mqtt_client_id)

    def stop(self) -> None:
        self.timers.stop()
        self.intake.stop()
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
                actor="system",
                exclude=frozenset({worker_id}),
                positions=worker_positions(conn),
                reason=f"declined by {worker_id}",
            )
        self.committed()
        return row

    def resolve(
        self, ticket_id: int, *, worker_id: str, photo: bytes | None, note: str | None
    ) -> RowMapping:
        """The worker says it is fixed; store the after-photo and ask the cameras to check."""
        at = self.clock.now()
        stored = self.evidence.save(photo, "after_photo", at) if photo else None
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
            if stored is not None:
                conn.execute(
                    insert(evidence).values(
                        kind="after_photo",
                        path=stored.path,
                        sha256=stored.sha256,
                        bytes=stored.size,
                        ticket_id=ticket_id,
                        created_at=at,
                    )
                )
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
        rejected and keep the camera snapshots as hard negatives for retraining."""
        at = self.clock.now()
        with self.engine.begin() as conn:
            self._own(tickets.load(conn, ticket_id), worker_id)
            row = tickets.apply(
                conn, ticket_id, Transition.REJECTED, at=at, actor=actor, reason=reason
            )
            incident = (
                conn.execute(select(incidents).where(incidents.c.id == row["incident_id"]))
                .mappings()
                .one()
            )
            snapshots = (
                conn.execute(
                    select(evidence.c.path).where(
                        evidence.c.ticket_id == ticket_id, evidence.c.kind == "snapshot"
                    )
                )
                .scalars()
                .all()
            )
        self.committed()
        keep_hard_negatives(
            self.evidence,
            self.settings.state_dir / "hard_negatives",
            row,
            incident,
            snapshots,
            reason=reason,
            at=at,
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

    def _on_result(self, d: Delivery) -> None:
        try:
            result = CommandResult.from_json(d.payload)
        except MessageError as exc:
            log.warning("bad command result on %s: %s", d.topic, exc, extra={"topic": d.topic})
            d.ack()
            return
        outcome = verify.result_outcome(result)
        parsed = topics.parse_edge(d.topic)
        if parsed is None or parsed.device_id != result.device_id:
            log.warning(
                "result for %s on topic %s ignored",
                result.device_id,
                d.topic,
                extra={"topic": d.topic},
            )
            outcome = None
        if outcome is None:
            d.ack()
            return
        now = self.clock.now()
        evidence_id = None
        stored = None
        if result.snapshot is not None:
            try:
                stored = self.evidence.save(result.snapshot.jpeg(), "verify", now)
            except (BadImage, binascii.Error) as exc:
                log.warning(
                    "verify snapshot from %s unusable (%s); outcome kept without it",
                    result.device_id,
                    exc,
                    extra={"device_id": result.device_id},
                )
        with self.engine.begin() as conn:
            if stored is not None:
                evidence_id = conn.execute(
                    insert(evidence)
                    .values(
                        kind="verify",
                        path=stored.path,
                        sha256=stored.sha256,
                        bytes=stored.size,
                        ticket_id=int(result.ticket_id) if result.ticket_id else None,
                        created_at=now,
                    )
                    .returning(evidence.c.id)
                ).scalar_one()
            done = conn.execute(
                update(verifications)
                .where(
                    verifications.c.command_id == str(result.command_id),
                    verifications.c.device_id == result.device_id,
                    verifications.c.answered_at.is_(None),
                )
                .values(answered_at=now, outcome=outcome, evidence_id=evidence_id)
                .returning(verifications.c.ticket_id)
            ).scalar()
        d.ack()
        if done is not None:
            self.settle(int(done))

    def _on_status(self, d: Delivery) -> None:
        try:
            status = DeviceStatus.from_json(d.payload)
        except MessageError as exc:
            log.warning("bad status on %s: %s", d.topic, exc, extra={"topic": d.topic})
            d.ack()
            return
        parsed = topics.parse_edge(d.topic)
        if parsed is None or parsed.device_id != status.device_id:
            log.warning("status for %s on topic %s ignored", status.device_id, d.topic)
            d.ack()
            return
        if status.online:
            newest = self.newest_heartbeats.get(status.device_id)
            if newest is not None and heartbeat_is_stale(status, newest):
                log.info(
                    "late heartbeat from %s (%.0fs older than one already seen) ignored",
                    status.device_id,
                    newest.uptime_s - status.uptime_s,
                    extra={"device_id": status.device_id},
                )
                d.ack()
                return
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
        d.ack()

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
