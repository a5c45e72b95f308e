"""Event intake: parse, de-duplicate on event_id, merge into incidents, open and assign tickets.

Deliveries arrive on the MQTT network thread and are queued; one intake thread takes them in
batches, processes a batch in one transaction, commits, and only then acknowledges them to
the broker. A crash before the commit means the broker redelivers, and the ``event_id`` key
makes the redelivery harmless. If any event of a batch fails, the transaction is rolled back
and the batch redone with one savepoint per event, so the bad one is dead-lettered alone (and
if the batch fails even so, outside any one event, it is redone one transaction per event).
An error that says the store cannot take writes (``store_unavailable``: disk full, locked,
server away) is never dead-lettered: the batch stays unacknowledged and is retried, and
``Intake.store_error`` says why until a batch goes through again.
Within a batch the incidents of the events' tracks are read once up front, and what the
batch writes is planned in memory and written together when it flushes: new incidents with
their tickets and audit rows (ids taken up front), track upserts, re-sightings by known
tracks. A new problem then costs one statement (the search for an incident near it), a
repeat sighting none; the batch flushes early only before work that reads or inserts around
the plan (a ``cleared``, a late sensor event, a snapshot to link to its ticket).

Events are applied in each device's order where it matters. A batch takes each device's
events by ``seq``; across batches ``track_seqs`` keeps the newest applied event of every camera
track and sensor, and an event below it (``arrived_late``: overtaken on the way, as after a
broker restart) is stored but changes no incident: a late ``cleared`` cancels nothing, a late
``new`` neither joins nor re-creates the newer alarm. A late event that completes a sensor's
alarm episode which ended before the newer one began (``ended_episode``) gives that episode
the ticket in-order delivery gave it, opened and cancelled.

Merging is a read-then-write (find the open incident near this one, else open one), so it
runs under locks: SQLite's BEGIN IMMEDIATE serialises writers; on PostgreSQL the batch first
takes transaction-scoped advisory locks on the map squares its events could merge in (see
``incidents.merge_locks``), in sorted order so that two processes never deadlock. Citizen
reports from Open311 go through the same ``record`` under the same locks.

Device clocks drift. Each device's offset is estimated from its live heartbeats; an event
from a device more than SKEW_TOLERANCE off is placed at its device time minus the offset
(``ts_source`` "corrected"), and one still in the future after that, or older than any event
the edge outbox still replays (a real-time clock that lost power restarts at 1970, and a
device with no heartbeat yet has no offset), at its receive time ("received"). The device's
own time stays in the stored event.
"""

from __future__ import annotations

import binascii
import collections
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import Connection, Engine, bindparam, case, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError

from broker import topics
from broker.client import Delivery
from broker.messages import Event, Evidence, MessageError
from config.clock import Clock
from config.site import Site
from dispatcher import tickets as ticket_ops
from dispatcher import verify
from dispatcher.accounts import worker_positions
from dispatcher.evidence import BadImage, EvidenceStore
from dispatcher.evidence import record as record_evidence
from dispatcher.grids import GridIndex
from dispatcher.incidents import (
    OpenIncident,
    match_incident,
    merge_locks,
    search_box,
    track_key,
)
from dispatcher.lifecycle import Status, Transition
from dispatcher.reasons import CloseReason, Reason, ReasonCode
from dispatcher.store.schema import (
    UtcDateTime,
    dead_letters,
    devices,
    events,
    evidence,
    incident_tracks,
    incidents,
    track_seqs,
)
from dispatcher.store.schema import tickets as tickets_table

log = logging.getLogger(__name__)

MAX_DEAD_LETTER_BYTES = 64 * 1024
FUTURE_TOLERANCE = timedelta(seconds=60)
# The edge outbox evicts what it could not send within ``OutboxSettings.max_age_hours`` (7 days
# by default; edge/settings.py, which the dispatcher does not import), so a device time older
# than that, plus a day's margin, is a clock that was reset, not a late delivery.
OUTBOX_MAX_AGE = timedelta(days=7)
PAST_TOLERANCE = OUTBOX_MAX_AGE + timedelta(days=1)
SKEW_TOLERANCE = timedelta(seconds=30)
CITIZEN_DEVICE = "citizen"
SourceType = Literal["camera", "sensor", "citizen"]


# Statements built once, so SQLAlchemy reuses their compiled form on the hot path.
_BY_TRACK = (
    select(
        incidents.c.id,
        incidents.c.kind,
        incidents.c.lat,
        incidents.c.lon,
        incidents.c.last_seen,
        incident_tracks.c.cleared_at,
    )
    .join(incident_tracks, incident_tracks.c.incident_id == incidents.c.id)
    .where(incident_tracks.c.track_key == bindparam("b_key"), incidents.c.status == "open")
)
_NEARBY = select(
    incidents.c.id, incidents.c.kind, incidents.c.lat, incidents.c.lon, incidents.c.last_seen
).where(
    incidents.c.status == "open",
    incidents.c.kind == bindparam("b_kind"),
    incidents.c.lat.between(bindparam("b_lat0"), bindparam("b_lat1")),
    incidents.c.lon.between(bindparam("b_lon0"), bindparam("b_lon1")),
)
_INSERT_INCIDENT = insert(incidents).returning(incidents.c.id)
# The rows of new incidents, their tickets and audit rows, inserted together when a batch
# flushes, with ids taken up front: on SQLite the next ones after the largest (the batch
# holds the write lock, and everything else that inserts flushes first), on PostgreSQL from
# the sequences.
_ADD_INCIDENTS = insert(incidents)
_LARGEST_IDS = select(
    select(func.max(incidents.c.id)).scalar_subquery(),
    select(func.max(tickets_table.c.id)).scalar_subquery(),
)
_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('incidents', 'id')), "
    "nextval(pg_get_serial_sequence('tickets', 'id'))"
)
_INCIDENT = select(
    incidents.c.last_seen,
    incidents.c.camera_ids,
    incidents.c.track_keys,
    incidents.c.bbox,
    incidents.c.events,
).where(incidents.c.id == bindparam("b_id"))
_UPDATE_INCIDENT = update(incidents).where(incidents.c.id == bindparam("b_id"))
# One more sighting by a track already on the incident (and not cleared): no read needed.
_SEEN_AGAIN = _UPDATE_INCIDENT.values(
    last_seen=case(
        (
            incidents.c.last_seen < bindparam("b_ts", type_=UtcDateTime()),
            bindparam("b_ts", type_=UtcDateTime()),
        ),
        else_=incidents.c.last_seen,
    ),
    events=incidents.c.events + bindparam("b_n"),
    cleared_at=None,
)
_OPEN_TRACKS = (
    select(
        incident_tracks.c.track_key,
        incident_tracks.c.cleared_at,
        incidents.c.id,
        incidents.c.kind,
        incidents.c.lat,
        incidents.c.lon,
        incidents.c.last_seen,
    )
    .join(incidents, incident_tracks.c.incident_id == incidents.c.id)
    .where(
        incident_tracks.c.track_key.in_(bindparam("b_keys", expanding=True)),
        incidents.c.status == "open",
    )
)
_MERGE_LOCKS = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM "
    "(SELECT k FROM unnest(CAST(:keys AS bigint[])) AS t(k) ORDER BY k) AS sorted"
)
_TRY_MERGE_LOCKS = text(
    "SELECT k FROM unnest(CAST(:keys AS bigint[])) AS t(k) WHERE pg_try_advisory_xact_lock(k)"
)
STUBBORN_AFTER = 3
_STORED_EVENTS = select(events.c.event_id).where(
    events.c.event_id.in_(bindparam("b_ids", expanding=True))
)
_NEWEST = select(track_seqs).where(track_seqs.c.track_key.in_(bindparam("b_keys", expanding=True)))
_NEWEST_ONE = select(track_seqs).where(track_seqs.c.track_key == bindparam("b_key"))
_SOURCE_EVENT = select(
    events.c.event_id, events.c.state, events.c.seq, events.c.ts, events.c.incident_id
).where(events.c.device_id == bindparam("b_device"), events.c.source_id == bindparam("b_source"))
# A sensor's stored events just below and just above a seq (the (device_id, seq) index).
_SOURCE_BEFORE = (
    _SOURCE_EVENT.where(events.c.seq < bindparam("b_seq")).order_by(events.c.seq.desc()).limit(2)
)
_SOURCE_AFTER = (
    _SOURCE_EVENT.where(events.c.seq > bindparam("b_seq")).order_by(events.c.seq).limit(2)
)
_MOVE_EVENT = (
    update(events)
    .where(events.c.event_id == bindparam("b_event_id"))
    .values(incident_id=bindparam("b_incident_id"))
)


