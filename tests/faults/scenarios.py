"""The fault scenarios, each a function that runs real processes through one failure and returns
its figures. The tests in this folder run them in a reduced form; ``python -m
tests.faults.report`` runs them at full length and writes the table in docs/reliability.md.

Every scenario streams sensor readings into the sensor nodes (each reading that crosses a
threshold makes exactly one event, and each alarm episode must make exactly one ticket), breaks
something mid-stream, repairs it, waits until everything has drained, and then counts.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from dispatcher.metrics import InfluxV1, Period, totals
from dispatcher.store.schema import audit, tickets
from simulators.local_services import InfluxServer
from tests.faults.ledger import Counts, Ledger, TimerCheck, check_timers
from tests.faults.rig import Rig, SensorNode, SiteOptions


@dataclass
class Outcome:
    """What one scenario did, what it counted, and which checks held."""

    name: str
    what: str
    counts: Counts
    recovery_s: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    drained: bool = False
    repaired: bool = True  # False: nothing breaks and is repaired (no recovery time)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def failed(self) -> list[str]:
        return [k for k, v in self.checks.items() if not v]

    def explain(self) -> str:
        return (
            f"{self.name}: failed {self.failed()}; counts {self.counts}; "
            f"notes {self.notes}; recovery {self.recovery_s}"
        )


class Stream:
    """Flips sensors round-robin at a steady rate from a background thread."""

    def __init__(self, rig: Rig, per_s: float, nodes: list[str] | None = None) -> None:
        self.rig = rig
        self.every_s = 1.0 / per_s
        chosen = [rig.nodes[n] for n in (nodes or list(rig.nodes))]
        self.targets = [(node, s.id) for node in chosen for s in node.sensors]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self.written = 0

    def _run(self) -> None:
        cycle = itertools.cycle(self.targets)
        next_at = time.monotonic()
        while not self._stop.is_set():
            node, sensor_id = next(cycle)
            node.flip(sensor_id)
            self.written += 1
            next_at += self.every_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def settle_alarms(rig: Rig) -> None:
    """Clear every sensor still in alarm so each episode ends (its ticket is cancelled)."""
    for node in rig.nodes.values():
        for sensor_id, on in list(node.alarm.items()):
            if on:
                node.flip(sensor_id)


def drain(
    rig: Rig, timeout_s: float, *, metrics: bool = False, quiet_s: float = 1.5
) -> float | None:
    """Wait until the agents have turned every reading written so far into an event (their
    outbox counters stay still for ``quiet_s``), every running node's outbox is empty, the
    dispatcher stored every event the nodes created, every audit row is pushed (and, with
    ``metrics``, in InfluxDB). Returns the seconds it took, or None on timeout."""
    started = time.monotonic()
    last: dict[str, tuple[int, int, int]] = {}
    still_since = time.monotonic()
    while time.monotonic() - started < timeout_s:
        created = {d: n.outbox_counts() for d, n in rig.nodes.items()}
        if created != last:
            last, still_since = created, time.monotonic()
        quiet = time.monotonic() - still_since >= quiet_s
        if quiet and all(q == 0 for _c, _e, q in created.values()):
            with Ledger(rig) as ledger:
                got = Counter(str(e["device_id"]) for e in ledger.device_events())
                if all(got[d] + e >= c for d, (c, e, _q) in created.items()) and (
                    ledger.unpushed() == 0 and (not metrics or ledger.unsent_metrics() == 0)
                ):
                    return time.monotonic() - started - quiet_s
        time.sleep(0.25)
    return None


def backlog_cleared(rig: Rig, repaired: datetime) -> float | None:
    """Seconds from the repair until the last event created before it reached the dispatcher
    (0 when nothing was waiting); None when some such event never arrived."""
    with Ledger(rig) as ledger:
        waiting = [e["received_at"] for e in ledger.device_events() if e["device_ts"] <= repaired]
        for d, node in rig.nodes.items():
            created, evicted, _q = node.outbox_counts()
            got = {int(e["seq"]) for e in ledger.device_events() if e["device_id"] == d}
            if len(set(range(1, created + 1)) - got) > evicted:
                return None
    return max(0.0, max(((t - repaired).total_seconds() for t in waiting), default=0.0))


def standard_checks(out: Outcome, *, every_reading_stored: bool = True) -> None:
    """Zero loss, zero duplicate tickets, every push delivered, drained; and, unless the
    scenario takes readings away from an agent (killed, or its disk full), every reading
    written became an event."""
    c = out.counts
    if every_reading_stored:
        out.checks["every reading became an event"] = c.readings_written == c.events_sent
    out.checks["zero events lost"] = c.events_lost == 0 and c.events_received >= c.events_sent
    out.checks["zero duplicate tickets"] = c.tickets_duplicated == 0
    out.checks["every alarm made its ticket"] = c.tickets_missing == 0
    out.checks["every push delivered"] = c.pushes_lost == 0
    out.checks["events arrive in the device's order"] = c.events_out_of_order == 0
    out.checks["right clocks keep their event times"] = c.events_retimed == 0
    out.checks["drained"] = out.drained


def event_times(ledger: Ledger) -> Counter[str]:
    return Counter(str(e["ts_source"]) for e in ledger.device_events())


def _finish(rig: Rig, out: Outcome, started: float) -> Outcome:
    with Ledger(rig) as ledger:
        out.counts = ledger.counts()
        sources = event_times(ledger)
    out.notes.append(
        "event time sources: " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items()))
    )
    if out.counts.lost_seqs:
        out.notes.append(f"lost seqs: {out.counts.lost_seqs}")
    if out.counts.events_out_of_order:
        out.notes.append(
            f"events taken in after a later event of the same device: "
            f"{out.counts.events_out_of_order}"
        )
    out.seconds = time.monotonic() - started
    return out


# -- the faults, each applied to a running rig ----------------------------------------------
def kill_broker(rig: Rig, down_s: float) -> datetime:
    """SIGKILL Mosquitto, start it again on the same persistence after ``down_s``."""
    rig.broker.kill()
    time.sleep(down_s)
    rig.broker.start()
    return datetime.now(UTC)


def kill_dispatcher(rig: Rig, down_s: float) -> datetime:
    """SIGKILL the dispatcher, start it again (same MQTT client id, same store)."""
    assert rig.dispatcher is not None
    rig.dispatcher.kill()
    time.sleep(down_s)
    repaired = datetime.now(UTC)
    rig.dispatcher.start()
    rig.dispatcher.wait_healthy()
    return repaired


def kill_agent_holding_events(
    rig: Rig, victim: SensorNode, down_s: float, frozen_s: float
) -> tuple[datetime, int]:
    """Freeze the broker (SIGSTOP) so no PUBACK comes back, SIGKILL the agent, thaw the
    broker; restart the agent after ``down_s``. Returns the restart time and how many
    unacknowledged events the dead agent's outbox held."""
    assert rig.broker.proc is not None
    os.kill(rig.broker.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(frozen_s)
        victim.kill()
    finally:
        os.kill(rig.broker.proc.pid, signal.SIGCONT)
    _created, _evicted, unacked = victim.outbox_counts()
    time.sleep(down_s)
    victim.start()
    return datetime.now(UTC), unacked


def kill_influx(rig: Rig, down_s: float) -> tuple[float | None, int]:
    """SIGKILL InfluxDB for ``down_s``; returns the seconds until the points buffered in the
    store were backfilled after its restart, and how many were waiting."""
    rig.influx.kill()
    time.sleep(down_s)
    with Ledger(rig) as ledger:
        waiting = ledger.unsent_metrics()
    rig.influx.start()
    return metrics_backfilled(rig, time.monotonic(), 120), waiting


def hold_alarms(rig: Rig, per_s: float) -> Stream:
    """Raise the first sensor of every node and keep it up (its ticket stays assigned and its
    timers run); stream the other sensors."""
    held = {node.device_id: node.sensors[0].id for node in rig.nodes.values()}
    for device_id, sensor_id in held.items():
        rig.nodes[device_id].flip(sensor_id)
    stream = Stream(rig, per_s)
    stream.targets = [t for t in stream.targets if held[t[0].device_id] != t[1]]
    return stream.start()


# -- 1. broker killed ----------------------------------------------------------------------
def broker_killed(
    folder: Path,
    influx: InfluxServer,
    *,
    down_s: float = 20,
    before_s: float = 8,
    after_s: float = 8,
    per_s: float = 6,
) -> Outcome:
    """SIGKILL Mosquitto mid-stream, restart it ``down_s`` later on the same persistence."""
    started = time.monotonic()
    out = Outcome(
        "Mosquitto SIGKILL",
        f"broker killed mid-stream, restarted after {down_s:.0f} s; {per_s:g} events/s "
        "from 3 sensor-node agents throughout",
        Counts(),
    )
    with Rig(folder, site=SiteOptions(sensors_per_node=4), influx=influx) as rig:
        rig.start()
        rig.wait_nodes_online()
        stream = Stream(rig, per_s).start()
        time.sleep(before_s)
        repaired = kill_broker(rig, down_s)
        time.sleep(after_s)
        stream.stop()
        settle_alarms(rig)
        out.drained = drain(rig, 90) is not None
        out.recovery_s = backlog_cleared(rig, repaired)
        out = _finish(rig, out, started)
    standard_checks(out)
    return out


def broker_killed_behind(
    folder: Path,
    influx: InfluxServer,
    *,
    backlog_s: float = 6,
    down_s: float = 5,
    before_s: float = 4,
    after_s: float = 4,
    per_s: float = 6,
    autosave_on_changes: bool = False,
) -> Outcome:
    """The worst moment for a broker crash: the dispatcher is down, so events PUBACKed to the
    devices wait in the broker's memory for its session; Mosquitto saves that memory every
    ``autosave_interval`` (1 s), and a SIGKILL loses what arrived since the last save."""
    started = time.monotonic()
    saving = "after every change" if autosave_on_changes else "every 1 s"
    out = Outcome(
        "Mosquitto SIGKILL, dispatcher down"
        + (" (autosave_on_changes)" if autosave_on_changes else ""),
        f"dispatcher down for {backlog_s:.0f} s (events queue in the broker, saved {saving}), "
        f"then the broker killed and restarted {down_s:.0f} s later, then the dispatcher; "
        f"{per_s:g} events/s",
        Counts(),
    )
    with Rig(
        folder,
        site=SiteOptions(sensors_per_node=4),
        influx=influx,
        autosave_on_changes=autosave_on_changes,
    ) as rig:
        rig.start()
        rig.wait_nodes_online()
        assert rig.dispatcher is not None
        stream = Stream(rig, per_s).start()
        time.sleep(before_s)
        rig.dispatcher.kill()
        time.sleep(backlog_s)
        rig.broker.kill()
        time.sleep(down_s)
        rig.broker.start()
        rig.dispatcher.start()
        repaired = datetime.now(UTC)
        rig.dispatcher.wait_healthy()
        time.sleep(after_s)
        stream.stop()
        settle_alarms(rig)
        out.drained = drain(rig, 60) is not None
        out.recovery_s = backlog_cleared(rig, repaired)
        out = _finish(rig, out, started)
    standard_checks(out)
    return out


# -- 2. dispatcher killed ------------------------------------------------------------------
TIMER_SITE = SiteOptions(sensors_per_node=4, accept_timeout_s=8, sla_minutes=1, remind_before_s=45)


def dispatcher_killed(
    folder: Path,
    influx: InfluxServer,
    *,
    down_s: float = 15,
    before_s: float = 10,
    after_s: float = 10,
    per_s: float = 6,
) -> Outcome:
    """SIGKILL the dispatcher mid-stream with timers running, restart it ``down_s`` later.

    The first sensor of every node stays in alarm from the start, so its ticket stays assigned
    and its timers run: accept timeout every 8 s, a reminder 15 s after opening, the SLA
    escalation after 60 s. Timers that fall due while the dispatcher is down must fire once
    after the restart; none may fire twice.
    """
    started = time.monotonic()
    out = Outcome(
        "dispatcher SIGKILL",
        f"dispatcher killed mid-stream with timers due, restarted after {down_s:.0f} s; "
        f"{per_s:g} events/s",
        Counts(),
    )
    with Rig(folder, site=TIMER_SITE, influx=influx) as rig:
        rig.start()
        rig.wait_nodes_online()
        stream = hold_alarms(rig, per_s)
        time.sleep(before_s)
        repaired = kill_dispatcher(rig, down_s)
        time.sleep(after_s)
        stream.stop()
        out.drained = drain(rig, 90) is not None
        out.recovery_s = backlog_cleared(rig, repaired)
        with Ledger(rig) as ledger:
            timers = check_timers(ledger, datetime.now(UTC), grace_s=5)
        settle_alarms(rig)
        drain(rig, 60)
        out = _finish(rig, out, started)
    standard_checks(out)
    timer_checks(out, timers)
    return out


def timer_checks(out: Outcome, timers: TimerCheck) -> None:
    out.notes.append(
        "timers fired: " + ", ".join(f"{k} {v}" for k, v in sorted(timers.fired.items()))
    )
    out.checks["timers fired"] = timers.fired["accept_timeout"] > 0
    out.checks["no timer fired twice"] = sum(timers.twice.values()) == 0
    out.checks["no timer lost"] = not timers.overdue
    if timers.overdue:
        out.notes.append(f"overdue tickets: {timers.overdue}")
    if timers.twice:
        out.notes.append(f"fired twice: {dict(timers.twice)}")


# -- 3. InfluxDB down ----------------------------------------------------------------------
def influx_down(
    folder: Path, *, down_s: float = 60, before_s: float = 6, after_s: float = 4, per_s: float = 6
) -> Outcome:
    """SIGKILL InfluxDB for ``down_s`` mid-stream: points wait in the store and are backfilled;
    the closure report afterwards matches the ticket store transition for transition."""
    started = time.monotonic()
    out = Outcome(
        "InfluxDB down",
        f"InfluxDB killed for {down_s:.0f} s mid-stream, then restarted; {per_s:g} events/s",
        Counts(),
    )
    with Rig(folder, site=SiteOptions(sensors_per_node=4)) as rig:
        rig.start()
        rig.wait_nodes_online()
        stream = Stream(rig, per_s).start()
        time.sleep(before_s)
        out.recovery_s, waiting = kill_influx(rig, down_s)
        time.sleep(after_s)
        stream.stop()
        settle_alarms(rig)
        out.drained = drain(rig, 120, metrics=True) is not None
        out.notes.append(f"points buffered in the store while InfluxDB was down: {waiting}")
        report_ok, detail = closure_report_matches(rig)
        out.notes.append(detail)
        out = _finish(rig, out, started)
    standard_checks(out)
    out.checks["points buffered on disk"] = waiting > 0
    out.checks["closure report complete"] = report_ok
    return out


def metrics_backfilled(rig: Rig, since: float, timeout_s: float) -> float | None:
    """Seconds from ``since`` until no audit row waits for InfluxDB (None on timeout)."""
    while time.monotonic() - since < timeout_s:
        with Ledger(rig) as ledger:
            if ledger.unsent_metrics() == 0:
                return time.monotonic() - since
        time.sleep(0.1)
    return None


def closure_report_matches(rig: Rig) -> tuple[bool, str]:
    """Transition counts in InfluxDB equal the audit trail's, grid by grid."""
    influx = InfluxV1(rig.influx.url, rig.influx_db)
    try:
        rows = influx.query(
            'SELECT COUNT("ticket_id") AS n FROM "ticket" GROUP BY "grid", "transition"'
        )
        in_influx = {(r["grid"], r["transition"]): int(r["n"]) for r in rows}
        report = totals(influx, Period.last("6h", datetime.now(UTC)))
    finally:
        influx.close()
    with Ledger(rig) as ledger, ledger.engine.connect() as conn:
        in_store = {
            (g or "none", t): int(n)
            for g, t, n in conn.execute(
                select(tickets.c.grid_id, audit.c.transition, func.count())
                .join(tickets, tickets.c.id == audit.c.ticket_id)
                .group_by(tickets.c.grid_id, audit.c.transition)
            )
        }
    ok = in_influx == in_store
    detail = (
        f"closure report: {sum(in_store.values())} transitions in the store, "
        f"{sum(in_influx.values())} in InfluxDB; opened {report.opened}, "
        f"cancelled {report.cancelled}, escalated {report.escalated}, backlog {report.backlog}"
    )
    if not ok:
        diff = {
            k: (in_store.get(k), in_influx.get(k))
            for k in set(in_store) | set(in_influx)
            if in_store.get(k) != in_influx.get(k)
        }
        detail += f"; differences (store, influx): {diff}"
    return ok, detail


# -- 4. edge agent killed ------------------------------------------------------------------
def edge_killed(
    folder: Path,
    influx: InfluxServer,
    *,
    down_s: float = 10,
    before_s: float = 5,
    after_s: float = 5,
    per_s: float = 6,
    frozen_s: float = 3,
) -> Outcome:
    """SIGKILL one sensor-node agent while it holds unacknowledged events (the broker is
    frozen with SIGSTOP for ``frozen_s`` first, so PUBACKs cannot come back); its readings keep coming
    while it is dead; after the restart every event it had stored is delivered."""
    started = time.monotonic()
    out = Outcome(
        "edge agent SIGKILL",
        f"node-01's agent killed holding unacknowledged events, restarted after {down_s:.0f} s; "
        f"{per_s:g} events/s",
        Counts(),
    )
    with Rig(folder, site=SiteOptions(sensors_per_node=4), influx=influx) as rig:
        rig.start()
        rig.wait_nodes_online()
        victim = rig.nodes["node-01"]
        stream = Stream(rig, per_s).start()
        time.sleep(before_s)
        repaired, unacked = kill_agent_holding_events(rig, victim, down_s, frozen_s)
        time.sleep(after_s)
        stream.stop()
        settle_alarms(rig)
        out.drained = drain(rig, 90) is not None
        out.recovery_s = backlog_cleared(rig, repaired)
        out.notes.append(f"unacknowledged events in node-01's outbox at the kill: {unacked}")
        out = _finish(rig, out, started)
    standard_checks(out, every_reading_stored=False)
    out.checks["events were unacknowledged at the kill"] = unacked > 0
    return out


# -- 1-4 in a row (the reduced form that `make test` runs) ----------------------------------
def faults_in_a_row(
    folder: Path,
    *,
    broker_down_s: float = 3,
    dispatcher_down_s: float = 8,
    edge_down_s: float = 3,
    influx_down_s: float = 4,
    gap_s: float = 2,
    per_s: float = 6,
) -> Outcome:
    """Scenarios 1-4 on one rig, one after the other, with timers running throughout: broker
    SIGKILL, dispatcher SIGKILL, an edge agent SIGKILLed holding unacknowledged events,
    InfluxDB SIGKILLed. Same checks as the four on their own, over the whole run."""
    started = time.monotonic()
    out = Outcome(
        "faults in a row",
        f"broker down {broker_down_s:g} s, dispatcher down {dispatcher_down_s:g} s, node-01's "
        f"agent down {edge_down_s:g} s, InfluxDB down {influx_down_s:g} s, one after the "
        f"other; {per_s:g} events/s",
        Counts(),
    )
    with Rig(folder, site=TIMER_SITE) as rig:
        rig.start()
        rig.wait_nodes_online()
        stream = hold_alarms(rig, per_s)
        time.sleep(gap_s)
        broker_back = kill_broker(rig, broker_down_s)
        time.sleep(gap_s)
        dispatcher_back = kill_dispatcher(rig, dispatcher_down_s)
        time.sleep(gap_s)
        agent_back, unacked = kill_agent_holding_events(rig, rig.nodes["node-01"], edge_down_s, 1.5)
        time.sleep(gap_s)
        backfill_s, waiting = kill_influx(rig, influx_down_s)
        time.sleep(gap_s)
        stream.stop()
        out.drained = drain(rig, 90, metrics=True) is not None
        with Ledger(rig) as ledger:
            timers = check_timers(ledger, datetime.now(UTC), grace_s=5)
        recoveries = {
            "broker": backlog_cleared(rig, broker_back),
            "dispatcher": backlog_cleared(rig, dispatcher_back),
            "edge agent": backlog_cleared(rig, agent_back),
            "InfluxDB backfill": backfill_s,
        }
        settle_alarms(rig)
        drain(rig, 60, metrics=True)
        report_ok, detail = closure_report_matches(rig)
        out.notes += [
            "recovery: " + ", ".join(f"{k} {_fmt(v)}" for k, v in recoveries.items()),
            f"unacknowledged events at the agent's kill: {unacked}",
            f"points buffered while InfluxDB was down: {waiting}",
            detail,
        ]
        done = [v for v in recoveries.values() if v is not None]
        out.recovery_s = max(done) if len(done) == len(recoveries) else None
        out = _finish(rig, out, started)
    standard_checks(out, every_reading_stored=False)
    timer_checks(out, timers)
    out.checks["events were unacknowledged at the kill"] = unacked > 0
    out.checks["points buffered on disk"] = waiting > 0
    out.checks["closure report complete"] = report_ok
    return out


def _fmt(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f} s"


# -- 5. disk full --------------------------------------------------------------------------
class CannotMount(RuntimeError):
    """A size-limited folder needs root (mount -t tmpfs); the reason says why not."""


@contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        raise CannotMount("mounting a size-limited tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise CannotMount(f"mount -t tmpfs failed: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill a filesystem until at most ``leave_bytes`` are free; returns the filler file."""
    filler = folder / "filler.bin"
    st = os.statvfs(folder)
    remaining = max(0, st.f_bavail * st.f_frsize - leave_bytes)
    block = b"\0" * (1 << 16)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while remaining > 0:
            try:
                remaining -= os.write(fd, block[: min(len(block), remaining)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break  # someone else took the last bytes: the disk is full either way
    finally:
        os.close(fd)
    return filler


def log_count(path: Path, needle: str) -> int:
    return path.read_text(errors="replace").count(needle) if path.exists() else 0


WITNESS = "node-01-s03"


def outbox_disk_full(
    folder: Path, influx: InfluxServer, *, full_s: float = 8, per_s: float = 6, before_s: float = 2
) -> Outcome:
    """node-01's outbox lives on a 4 MB tmpfs, filled to the last 32 kB while the broker is
    frozen (so the outbox must grow); then space returns and the broker thaws.

    A witness sensor crosses its threshold while the disk is full and stays high afterwards:
    the alarm must reach the dispatcher once the outbox can store it again."""
    started = time.monotonic()
    out = Outcome(
        "outbox disk full",
        f"node-01's outbox on a full 4 MB tmpfs for {full_s:.0f} s with the broker frozen, "
        "then space freed",
        Counts(),
    )
    disk = folder / "node-01-disk"
    with small_disk(disk), Rig(folder, site=SiteOptions(sensors_per_node=4), influx=influx) as rig:
        victim = SensorNode(rig, "node-01")
        victim.outbox = disk / "outbox.sqlite"
        _relocate_outbox(victim)
        rig.start(nodes=[])
        rig.nodes["node-01"] = victim
        victim.start()
        rig.wait_nodes_online()
        stream = Stream(rig, per_s)
        stream.targets = [t for t in stream.targets if t[1] != WITNESS]
        stream.start()
        time.sleep(before_s)
        assert rig.broker.proc is not None
        os.kill(rig.broker.proc.pid, signal.SIGSTOP)
        filler = fill(disk, 32 * 1024)
        deadline = time.monotonic() + full_s
        while log_count(victim.log_path, "event not stored") == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        victim.flip(WITNESS)
        time.sleep(max(0.0, deadline - time.monotonic()))
        errors = log_count(victim.log_path, "event not stored")
        alive = victim.running()
        filler.unlink()
        os.kill(rig.broker.proc.pid, signal.SIGCONT)
        repaired = datetime.now(UTC)
        stream.stop()
        out.drained = drain(rig, 90) is not None
        out.recovery_s = backlog_cleared(rig, repaired)
        for _ in range(6):
            victim.hold_high(WITNESS)
            time.sleep(0.5)
        drain(rig, 30)
        with Ledger(rig) as ledger:
            witness_new = [
                e
                for e in ledger.device_events()
                if e["source_id"] == WITNESS and e["state"] == "new"
            ]
        settle_alarms(rig)
        drain(rig, 60)
        out.notes.append(
            f"'event not stored' errors logged while full: {errors}; readings written "
            f"{stream.written + 1}; events the agent created {victim.outbox_counts()[0]}; "
            f"the witness alarm raised while full reached the dispatcher: {bool(witness_new)}"
        )
        out = _finish(rig, out, started)
    standard_checks(out, every_reading_stored=False)
    out.checks["clear error while full"] = errors > 0
    out.checks["agent kept running"] = alive
    out.checks["alarm raised while full is reported after"] = bool(witness_new)
    return out


def _relocate_outbox(node: SensorNode) -> None:
    import yaml

    conf = yaml.safe_load(node.config.read_text(encoding="utf-8"))
    conf["outbox"]["path"] = str(node.outbox)
    node.config.write_text(yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")


def store_disk_full(
    folder: Path,
    influx: InfluxServer,
    *,
    full_s: float = 8,
    per_s: float = 6,
    before_s: float = 3,
    after_s: float = 3,
) -> Outcome:
    """The dispatcher's state folder (SQLite ticket store) lives on a 16 MB tmpfs, filled to
    the last 16 kB mid-stream; then space returns."""
    started = time.monotonic()
    out = Outcome(
        "ticket store disk full",
        f"dispatcher's store on a full 16 MB tmpfs for {full_s:.0f} s mid-stream, then space freed",
        Counts(),
    )
    disk = folder / "dispatcher"
    with (
        small_disk(disk, "16m"),
        Rig(folder, site=SiteOptions(sensors_per_node=4), influx=influx) as rig,
    ):
        rig.start()
        rig.wait_nodes_online()
        assert rig.dispatcher is not None
        stream = Stream(rig, per_s).start()
        time.sleep(before_s)
        filler = fill(disk, 16 * 1024)
        time.sleep(full_s)
        errors = log_count(rig.dispatcher.log_path, "ticket store unavailable")
        alive = rig.dispatcher.running()
        health = rig.dispatcher.health(timeout_s=15)
        filler.unlink()
        repaired = datetime.now(UTC)
        time.sleep(after_s)
        stream.stop()
        settle_alarms(rig)
        out.drained = drain(rig, 120) is not None
        out.recovery_s = backlog_cleared(rig, repaired)
        out.notes.append(
            f"'ticket store unavailable' errors logged while full: {errors}; /health while full: "
            f"{_health_summary(health)}"
        )
        out = _finish(rig, out, started)
    standard_checks(out)
    out.checks["clear error while full"] = errors > 0
    out.checks["dispatcher kept running"] = alive
    return out


def _health_summary(h: dict[str, Any] | None) -> str:
    if h is None:
        return "no answer"
    return ", ".join(f"{k}={h.get(k)}" for k in ("status", "intake_backlog", "mqtt_connected"))


# -- 6. clock skew -------------------------------------------------------------------------
SKEW_S = 600.0


def clock_skew(folder: Path, influx: InfluxServer, *, rounds: int = 3) -> Outcome:
    """node-02's clock runs 10 minutes ahead, node-03's 10 minutes behind, node-01's is right.

    node-01's first sensor and node-03's first sensor stand on the same spot and measure the
    same thing. Expected: every skewed event is filed under a corrected time (``ts_source``
    says so) within seconds of its arrival; each ticket opens at the time its first event
    arrived, so deadlines are right; and the co-located pair merges into one incident whose
    events are ordered as they happened, in every round."""
    started = time.monotonic()
    out = Outcome(
        "clock 10 min off",
        "node-02 10 min ahead, node-03 10 min behind, node-01 right; co-located sensors on "
        "node-01 and node-03 raise the same problem",
        Counts(),
    )
    site = SiteOptions(sensors_per_node=2, colocated=(("node-01-s00", "node-03-s00"),))
    with Rig(folder, site=site, influx=influx) as rig:
        rig.start(skew={"node-02": SKEW_S, "node-03": -SKEW_S})
        rig.wait_nodes_online()
        merged_ok = True
        for _ in range(rounds):
            rig.nodes["node-01"].flip("node-01-s00")
            time.sleep(1.0)
            rig.nodes["node-03"].flip("node-03-s00")
            rig.nodes["node-02"].flip("node-02-s00")
            time.sleep(1.5)
            for node in rig.nodes.values():
                for sensor_id, on in list(node.alarm.items()):
                    if on:
                        node.flip(sensor_id)
            time.sleep(1.5)
        out.drained = drain(rig, 60) is not None
        out.repaired = False
        with Ledger(rig) as ledger:
            evs = ledger.device_events()
            skew_ok, skew_detail = _skew_checks(ledger, evs)
            merged_ok, merge_detail = _merge_checks(ledger, evs, rounds)
        out.notes += [skew_detail, merge_detail]
        out = _finish(rig, out, started)
    # Each round is two problems: the co-located pair (one incident) and node-02's alarm.
    c = out.counts
    c.tickets_expected = 2 * rounds
    c.tickets_duplicated = max(0, c.tickets_made - c.tickets_expected)
    c.tickets_missing = max(0, c.tickets_expected - c.tickets_made)
    out.checks["zero events lost"] = c.events_lost == 0 and c.events_received >= c.events_sent
    out.checks["one ticket per problem"] = c.tickets_made == c.tickets_expected
    out.checks["every push delivered"] = c.pushes_lost == 0
    out.checks["drained"] = out.drained
    out.checks["skewed times corrected and marked"] = skew_ok
    out.checks["co-located alarms merged, in order"] = merged_ok
    return out


def _skew_checks(ledger: Ledger, evs: list[Any]) -> tuple[bool, str]:
    worst: dict[str, float] = {}
    sources: dict[str, Counter[str]] = {}
    for e in evs:
        d = str(e["device_id"])
        sources.setdefault(d, Counter())[str(e["ts_source"])] += 1
        worst[d] = max(worst.get(d, 0.0), abs((e["ts"] - e["received_at"]).total_seconds()))
    opened_ok = True
    for t in ledger.rows(
        select(tickets.c.id, tickets.c.opened_at, func.min(audit.c.at).label("first"))
        .join(audit, audit.c.ticket_id == tickets.c.id)
        .group_by(tickets.c.id, tickets.c.opened_at)
    ):
        first_event = min(
            (
                e["received_at"]
                for e in evs
                if e["incident_id"] is not None and _ticket_of(ledger, e["incident_id"]) == t["id"]
            ),
            default=None,
        )
        if first_event is not None and abs((t["opened_at"] - first_event).total_seconds()) > 5:
            opened_ok = False
    ok = (
        sources.get("node-01", Counter()).keys() <= {"device"}
        and sources.get("node-02", Counter()).keys() <= {"corrected", "received"}
        and sources.get("node-03", Counter()).keys() <= {"corrected"}
        and all(v < 5 for v in worst.values())
        and opened_ok
    )
    detail = (
        "time sources per device: "
        + "; ".join(f"{d} {dict(c)}" for d, c in sorted(sources.items()))
        + "; largest |filed time - arrival|: "
        + ", ".join(f"{d} {v:.1f} s" for d, v in sorted(worst.items()))
        + f"; tickets opened at arrival time: {opened_ok}"
    )
    return ok, detail


def _ticket_of(ledger: Ledger, incident_id: int) -> int | None:
    rows = ledger.rows(select(tickets.c.id).where(tickets.c.incident_id == incident_id))
    return int(rows[0]["id"]) if rows else None


def _merge_checks(ledger: Ledger, evs: list[Any], rounds: int) -> tuple[bool, str]:
    pair = [
        e for e in evs if e["source_id"] in ("node-01-s00", "node-03-s00") and e["state"] == "new"
    ]
    by_incident: dict[int, list[Any]] = {}
    for e in pair:
        by_incident.setdefault(int(e["incident_id"]), []).append(e)
    in_order = all(
        [e["source_id"] for e in sorted(group, key=lambda r: r["ts"])]
        == ["node-01-s00", "node-03-s00"]
        for group in by_incident.values()
    )
    ok = len(by_incident) == rounds and all(len(g) == 2 for g in by_incident.values()) and in_order
    return ok, (
        f"co-located alarms: {len(pair)} events in {len(by_incident)} incidents over {rounds} "
        f"rounds; ordered as they happened: {in_order}"
    )


SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "in-a-row": faults_in_a_row,
    "broker": broker_killed,
    "broker-behind": broker_killed_behind,
    "broker-behind-durable": lambda folder, influx, **kw: broker_killed_behind(
        folder, influx, autosave_on_changes=True, **kw
    ),
    "dispatcher": dispatcher_killed,
    "influx": influx_down,
    "edge": edge_killed,
    "outbox-disk": outbox_disk_full,
    "store-disk": store_disk_full,
    "clock": clock_skew,
}


def clean(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
