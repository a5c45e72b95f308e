"""Who gets a ticket: the shift calendar (time zone, breaks, night shifts), least load, nearest."""

from __future__ import annotations

from datetime import UTC, datetime

from config.site import NoWorkerPolicy, Site, Worker
from dispatcher.assign import choose_worker, in_shift, next_shift_change, on_duty
from dispatcher.grids import GridIndex, distance_m
from dispatcher.reasons import Reason, ReasonCode


def local(site: Site, hh: int, mm: int = 0, day: int = 5) -> datetime:
    """A wall-clock time in the site's zone (Asia/Shanghai)."""
    return datetime(2026, 1, day, hh, mm, tzinfo=site.tz).astimezone(UTC)


def worker(site: Site, wid: str) -> Worker:
    return next(w for w in site.workers if w.id == wid)


def test_the_shift_calendar_is_read_in_the_site_time_zone(site: Site) -> None:
    w01, w05 = worker(site, "w01"), worker(site, "w05")
    assert on_duty(w01, local(site, 7), site)
    assert not on_duty(w01, local(site, 6, 59), site)
    assert not on_duty(w01, local(site, 12, 15), site)  # lunch
    assert in_shift(w01, local(site, 12, 15), site)
    assert not on_duty(w01, local(site, 19), site)
    assert on_duty(w05, local(site, 23), site)
    assert on_duty(w05, local(site, 6, 59, day=6), site)  # overnight
    # 09:00 UTC is 17:00 in Shanghai: the day shift
    assert on_duty(w01, datetime(2026, 1, 5, 9, tzinfo=UTC), site)


def test_next_shift_change(site: Site) -> None:
    assert next_shift_change(site, local(site, 8)) == local(site, 12)  # w01/w03 lunch
    assert next_shift_change(site, local(site, 12, 45)) == local(site, 13)
    assert next_shift_change(site, local(site, 13)) == local(site, 19)
    assert next_shift_change(site, local(site, 20)) == local(site, 7, day=6)


def test_least_open_load_then_nearest(site: Site) -> None:
    at = local(site, 20)  # night: w05 is the only g1 worker on duty
    pick = choose_worker(
        site=site, grid_id="g1", at=at, open_load={}, positions={}, target=(39.957, 116.417)
    )
    assert (pick.worker_id, pick.via) == ("w05", "home")
    assert pick.reason == Reason(ReasonCode.ASSIGN_HOME, {"grid": "g1"})
    # Put w05 on the day shift too, so g1 has two workers by day.
    w01 = worker(site, "w01")
    both = site.model_copy(
        update={
            "workers": tuple(
                w.model_copy(update={"shifts": w01.shifts}) if w.id == "w05" else w
                for w in site.workers
            )
        }
    )
    day, target = local(site, 9), (39.957, 116.4185)
    near, far = (39.9572, 116.4183), (39.9555, 116.4155)
    assert distance_m(*near, *target) < distance_m(*far, *target)
    pick = choose_worker(
        site=both,
        grid_id="g1",
        at=day,
        open_load={},
        target=target,
        positions={"w05": near, "w01": far},
    )
    assert pick.worker_id == "w05"  # equal load: the nearer one
    pick = choose_worker(
        site=both,
        grid_id="g1",
        at=day,
        open_load={"w05": 2, "w01": 1},
        target=target,
        positions={"w05": near, "w01": far},
    )
    assert pick.worker_id == "w01"  # load first, distance second
    pick = choose_worker(
        site=both, grid_id="g1", at=day, open_load={}, target=target, positions={"w01": far}
    )
    assert pick.worker_id == "w01"  # a known position beats an unknown one
    pick = choose_worker(
        site=site,
        grid_id="g1",
        at=day,
        open_load={},
        positions={},
        target=target,
        exclude=frozenset({"w01"}),
    )
    assert (pick.worker_id, pick.via) == ("w02", "neighbour")  # g1 lists g2 before g3


def test_nobody_on_duty_goes_by_the_site_policy(site: Site) -> None:
    lunch = local(site, 12, 10)  # w01 at lunch, w05 off: g1 has nobody
    pick = choose_worker(
        site=site, grid_id="g1", at=lunch, open_load={}, positions={}, target=(39.957, 116.417)
    )
    assert pick.via == "neighbour" and pick.worker_id == "w02"  # w03 (g3) lunches too
    assert pick.reason == Reason(ReasonCode.ASSIGN_NEIGHBOUR, {"grid": "g1", "neighbour": "g2"})
    assert pick.reason.text == "nobody on duty in g1; g2 covers"
    strict = site.model_copy(update={"no_worker": NoWorkerPolicy(fallback="supervisor")})
    pick = choose_worker(
        site=strict, grid_id="g1", at=lunch, open_load={}, positions={}, target=(39.957, 116.417)
    )
    assert (pick.worker_id, pick.via) == (None, "supervisor")
    assert pick.reason == Reason(ReasonCode.ASSIGN_NOBODY, {"grid": "g1"})
    outside = choose_worker(
        site=site, grid_id=None, at=lunch, open_load={}, positions={}, target=(0.0, 0.0)
    )
    assert outside.via == "supervisor" and outside.reason.code is ReasonCode.ASSIGN_OUTSIDE
    assert outside.reason.text == "position is outside every grid cell"


def test_grid_lookup_by_point_in_polygon(site: Site) -> None:
    grids = GridIndex(site)
    assert grids.locate(39.957, 116.417).id == "g1"  # type: ignore[union-attr]
    assert grids.locate(39.961, 116.423).id == "g4"  # type: ignore[union-attr]
    assert grids.locate(39.95, 116.40) is None