class Rejected(ValueError):
    """An event that cannot be processed; it goes to the dead-letter table with this reason."""


class StoreRefused(RuntimeError):
    """Not even a dead letter could be written for an event that failed: the store refuses
    writes (say, a read-only PostgreSQL), so the batch is kept and retried like an outage."""


def store_unavailable(exc: BaseException) -> bool:
    """Whether an error says the store cannot take writes now (keep the batch unacknowledged
    and retry it: nothing may be lost while the disk is full) rather than that one event
    cannot be processed (dead-letter that event)."""
    if isinstance(exc, OperationalError | StoreRefused):
        return True  # disk full, database locked, server away, deadlock, read-only file
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # Writing an evidence image (images are checked before, as BadImage): a full disk, a
    # read-only or failing one.
    return isinstance(exc, OSError)


def internal_error(exc: BaseException) -> str:
    """The dead-letter reason for an event that failed in a way nobody foresaw."""
    return f"internal error: {exc!r}"


def event_time(
    device_ts: datetime, received_at: datetime, offset_s: float | None
) -> tuple[datetime, str]:
    """The time to file an event under, and why: the device's time ("device"), corrected by
    the device's known clock offset ("corrected"), or our receive time when the device's
    time is implausible: still in the future, or older than the edge outbox keeps an event
    (PAST_TOLERANCE: a clock reset to 1970 with no heartbeat yet to correct it) ("received")."""
    ts, source = device_ts, "device"
    if offset_s is not None and abs(offset_s) > SKEW_TOLERANCE.total_seconds():
        try:
            ts, source = device_ts - timedelta(seconds=offset_s), "corrected"
        except OverflowError:  # outside the years 1-9999 once corrected
            return received_at, "received"
    if not received_at - PAST_TOLERANCE <= ts <= received_at + FUTURE_TOLERANCE:
        return received_at, "received"
    return ts, source


def next_offset(previous: float | None, sample: float) -> float:
    """Smooth the clock-offset estimate (device time minus ours) with a new heartbeat sample;
    a jump of more than SKEW_TOLERANCE (the device's clock was set) replaces it at once."""
    if previous is None or abs(sample - previous) > SKEW_TOLERANCE.total_seconds():
        return sample
    return 0.8 * previous + 0.2 * sample


@dataclass(frozen=True)
class Applied:
    """The newest event of one track key (a camera's track, or a sensor) that was applied."""

    seq: int
    device_ts: datetime


def arrived_late(newest: Applied | None, seq: int, device_ts: datetime) -> bool:
    """Whether an event of a track key arrives after a newer event of that key was applied.

    A device numbers its events (``seq``) in the order it stores them, so an event below the
    newest applied one was overtaken on the way (a broker restart can deliver a device's
    events newer-first); applied now, it would undo what the newer one said: a late
    ``cleared`` would cancel the ticket of a problem that is still there, a late ``new`` would
    join (or, once cleared, re-create) the newer alarm. It is stored, not applied. An event
    below the newest but with a later device time is not late: the device's counter began
    again (its outbox was replaced), and the count goes on from it."""
    return newest is not None and seq < newest.seq and device_ts <= newest.device_ts


@dataclass(frozen=True)
class SourceEvent:
    """One stored event of a sensor, as the ordering decisions need it."""

    event_id: str
    state: str
    seq: int
    ts: datetime
    incident_id: int | None


def _source_event(r: Any) -> SourceEvent:
    """A SourceEvent from an event row (a mapping: from the table or still in the batch)."""
    return SourceEvent(
        str(r["event_id"]), str(r["state"]), int(r["seq"]), r["ts"], r["incident_id"]
    )


def _begins_episode(prior: SourceEvent | None) -> bool:
    """Whether a sensor's ``new`` after ``prior`` (its stored event just below) starts an
    alarm episode rather than repeating one (an agent that restarted in alarm says ``new``
    again); with nothing below, it is taken to start one."""
    return prior is None or prior.state == "cleared"


def ended_episode(
    late: SourceEvent, before: Sequence[SourceEvent], after: Sequence[SourceEvent]
) -> tuple[SourceEvent, SourceEvent] | None:
    """The ``new`` and ``cleared`` of a sensor's alarm episode that a late event shows to have
    no incident of its own: an episode that in-order delivery gave a ticket, which the
    sensor's ``cleared`` cancelled, and which out-of-order delivery left without one or
    merged into another alarm's incident.

    ``before`` and ``after`` hold the sensor's stored events just below and just above the
    late one (nearest first, up to two each), by ``seq``. The cases:

    - a late ``cleared`` just above a ``new`` that no incident holds (it came late too);
    - a late ``new`` just below a ``cleared`` that no incident holds (it came late, or found
      no open incident to clear);
    - a late ``cleared`` between a ``new`` and a later ``new`` that one incident took in as one
      alarm: the first episode ended at the ``cleared``; the incident is the second one's;
    - a late ``new`` (or a late ``cleared`` below a ``new`` that no incident holds) between
      an incident's first ``new`` and the ``cleared`` that ended it: that incident took in
      two alarms and is the first one's; the second is that ``new`` and that ``cleared``.

    The intake records the episode as in-order delivery would have (a ticket opened, then
    cancelled) and leaves the other ticket alone. None: the late event is stored, not
    applied, and nothing else changes."""
    prior = before[0] if before else None
    next_ = after[0] if after else None
    if late.state == "cleared" and prior is not None and prior.state == "new":
        if not _begins_episode(before[1] if len(before) > 1 else None):
            return None
        if prior.incident_id is None:
            return prior, late
        if next_ is not None and next_.state == "new":
            if next_.incident_id == prior.incident_id:
                return prior, late
            end = after[1] if len(after) > 1 else None
            if (
                next_.incident_id is None
                and end is not None
                and end.state == "cleared"
                and end.incident_id == prior.incident_id
            ):
                return next_, end
        return None
    if late.state == "new" and _begins_episode(prior) and next_ is not None:
        if next_.state != "cleared":
            return None
        if next_.incident_id is None:
            return late, next_
        held_below = before[1].incident_id if len(before) > 1 else None
        if prior is not None and prior.incident_id is None and held_below == next_.incident_id:
            return late, next_
    return None


