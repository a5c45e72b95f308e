"""Judging a resolved ticket (the pure rule): the cameras' answers first; without them, the
category's policy, and the worker's photo is accepted only when the resolution carries one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config.site import Category, Site
from dispatcher.reasons import Reason, ReasonCode
from dispatcher.verify import judge

RESOLVED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
LATE = RESOLVED + timedelta(seconds=121)  # past the sample categories' 120 s


@pytest.fixture
def garbage(site: Site) -> Category:
    assert site.categories["garbage"].on_no_verification == "accept_with_photo"
    return site.categories["garbage"]


def test_a_silent_camera_closes_on_the_worker_s_photo(garbage: Category) -> None:
    verdict = judge(
        category=garbage, outcomes={}, asked=["cam-01"], resolved_at=RESOLVED, now=LATE, photo=True
    )
    assert verdict.verdict == "close"
    assert verdict.reason == Reason(ReasonCode.VERIFY_TIMEOUT_PHOTO, {"by": "camera"})
    assert verdict.reason.text == "no camera answered in time; accepted on the worker's photo"


@pytest.mark.parametrize("asked", [["cam-01"], []], ids=["camera-silent", "no-camera"])
def test_without_a_photo_nothing_closes_on_it_the_supervisor_reviews(
    garbage: Category, asked: list[str]
) -> None:
    verdict = judge(
        category=garbage, outcomes={}, asked=asked, resolved_at=RESOLVED, now=LATE, photo=False
    )
    assert verdict.verdict == "review" and "worker's photo" not in verdict.reason.text
    assert verdict.reason.code is (
        ReasonCode.VERIFY_TIMEOUT_REVIEW if asked else ReasonCode.VERIFY_UNCOVERED_REVIEW
    )


def test_a_photo_category_needs_the_photo(garbage: Category) -> None:
    by_photo = garbage.model_copy(update={"verify": "photo"})
    with_photo = judge(
        category=by_photo, outcomes={}, asked=[], resolved_at=RESOLVED, now=RESOLVED, photo=True
    )
    without = judge(
        category=by_photo, outcomes={}, asked=[], resolved_at=RESOLVED, now=RESOLVED, photo=False
    )
    assert (with_photo.verdict, without.verdict) == ("close", "review")


def test_the_camera_decides_before_any_policy(garbage: Category, site: Site) -> None:
    for category in (garbage, site.categories["manhole_missing"]):
        for photo in (True, False):
            clear = judge(
                category=category,
                outcomes={"cam-01": "clear"},
                asked=["cam-01"],
                resolved_at=RESOLVED,
                now=RESOLVED,
                photo=photo,
            )
            seen = judge(
                category=category,
                outcomes={"cam-01": "still_present"},
                asked=["cam-01"],
                resolved_at=RESOLVED,
                now=LATE,
                photo=photo,
            )
            assert (clear.verdict, seen.verdict) == ("close", "reopen")
            assert clear.reason == Reason(
                ReasonCode.VERIFY_CLEAR, {"by": "camera", "ids": ["cam-01"]}
            )
            assert seen.reason.text == "camera cam-01 still sees it"
    waiting = judge(
        category=garbage,
        outcomes={},
        asked=["cam-01"],
        resolved_at=RESOLVED,
        now=RESOLVED,
        photo=True,
    )
    assert waiting.verdict == "wait"
