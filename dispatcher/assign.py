"""Who gets a ticket: on-duty workers by the shift calendar, least open load, then nearest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from config.site import WEEKDAYS, Shift, Site, Worker
from dispatcher.grids import distance_m
from dispatcher.reasons import Reason, ReasonCode


def _within(start: datetime, end: datetime, at: datetime) -> bool:
    return start <= at < end


def shift_windows(shift: Shift, local_at: datetime) -> list[tuple[datetime, datetime]]:
    """The occurrences of a shift that could contain ``local_at`` (started yesterday or today)."""
    windows = []
    for back in (1, 0):
        day = (local_at - timedelta(days=back)).date()
        if WEEKDAYS[day.weekday()] not in shift.days:
            continue
        start = datetime.combine(day, shift.start, tzinfo=local_at.tzinfo)
        end = datetime.combine(day, shift.end, tzinfo=local_at.tzinfo)
        if end <= start:
            end += timedelta(days=1)
        windows.append((start, end))
    return windows


def break_windows(shift: Shift, start: datetime) -> list[tuple[datetime, datetime]]:
    """The breaks of one occurrence of a shift that starts at ``start`` (local)."""
    out = []
    for brk in shift.breaks:
        b_start = datetime.combine(start.date(), brk.start, tzinfo=start.tzinfo)
        if b_start < start:
            b_start += timedelta(days=1)
        b_end = datetime.combine(b_start.date(), brk.end, tzinfo=start.tzinfo)
        if b_end <= b_start:
            b_end += timedelta(days=1)
        out.append((b_start, b_end))
    return out


def in_shift(worker: Worker, at: datetime, site: Site) -> bool:
    """True when ``at`` falls inside one of the worker's shifts (breaks included)."""
    local = at.astimezone(site.tz)
    return any(
        _within(start, end, local)
        for shift in worker.shifts
        for start, end in shift_windows(shift, local)
    )


def on_duty(worker: Worker, at: datetime, site: Site) -> bool:
    """True when ``at`` falls inside one of the worker's shifts and not inside one of its breaks."""
    local = at.astimezone(site.tz)
    for shift in worker.shifts:
        for start, end in shift_windows(shift, local):
            if not _within(start, end, local):
                continue
            return not any(_within(b0, b1, local) for b0, b1 in break_windows(shift, start))
    return False


def next_shift_change(site: Site, after: datetime) -> datetime:
    """The first moment after ``after`` when someone's duty begins or ends (a shift or a break
    starts or ends): when open tickets may find a worker and unaccepted ones change hands."""
    local = after.astimezone(site.tz)
    best: datetime | None = None
    for worker in site.workers:
        for shift in worker.shifts:
            for back in (1, 0, -1, -2):
                day = local - timedelta(days=back)
                for start, end in shift_windows(shift, day):
                    for moment in (
                        start,
                        end,
                        *[t for b in break_windows(shift, start) for t in b],
                    ):
                        if moment > local and (best is None or moment < best):
                            best = moment
    return (best or local + timedelta(days=1)).astimezone(after.tzinfo)


@dataclass(frozen=True)
class Assignment:
    """The outcome of choosing a worker: a worker id, or the supervisor's queue."""

    worker_id: str | None
    via: Literal["home", "neighbour", "supervisor"]
    reason: Reason


def choose_worker(
    *,
    site: Site,
    grid_id: str | None,
    at: datetime,
    open_load: Mapping[str, int],
    positions: Mapping[str, tuple[float, float]],
    target: tuple[float, float],
    exclude: frozenset[str] = frozenset(),
) -> Assignment:
    """Pick the on-duty worker of the cell with the fewest open tickets, then the nearest.

    Nobody on duty in the cell: the neighbours' workers (in the order the cell lists them) when
    the site's policy allows, else the supervisor's queue. ``exclude`` holds workers who
    declined or timed out on this ticket.
    """
    if grid_id is None:
        return Assignment(None, "supervisor", Reason(ReasonCode.ASSIGN_OUTSIDE))

    def best(cell: str) -> str | None:
        candidates = [
            w
            for w in site.workers
            if w.grid == cell and w.id not in exclude and on_duty(w, at, site)
        ]
        if not candidates:
            return None

        def key(w: Worker) -> tuple[int, float, str]:
            pos = positions.get(w.id)
            dist = distance_m(pos[0], pos[1], target[0], target[1]) if pos else float("inf")
            return (open_load.get(w.id, 0), dist, w.id)

        return min(candidates, key=key).id

    home = best(grid_id)
    if home is not None:
        return Assignment(home, "home", Reason(ReasonCode.ASSIGN_HOME, {"grid": grid_id}))
    if site.no_worker.fallback == "neighbour_then_supervisor":
        for neighbour in site.grid(grid_id).neighbours:
            other = best(neighbour)
            if other is not None:
                return Assignment(
                    other,
                    "neighbour",
                    Reason(ReasonCode.ASSIGN_NEIGHBOUR, {"grid": grid_id, "neighbour": neighbour}),
                )
    return Assignment(None, "supervisor", Reason(ReasonCode.ASSIGN_NOBODY, {"grid": grid_id}))


def supervisor_for(site: Site, street_id: str | None) -> str | None:
    """The supervisor of a street (the first listed), if any."""
    for s in site.supervisors:
        if street_id in s.streets:
            return s.id
    return None