@dataclass(frozen=True)
class Observation:
    """One sighting of a problem, from a device event or a citizen report, ready to merge."""

    event_id: str
    device_id: str
    source_id: str
    source_type: SourceType
    kind: str
    state: Literal["new", "update", "cleared"]
    seq: int
    device_ts: datetime
    ts: datetime
    ts_source: str
    lat: float
    lon: float
    track_id: str | None = None
    confidence: float | None = None
    bbox: tuple[float, float, float, float] | None = None
    body: dict[str, Any] = field(default_factory=dict)
    snapshot: Evidence | None = None

    @property
    def key(self) -> str | None:
        return track_key(self.device_id, self.source_id, self.source_type, self.track_id)


Parsed = TypeVar("Parsed")


def in_device_order(
    batch: Sequence[tuple[Parsed, Observation | str]],
) -> list[tuple[Parsed, Observation | str]]:
    """The batch with each device's events in the device's order (by ``seq``, stable), each
    in the places the device's events took; other devices' and unreadable deliveries stay
    where they were. Events overtaken within one batch are then simply applied in order."""
    places: dict[str, list[int]] = collections.defaultdict(list)
    for i, (_, o) in enumerate(batch):
        if isinstance(o, Observation):
            places[o.device_id].append(i)
    out = list(batch)
    for spots in places.values():
        ordered = sorted((batch[i] for i in spots), key=lambda p: _seq_of(p[1]))
        for i, item in zip(spots, ordered, strict=True):
            out[i] = item
    return out


def _seq_of(o: Observation | str) -> int:
    return o.seq if isinstance(o, Observation) else 0


def touched(incident: Mapping[Any, Any], o: Observation) -> dict[str, Any]:
    """An open incident's new values once another track (or camera, or sensor) saw it too."""
    cams = list(incident["camera_ids"] or [])
    if o.source_type == "camera" and o.source_id not in cams:
        cams.append(o.source_id)
    keys = list(incident["track_keys"] or [])
    key = o.key
    if key and key not in keys:
        keys.append(key)
    return {
        "last_seen": max(incident["last_seen"], o.ts),
        "camera_ids": cams,
        "track_keys": keys,
        "bbox": list(o.bbox) if o.bbox else incident["bbox"],
        "events": incident["events"] + 1,
        "cleared_at": None,
    }


@dataclass
class IntakeStats:
    received: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    tickets_opened: int = 0
    batches: int = 0
    deferred: int = 0
    late: int = 0  # stored, not applied: a newer event of the same track was applied before


@dataclass
class BatchContext:
    """What one transaction reuses across its events (open load per worker, positions) and
    what it did (counted into the stats once it commits)."""

    conn: Connection
    cached: bool = False
    _load: dict[str, int] | None = None
    _positions: dict[str, tuple[float, float]] | None = None
    duplicates: int = 0
    dead_letters: int = 0
    opened: int = 0
    deferred: set[int] = field(default_factory=set)  # id() of deliveries left for later
    # With ``cached`` (a batch without savepoints): the open incidents of the batch's track
    # keys, read once up front and kept current as the batch goes (key -> (incident, cleared)),
    # and re-sightings by known tracks, written together when the batch ends.
    tracks: dict[str, tuple[OpenIncident, bool]] = field(default_factory=dict)
    seen: dict[int, dict[str, Any]] = field(default_factory=dict)
    # The newest applied event per track key (read up front, kept current), the rows of
    # ``track_seqs`` to write when the batch ends, and the batch's event rows of sensors (not
    # in the table until the batch ends) by (device, sensor).
    newest: dict[str, Applied] = field(default_factory=dict)
    advanced: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensor_rows: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    late: int = 0
    # Rows to insert when the batch flushes (``Intake.flush``): new incidents by their id
    # (taken up front), their tickets and audit rows, and track upserts by track key.
    new_incidents: dict[int, dict[str, Any]] = field(default_factory=dict)
    new_tickets: list[dict[str, Any]] = field(default_factory=list)
    new_audit: list[dict[str, Any]] = field(default_factory=list)
    track_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    # SQLite: the (incident, ticket) ids the next new incident takes; read after each flush.
    next_ids: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget the cached load and anything planned (a savepoint was rolled back)."""
        self._load = None
        self.new_incidents.clear()
        self.new_tickets.clear()
        self.new_audit.clear()
        self.track_rows.clear()
        self.seen.clear()
        self.next_ids = None

    def forget_incident(self, incident_id: int) -> None:
        """The incident closed: its tracks no longer lead to an open incident."""
        for key in [k for k, (inc, _) in self.tracks.items() if inc.id == incident_id]:
            del self.tracks[key]

    def flush_seen(self) -> None:
        """Write the pending re-sightings (before anything reads or rewrites an incident)."""
        if not self.seen:
            return
        with_box = [v for v in self.seen.values() if "bbox" in v]
        without = [v for v in self.seen.values() if "bbox" not in v]
        for group in (with_box, without):
            if group:
                self.conn.execute(_SEEN_AGAIN, group)
        self.seen.clear()

    @property
    def load(self) -> dict[str, int]:
        if self._load is None:
            self._load = ticket_ops.open_load(self.conn)
        return self._load

    @property
    def positions(self) -> dict[str, tuple[float, float]]:
        if self._positions is None:
            self._positions = worker_positions(self.conn)
        return self._positions


@dataclass
class Intake:
    """Turns event deliveries (and citizen reports) into incidents and tickets."""

    engine: Engine
    site: Site
    clock: Clock
    evidence_store: EvidenceStore
    on_committed: Callable[[], None] = lambda: None
    batch_size: int = 500
    stats: IntakeStats = field(default_factory=IntakeStats)

    def __post_init__(self) -> None:
        self.grids = GridIndex(self.site)
        self._queue: queue.Queue[Delivery] = queue.Queue()
        self._later: collections.deque[Delivery] = collections.deque()
        self._deferrals: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._devices = {d.id for d in self.site.devices}
        self._sources = {c.id: (c.device, "camera", c.position) for c in self.site.cameras} | {
            s.id: (s.device, "sensor", s.position) for s in self.site.sensors
        }
        self.clock_offsets: dict[str, float] = {}
        # Why the store refused the last batch (None once a batch went through): /health.
        self.store_error: str | None = None
        self._postgres = self.engine.dialect.name == "postgresql"
        upsert = (postgresql.insert if self._postgres else sqlite.insert)(incident_tracks)
        self._insert_events = (postgresql.insert if self._postgres else sqlite.insert)(
            events
        ).on_conflict_do_nothing()
        self._upsert_track = upsert.on_conflict_do_update(
            index_elements=[incident_tracks.c.track_key],
            set_={
                "incident_id": upsert.excluded.incident_id,
                "last_seen": upsert.excluded.last_seen,
                "cleared_at": None,
            },
        )
        newest = (postgresql.insert if self._postgres else sqlite.insert)(track_seqs)
        self._upsert_newest = newest.on_conflict_do_update(
            index_elements=[track_seqs.c.track_key],
            set_={"seq": newest.excluded.seq, "device_ts": newest.excluded.device_ts},
        )

    # -- threading -----------------------------------------------------------------------
    def submit(self, delivery: Delivery) -> None:
        """Called on the network thread: queue and return at once."""
        self._queue.put(delivery)

    def start(self) -> None:
        self.load_offsets()
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def backlog(self) -> int:
        return self._queue.qsize() + len(self._later)

    def _run(self) -> None:
        while not self._stop.is_set():
            batch: list[Delivery] = []
            while self._later and len(batch) < self.batch_size:
                batch.append(self._later.popleft())
            if not batch:
                try:
                    batch.append(self._queue.get(timeout=0.2))
                except queue.Empty:
                    continue
            elif self._queue.empty():
                self._stop.wait(0.005)  # only deferred events: give the other process a moment
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._process_with_retry(batch)
            except Exception:
                # Not a store outage and not one event's fault (those are dead-lettered): a
                # fault in the intake itself. Keep the messages; they come round again.
                log.exception("intake batch of %d failed; messages stay unacknowledged", len(batch))
                for d in batch:
                    self._queue.put(d)
                self._stop.wait(1)

    def _process_with_retry(self, batch: list[Delivery]) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self.process(batch)
            except Exception as exc:
                if not store_unavailable(exc):
                    raise
                # The store is unavailable (disk full, locked, server away, a deadlock): keep
                # the batch, do not ack, try again; the broker keeps the messages meanwhile.
                self.store_error = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
                log.error(
                    "ticket store unavailable, retrying in %.1fs: %s", delay, self.store_error
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 30)
            else:
                if self.store_error is not None:
                    log.info("ticket store writable again")
                    self.store_error = None
                return

    # -- device clocks -------------------------------------------------------------------
    def load_offsets(self) -> None:
        with self.engine.connect() as conn:
            for device_id, offset in conn.execute(
                select(devices.c.device_id, devices.c.clock_offset_s).where(
                    devices.c.clock_offset_s.is_not(None)
                )
            ):
                self.clock_offsets[device_id] = float(offset)

    def heartbeat(self, device_id: str, device_ts: datetime, received_at: datetime) -> float:
        """Note a live heartbeat's time; returns the device's updated clock offset (seconds)."""
        sample = (device_ts - received_at).total_seconds()
        offset = next_offset(self.clock_offsets.get(device_id), sample)
        if abs(offset) > SKEW_TOLERANCE.total_seconds() and (
            abs(self.clock_offsets.get(device_id, 0.0)) <= SKEW_TOLERANCE.total_seconds()
        ):
            log.warning(
                "device clock is off by %.0fs; correcting its event times",
                offset,
                extra={"device_id": device_id},
            )
        self.clock_offsets[device_id] = offset
        return offset

    # -- parsing -------------------------------------------------------------------------
    def observe(self, d: Delivery, received_at: datetime) -> Observation:
        """Parse and check one delivery; raises Rejected or MessageError with the reason."""
        parsed = topics.parse_edge(d.topic)
        if parsed is None or parsed.channel != "event":
            raise Rejected(f"not an event topic: {d.topic}")
        ev = Event.from_json(d.payload)
        if ev.device_id != parsed.device_id:
            raise Rejected(
                f"device_id {ev.device_id!r} does not match topic device {parsed.device_id!r}"
            )
        if ev.device_id not in self._devices:
            raise Rejected(f"unknown device {ev.device_id!r}")
        if ev.kind not in self.site.categories:
            raise Rejected(f"unknown category {ev.kind!r}")
        source = self._sources.get(ev.source_id)
        if source is not None and source[0] != ev.device_id:
            raise Rejected(f"source {ev.source_id!r} belongs to device {source[0]!r}")
        pos = ev.position or (source[2] if source else None)
        if pos is None:
            raise Rejected(f"event has no position and source {ev.source_id!r} is not in the site")
        ts, ts_source = event_time(ev.ts, received_at, self.clock_offsets.get(ev.device_id))
        if ts_source != "device":
            log.info(
                "event time %s taken from %s (device time %s)",
                ts.isoformat(),
                ts_source,
                ev.ts.isoformat(),
                extra={"device_id": ev.device_id, "event_id": str(ev.event_id)},
            )
        return Observation(
            event_id=str(ev.event_id),
            device_id=ev.device_id,
            source_id=ev.source_id,
            source_type=ev.source_type,
            kind=ev.kind,
            state=ev.state,
            seq=ev.seq,
            device_ts=ev.ts,
            ts=ts,
            ts_source=ts_source,
            lat=pos.lat,
            lon=pos.lon,
            track_id=ev.track_id,
            confidence=ev.confidence,
            bbox=ev.bbox,
            body=ev.model_dump(mode="json", by_alias=True, exclude={"snapshot"}, exclude_none=True),
            snapshot=ev.snapshot,
        )

    def citizen(
        self, *, kind: str, lat: float, lon: float, at: datetime, body: dict[str, Any]
    ) -> Observation:
        """An observation for a citizen's report (Open311), merged like any other."""
        if kind not in self.site.categories:
            raise Rejected(f"unknown category {kind!r}")
        return Observation(
            event_id=str(uuid.uuid4()),
            device_id=CITIZEN_DEVICE,
            source_id="open311",
            source_type="citizen",
            kind=kind,
            state="new",
            seq=0,
            device_ts=at,
            ts=at,
            ts_source="received",
            lat=lat,
            lon=lon,
            body=body,
        )

    # -- processing ----------------------------------------------------------------------
    def lock(
        self, conn: Connection, observations: Iterable[Observation], *, wait: bool = True
    ) -> list[Observation]:
        """Take the merge locks of these observations (PostgreSQL) and return those whose locks
        are all held: every one when waiting (taken in ascending order, so no deadlock), those
        nobody else holds when only trying."""
        pending = list(observations)
        if not self._postgres:
            return pending
        needs = [
            merge_locks(o.kind, o.lat, o.lon, self.site.categories[o.kind].merge_radius_m, o.key)
            for o in pending
        ]
        keys = sorted(set().union(*needs))
        if not keys:
            return pending
        if wait:  # one round trip
            conn.execute(_MERGE_LOCKS, {"keys": keys})
            return pending
        held = set(conn.execute(_TRY_MERGE_LOCKS, {"keys": keys}).scalars())
        return [o for o, need in zip(pending, needs, strict=True) if need <= held]

    def process(self, batch: list[Delivery]) -> None:
        """Process deliveries in one transaction, then ack them.

        The batch first runs without savepoints (the common case: every event is fine); if any
        event raises, the whole transaction rolls back and the batch is redone with one
        savepoint per event, so the failing one is dead-lettered and the rest go through. If
        that fails too (outside any one event's savepoint), each event gets a transaction of
        its own and the one that still fails is dead-lettered in another.

        Raises only when the store cannot take writes (``store_unavailable``): then nothing
        of the batch is acknowledged (events already committed alone come back as duplicates).

        On PostgreSQL the merge locks are tried, not waited for: an event whose map squares
        another dispatcher is working on right now is deferred to a later batch (not
        acknowledged meanwhile), so two processes work in parallel instead of queueing behind
        each other's whole batch. An event deferred STUBBORN_AFTER times is processed in a
        transaction of its own that waits for its locks (taken in order: no deadlock).
        """
        stubborn = [d for d in batch if self._deferrals.get(id(d), 0) >= STUBBORN_AFTER]
        rest = [d for d in batch if self._deferrals.get(id(d), 0) < STUBBORN_AFTER]
        if stubborn:
            self._process(stubborn, wait=True)
        if rest:
            self._process(rest, wait=False)

    def _process(self, batch: list[Delivery], *, wait: bool) -> None:
        received_at = self.clock.now()
        parsed = in_device_order([(d, self._parse(d, received_at)) for d in batch])
        committed = self._commit_batch(parsed, received_at, wait=wait)
        deferred = set().union(*(ctx.deferred for ctx in committed))
        done = [d for d in batch if id(d) not in deferred]
        self.stats.received += len(done)
        self.stats.duplicates += sum(ctx.duplicates for ctx in committed)
        self.stats.dead_letters += sum(ctx.dead_letters for ctx in committed)
        self.stats.tickets_opened += sum(ctx.opened for ctx in committed)
        self.stats.deferred += len(deferred)
        self.stats.late += sum(ctx.late for ctx in committed)
        self.stats.batches += 1
        for d in done:
            d.ack()
            self._deferrals.pop(id(d), None)
        for d in batch:
            if id(d) in deferred:
                self._deferrals[id(d)] = self._deferrals.get(id(d), 0) + 1
                self._later.append(d)
        self.on_committed()

    def _parse(self, d: Delivery, received_at: datetime) -> Observation | str:
        """The delivery's observation, or the reason it goes to the dead-letter table."""
        try:
            return self.observe(d, received_at)
        except (Rejected, MessageError) as exc:
            return str(exc)
        except Exception as exc:
            log.exception("event from %s could not be read; dead-lettered", d.topic)
            return internal_error(exc)

    def _commit_batch(
        self, parsed: list[tuple[Delivery, Observation | str]], received_at: datetime, *, wait: bool
    ) -> list[BatchContext]:
        """Commit the batch: in one transaction, else with a savepoint per event, else in one
        transaction per event; the contexts of the transactions that committed."""
        try:
            return [self._commit(parsed, received_at, careful=False, wait=wait)]
        except Exception as exc:
            if store_unavailable(exc):
                raise
            log.warning(
                "a batch of %d events failed; redoing it event by event", len(parsed), exc_info=True
            )
        try:
            return [self._commit(parsed, received_at, careful=True, wait=wait)]
        except Exception as exc:
            if store_unavailable(exc):
                raise
            log.exception(
                "a batch of %d events failed outside any one event; one transaction per event",
                len(parsed),
            )
        return [self._commit_alone(d, o, received_at, wait=wait) for d, o in parsed]

    def _commit_alone(
        self, d: Delivery, o: Observation | str, received_at: datetime, *, wait: bool
    ) -> BatchContext:
        """One delivery in a transaction of its own; if it fails, its dead letter in another."""
        try:
            return self._commit([(d, o)], received_at, careful=True, wait=wait)
        except Exception as exc:
            if store_unavailable(exc):
                raise
            log.exception("event from %s failed on its own; dead-lettered", d.topic)
            reason = internal_error(exc)
            if isinstance(o, str):  # it failed while going to the dead-letter table already
                reason = f"{reason}; refused before that: {o}"
        try:
            with self.engine.begin() as conn:
                ctx = BatchContext(conn)
                self._dead_letter(conn, d, reason, received_at, ctx)
                return ctx
        except Exception as exc:
            if store_unavailable(exc):
                raise
            raise StoreRefused(f"cannot dead-letter an event from {d.topic}: {exc!r}") from exc

    def _commit(
        self,
        parsed: list[tuple[Delivery, Observation | str]],
        received_at: datetime,
        careful: bool,
        wait: bool = True,
    ) -> BatchContext:
        with self.engine.begin() as conn:
            candidates = [o for _, o in parsed if isinstance(o, Observation)]
            observations = self.lock(conn, candidates, wait=wait)
            ctx = BatchContext(conn, cached=not careful)
            ready = {id(o) for o in observations}
            ctx.deferred = {
                id(d) for d, o in parsed if isinstance(o, Observation) and id(o) not in ready
            }
            fresh = self._fresh(conn, observations)
            if ctx.cached:
                self._prefetch_tracks(ctx, observations)
                self._prefetch_newest(ctx, observations)
            rows: list[dict[str, Any]] = []
            for d, o in parsed:
                if isinstance(o, str):
                    self._dead_letter(conn, d, o, received_at, ctx)
                    continue
                if id(d) in ctx.deferred:
                    continue
                if o.event_id not in fresh:
                    ctx.duplicates += 1
                    log.debug("duplicate event ignored", extra={"event_id": o.event_id})
                    continue
                fresh.discard(o.event_id)  # a second copy in the same batch is a duplicate
                if not careful:
                    rows.append(self._apply(conn, o, received_at, ctx))
                    continue
                opened = ctx.opened
                try:
                    with conn.begin_nested():  # the event's whole work, its own row included
                        conn.execute(self._insert_events, [self._apply(conn, o, received_at, ctx)])
                except BadImage as exc:
                    self._dead_letter(conn, d, str(exc), received_at, ctx)
                except Exception as exc:
                    if store_unavailable(exc):
                        raise
                    log.exception("event from %s failed; dead-lettered", d.topic)
                    ctx.reset()
                    ctx.opened = opened
                    self._dead_letter(conn, d, internal_error(exc), received_at, ctx)
            self.flush(ctx)
            if ctx.advanced:
                conn.execute(self._upsert_newest, list(ctx.advanced.values()))
            if rows:
                conn.execute(self._insert_events, rows)
        return ctx

    def _prefetch_tracks(self, ctx: BatchContext, observations: list[Observation]) -> None:
        keys = list({k for o in observations if (k := o.key) is not None})
        for i in range(0, len(keys), 500):
            for r in ctx.conn.execute(_OPEN_TRACKS, {"b_keys": keys[i : i + 500]}):
                inc = OpenIncident(r.id, r.kind, r.lat, r.lon, r.last_seen, (r.track_key,))
                ctx.tracks[r.track_key] = (inc, r.cleared_at is not None)

    def _prefetch_newest(self, ctx: BatchContext, observations: list[Observation]) -> None:
        keys = list({k for o in observations if (k := o.key) is not None})
        for i in range(0, len(keys), 500):
            for r in ctx.conn.execute(_NEWEST, {"b_keys": keys[i : i + 500]}):
                ctx.newest[r.track_key] = Applied(r.seq, r.device_ts)

    def _fresh(self, conn: Connection, observations: list[Observation]) -> set[str]:
        """The event ids among these that are not stored yet."""
        ids = list({o.event_id for o in observations})
        stored: set[str] = set()
        for i in range(0, len(ids), 500):
            stored.update(conn.execute(_STORED_EVENTS, {"b_ids": ids[i : i + 500]}).scalars())
        return set(ids) - stored

    def _dead_letter(
        self, conn: Connection, d: Delivery, reason: str, at: datetime, ctx: BatchContext
    ) -> None:
        parsed = topics.parse_edge(d.topic)
        ctx.dead_letters += 1
        log.warning(
            "dead letter from %s: %s",
            d.topic,
            reason,
            extra={"topic": d.topic, "device_id": parsed.device_id if parsed else None},
        )
        conn.execute(
            insert(dead_letters).values(
                received_at=at,
                topic=d.topic[:255],
                device_id=parsed.device_id if parsed else None,
                reason=reason[:2000],
                payload=d.payload[:MAX_DEAD_LETTER_BYTES],
                size=len(d.payload),
            )
        )

    def record(
        self,
        conn: Connection,
        o: Observation,
        received_at: datetime,
        ctx: BatchContext | None = None,
    ) -> int | None:
        """Store one observation and apply it; returns the incident id (None for a duplicate
        or a ``cleared`` that matched nothing). The caller holds the merge locks."""
        ctx = ctx or BatchContext(conn)
        if o.event_id not in self._fresh(conn, [o]):
            self.stats.duplicates += 1
            return None
        row = self._apply(conn, o, received_at, ctx)
        conn.execute(self._insert_events, [row])
        self.stats.tickets_opened += ctx.opened
        self.stats.late += ctx.late
        return row["incident_id"]  # type: ignore[no-any-return]

    def _apply(
        self, conn: Connection, o: Observation, received_at: datetime, ctx: BatchContext
    ) -> dict[str, Any]:
        """Merge one new observation into its incident (or open one), in its device's order: one
        that arrived after a newer event of its track was applied is stored, not applied (and
        may complete an alarm episode that ended meanwhile). Returns its event row."""
        evidence_id = self._store_evidence(conn, o, received_at)
        key = o.key
        newest = self._newest(conn, key, ctx) if key is not None else None
        if key is not None and newest is not None and arrived_late(newest, o.seq, o.device_ts):
            incident_id = self._late(conn, o, key, newest, ctx)
        else:
            incident_id = self._merge(conn, o, ctx)
            if key is not None:
                self._advance(conn, key, o, ctx)
        if evidence_id is not None and incident_id is not None:
            self.flush(ctx)  # the incident's ticket may be still to insert
            ticket_id = conn.execute(
                select(tickets_table.c.id).where(tickets_table.c.incident_id == incident_id)
            ).scalar()
            conn.execute(
                update(evidence).where(evidence.c.id == evidence_id).values(ticket_id=ticket_id)
            )
        row = {
            "event_id": o.event_id,
            "device_id": o.device_id,
            "source_id": o.source_id,
            "source_type": o.source_type,
            "kind": o.kind,
            "state": o.state,
            "seq": o.seq,
            "device_ts": o.device_ts,
            "ts": o.ts,
            "ts_source": o.ts_source,
            "received_at": received_at,
            "lat": o.lat,
            "lon": o.lon,
            "confidence": o.confidence,
            "incident_id": incident_id,
            "evidence_id": evidence_id,
            "body": o.body,
        }
        if ctx.cached and o.source_type == "sensor":
            ctx.sensor_rows.setdefault((o.device_id, o.source_id), []).append(row)
        if not ctx.cached:
            self.flush(ctx)
        return row

    def _merge(self, conn: Connection, o: Observation, ctx: BatchContext) -> int | None:
        """Apply one observation to its incident (or open one); the incident's id (None for a
        ``cleared`` that matched nothing)."""
        incident, own_track = self._find_incident(conn, o, ctx)
        if o.state == "cleared":
            if incident is not None:
                self.flush(ctx)
                self._cleared(conn, incident, o, ctx)
            return incident.id if incident else None
        if incident is None:
            return self._open(conn, o, ctx)
        planned = ctx.new_incidents.get(incident.id)
        if planned is not None:  # opened by this batch: its row is still to insert
            planned.update(touched(planned, o))
            if own_track:
                return incident.id
            self._track(ctx, incident.id, o)
        elif own_track:
            self._seen_again(ctx, incident.id, o)
            return incident.id
        else:
            ctx.flush_seen()  # its box, before the sighting's own
            self._touch(conn, incident, o, ctx)
        if ctx.cached and o.key is not None:
            ctx.tracks[o.key] = (incident, False)
        return incident.id

    # -- the device's order --------------------------------------------------------------
    def _newest(self, conn: Connection, key: str, ctx: BatchContext) -> Applied | None:
        """The newest applied event of the track key (read up front in a cached batch)."""
        if ctx.cached:
            return ctx.newest.get(key)
        r = conn.execute(_NEWEST_ONE, {"b_key": key}).first()
        return None if r is None else Applied(r.seq, r.device_ts)

    def _advance(self, conn: Connection, key: str, o: Observation, ctx: BatchContext) -> None:
        """The observation was applied: it is its track's newest (written when a cached batch
        ends, at once in a careful one, inside the event's savepoint)."""
        values = {"track_key": key, "seq": o.seq, "device_ts": o.device_ts}
        if ctx.cached:
            ctx.newest[key] = Applied(o.seq, o.device_ts)
            ctx.advanced[key] = values
        else:
            conn.execute(self._upsert_newest, values)

    def _late(
        self, conn: Connection, o: Observation, key: str, newest: Applied, ctx: BatchContext
    ) -> int | None:
        """An observation that arrived after a newer event of its track was applied: stored
        without changing any incident; a sensor's may complete an alarm episode that ended
        before the newer one began, which then gets its own (cancelled) ticket. Returns the
        incident it is stored with (None: not applied)."""
        ctx.late += 1
        episode = None
        if o.source_type == "sensor" and o.state in ("new", "cleared"):
            me = SourceEvent(o.event_id, o.state, o.seq, o.ts, None)
            episode = ended_episode(me, *self._neighbours(conn, o, ctx))
        log.info(
            "%s %s seq %d of %s arrived after seq %d was applied; stored, not applied%s",
            o.kind,
            o.state,
            o.seq,
            key,
            newest.seq,
            "; it completes an earlier alarm episode" if episode else "",
            extra={"device_id": o.device_id, "event_id": o.event_id},
        )
        if episode is None:
            return None
        incident_id = self._ended_episode(conn, o, key, *episode, ctx)
        return incident_id if o.event_id in (episode[0].event_id, episode[1].event_id) else None

    def _neighbours(
        self, conn: Connection, o: Observation, ctx: BatchContext
    ) -> tuple[list[SourceEvent], list[SourceEvent]]:
        """The sensor's stored events just below and just above the observation (nearest
        first, up to two each), by seq: from the table and, in a cached batch, from the
        batch's rows."""
        args = {"b_device": o.device_id, "b_source": o.source_id, "b_seq": o.seq}
        below = [_source_event(r) for r in conn.execute(_SOURCE_BEFORE, args).mappings()]
        above = [_source_event(r) for r in conn.execute(_SOURCE_AFTER, args).mappings()]
        for row in ctx.sensor_rows.get((o.device_id, o.source_id), []):
            if row["seq"] < o.seq:
                below.append(_source_event(row))
            elif row["seq"] > o.seq:
                above.append(_source_event(row))
        below.sort(key=lambda e: e.seq, reverse=True)
        above.sort(key=lambda e: e.seq)
        return below[:2], above[:2]

    def _ended_episode(
        self,
        conn: Connection,
        o: Observation,
        key: str,
        new: SourceEvent,
        cleared: SourceEvent,
        ctx: BatchContext,
    ) -> int:
        """Record a sensor's alarm episode that ended before a newer one was applied, as
        in-order delivery would have: an incident with a ticket opened at its ``new`` and
        cancelled (cleared by the sensor) at its ``cleared``. Nobody is sent: the problem was
        gone before we knew of it. The sensor's track stays with the newer incident."""
        self.flush(ctx)  # what the batch planned goes first: this inserts with new ids
        incident = self._incident_row(o, first_seen=new.ts, track_keys=[key], events=2)
        incident["last_seen"] = max(new.ts, cleared.ts)
        incident["cleared_at"] = cleared.ts
        incident_id = int(conn.execute(_INSERT_INCIDENT, incident).scalar_one())
        incident["id"] = incident_id
        actor = f"device:{o.device_id}"
        ticket = ticket_ops.create(conn, site=self.site, incident=incident, at=new.ts, actor=actor)
        ticket_ops.step(
            conn,
            ticket,
            Transition.CANCELLED,
            at=max(new.ts, cleared.ts),
            actor=actor,
            reason=Reason(ReasonCode.CLEARED, {"by": o.source_type, "id": o.source_id}),
            close_reason=CloseReason.CLEARED_BY_SENSOR.value,
        )
        ctx.opened += 1
        rows = {r["event_id"]: r for r in ctx.sensor_rows.get((o.device_id, o.source_id), [])}
        for ev in (new, cleared):
            if ev.event_id == o.event_id:
                continue
            if ev.event_id in rows:  # still to be written with the batch
                rows[ev.event_id]["incident_id"] = incident_id
            else:
                conn.execute(_MOVE_EVENT, {"b_event_id": ev.event_id, "b_incident_id": incident_id})
        log.info(
            "%s: alarm episode seq %d-%d of %s recorded as ticket %s, cancelled",
            o.kind,
            new.seq,
            cleared.seq,
            key,
            ticket["id"],
            extra={"device_id": o.device_id, "ticket_id": ticket["id"]},
        )
        return incident_id

    def _store_evidence(self, conn: Connection, o: Observation, at: datetime) -> int | None:
        if o.snapshot is None:
            return None
        try:
            jpeg, crop = o.snapshot.jpeg(), o.snapshot.crop()
        except binascii.Error as exc:
            raise BadImage(f"snapshot is not valid base64: {exc}") from exc
        stored = self.evidence_store.save(jpeg, "snapshot", at)
        if crop:
            self.evidence_store.save(crop, "crop", at)
        return record_evidence(conn, stored, "snapshot", at)

    def _seen_again(self, ctx: BatchContext, incident_id: int, o: Observation) -> None:
        """One more sighting of a stored incident by a track already on it: last seen, count,
        box."""
        pending = ctx.seen.get(incident_id) if ctx.cached else None
        if pending is None:
            pending = {"b_id": incident_id, "b_ts": o.ts, "b_n": 0}
        pending["b_ts"] = max(pending["b_ts"], o.ts)
        pending["b_n"] += 1
        if o.bbox is not None:
            pending["bbox"] = list(o.bbox)
        if ctx.cached:
            ctx.seen[incident_id] = pending
        else:
            ctx.conn.execute(_SEEN_AGAIN, pending)

    def _find_incident(
        self, conn: Connection, o: Observation, ctx: BatchContext | None = None
    ) -> tuple[OpenIncident | None, bool]:
        """The open incident this observation belongs to: its track's, else the nearest of the
        same kind within the merge radius and window (a ``cleared`` with a key: only its own).
        The flag says it was found by its own track, which had not been cleared.

        In a cached batch the tracks come from the batch's read-ahead (kept current as the
        batch opens, attaches and closes incidents). Every merge lock of the batch is held,
        so no other dispatcher changes these incidents meanwhile; a ticket closed through
        the API in that moment closes its incident too late for this batch, and a sighting
        here still attaches to it (the next one opens a new incident)."""
        key = o.key
        if key is not None:
            if ctx is not None and ctx.cached:
                hit = ctx.tracks.get(key)
                found, cleared = hit if hit is not None else (None, False)
            else:
                row = conn.execute(_BY_TRACK, {"b_key": key}).first()
                found = (
                    None
                    if row is None
                    else OpenIncident(row.id, row.kind, row.lat, row.lon, row.last_seen, (key,))
                )
                cleared = row is not None and row.cleared_at is not None
            if found is not None:
                return found, not cleared
            if o.state == "cleared":
                return None, False
        category = self.site.categories[o.kind]
        dlat, dlon = search_box(o.lat, category.merge_radius_m)
        rows = conn.execute(
            _NEARBY,
            {
                "b_kind": o.kind,
                "b_lat0": o.lat - dlat,
                "b_lat1": o.lat + dlat,
                "b_lon0": o.lon - dlon,
                "b_lon1": o.lon + dlon,
            },
        ).all()
        nearby: list[Mapping[Any, Any]] = [row._mapping for row in rows]
        pending = ctx.seen if ctx is not None else {}
        if ctx is not None:  # incidents the batch opened and has still to insert
            nearby += [
                r
                for r in ctx.new_incidents.values()
                if r["kind"] == o.kind
                and abs(r["lat"] - o.lat) <= dlat
                and abs(r["lon"] - o.lon) <= dlon
            ]
        candidates = [
            OpenIncident(
                r["id"],
                r["kind"],
                r["lat"],
                r["lon"],
                max(r["last_seen"], pending[r["id"]]["b_ts"])
                if r["id"] in pending
                else r["last_seen"],
            )
            for r in nearby
        ]
        return match_incident(
            kind=o.kind,
            lat=o.lat,
            lon=o.lon,
            at=o.ts,
            key=None,
            category=category,
            candidates=candidates,
        ), False

    def _track(self, ctx: BatchContext, incident_id: int, o: Observation) -> None:
        """Attach the observation's track (or sensor) to the incident, seen now (a track that
        belonged to a closed incident moves to this one), when the batch flushes."""
        key = o.key
        if key is None:
            return
        planned = ctx.track_rows.get(key)
        ctx.track_rows[key] = {
            "track_key": key,
            "incident_id": incident_id,
            "first_seen": o.ts if planned is None else planned["first_seen"],
            "last_seen": o.ts,
            "cleared_at": None,
        }

    def flush(self, ctx: BatchContext) -> None:
        """Insert what the batch planned (new incidents, their tickets and audit rows, in the
        order they were opened; track upserts) and write the pending re-sightings, so the
        tables hold everything the batch did so far."""
        conn = ctx.conn
        if ctx.new_incidents:
            conn.execute(_ADD_INCIDENTS, list(ctx.new_incidents.values()))
            ticket_ops.insert_planned(conn, ctx.new_tickets, ctx.new_audit)
            ctx.new_incidents.clear()
            ctx.new_tickets.clear()
            ctx.new_audit.clear()
        ctx.next_ids = None  # whatever inserts next may take the next ids itself
        if ctx.track_rows:
            conn.execute(self._upsert_track, list(ctx.track_rows.values()))
            ctx.track_rows.clear()
        ctx.flush_seen()

    def _take_ids(self, ctx: BatchContext) -> tuple[int, int]:
        """Ids for a new incident and its ticket."""
        if self._postgres:
            incident_id, ticket_id = ctx.conn.execute(_NEXT_IDS).one()
            return int(incident_id), int(ticket_id)
        if ctx.next_ids is None:
            largest = ctx.conn.execute(_LARGEST_IDS).one()
            ctx.next_ids = ((largest[0] or 0) + 1, (largest[1] or 0) + 1)
        ids = ctx.next_ids
        ctx.next_ids = (ids[0] + 1, ids[1] + 1)
        return ids

    def _incident_row(
        self, o: Observation, *, first_seen: datetime, track_keys: list[str], events: int
    ) -> dict[str, Any]:
        """A new open incident of ``o``'s kind at ``o``'s place (its grid cell and street)."""
        cell = self.grids.locate(o.lat, o.lon)
        return {
            "kind": o.kind,
            "status": "open",
            "lat": o.lat,
            "lon": o.lon,
            "grid_id": cell.id if cell else None,
            "street_id": cell.street if cell else None,
            "source": o.source_type,
            "first_seen": first_seen,
            "last_seen": first_seen,
            "cleared_at": None,
            "camera_ids": [],
            "track_keys": track_keys,
            "bbox": None,
            "events": events,
        }

    def _open(self, conn: Connection, o: Observation, ctx: BatchContext) -> int:
        key = o.key
        incident = self._incident_row(o, first_seen=o.ts, track_keys=[key] if key else [], events=1)
        if o.source_type == "camera":
            incident["camera_ids"] = [o.source_id]
        incident["bbox"] = list(o.bbox) if o.bbox else None
        incident_id, ticket_id = self._take_ids(ctx)
        incident["id"] = incident_id
        actor = f"device:{o.device_id}" if o.source_type != "citizen" else "citizen:open311"
        # Assigned at receive time: a device's late-delivered event still gets a worker who
        # is on duty now.
        ticket, audit_rows = ticket_ops.plan_assigned(
            site=self.site,
            incident=incident,
            ticket_id=ticket_id,
            at=o.ts,
            actor=actor,
            assign_at=max(o.ts, self.clock.now()),
            positions=ctx.positions,
            load_by_worker=ctx.load,
        )
        ctx.new_incidents[incident_id] = incident
        ctx.new_tickets.append(ticket)
        ctx.new_audit.extend(audit_rows)
        self._track(ctx, incident_id, o)
        if ctx.cached and key is not None:
            ctx.tracks[key] = (OpenIncident(incident_id, o.kind, o.lat, o.lon, o.ts, (key,)), False)
        ctx.opened += 1
        return incident_id

    def _touch(
        self, conn: Connection, inc: OpenIncident, o: Observation, ctx: BatchContext
    ) -> None:
        """A sighting by another track of a stored open incident."""
        row = conn.execute(_INCIDENT, {"b_id": inc.id}).one()
        conn.execute(_UPDATE_INCIDENT, {"b_id": inc.id, **touched(row._mapping, o)})
        self._track(ctx, inc.id, o)

    def _cleared(
        self, conn: Connection, inc: OpenIncident, o: Observation, ctx: BatchContext
    ) -> None:
        """A camera or sensor says the problem is gone. Once every track on the incident says
        so: cancel the ticket if nobody has set out yet, or settle a resolved one."""
        key = o.key
        if key is not None:
            conn.execute(
                update(incident_tracks)
                .where(incident_tracks.c.track_key == key)
                .values(cleared_at=o.ts, last_seen=o.ts)
            )
            if ctx.cached:
                ctx.tracks[key] = (inc, True)
            still_seen = conn.execute(
                select(incident_tracks.c.track_key)
                .where(
                    incident_tracks.c.incident_id == inc.id, incident_tracks.c.cleared_at.is_(None)
                )
                .limit(1)
            ).first()
            if still_seen is not None:
                log.info(
                    "incident %s: %s cleared, %s still sees it", inc.id, key, still_seen.track_key
                )
                return
        conn.execute(update(incidents).where(incidents.c.id == inc.id).values(cleared_at=o.ts))
        ticket = (
            conn.execute(select(tickets_table).where(tickets_table.c.incident_id == inc.id))
            .mappings()
            .first()
        )
        if ticket is None:
            return
        status = Status(ticket["status"])
        not_started = status in (Status.OPEN, Status.ASSIGNED) or (
            status is Status.ACCEPTED and ticket["arrived_at"] is None
        )
        if not_started:
            ctx.forget_incident(inc.id)
            ticket_ops.apply(
                conn,
                ticket["id"],
                Transition.CANCELLED,
                at=max(o.ts, ticket["opened_at"]),
                actor=f"device:{o.device_id}",
                reason=Reason(ReasonCode.CLEARED, {"by": o.source_type, "id": o.source_id}),
                close_reason=(
                    CloseReason.CLEARED_BY_CAMERA
                    if o.source_type == "camera"
                    else CloseReason.CLEARED_BY_SENSOR
                ).value,
            )
        elif status is Status.RESOLVED:
            ctx.forget_incident(inc.id)  # closed if the verification says so
            verify.settle(conn, self.site, ticket["id"], self.clock.now())
