"""Both languages are complete: every key the pages use exists in zh-CN and in en, the two
dictionaries have the same keys and the same {placeholders}, and every value the server can
send where the pages build a key from it (statuses, transitions, sources, audit reason codes,
actors…) is translated. The browser tests add the live check: window.gwMissingKeys stays empty
on every screen, and here a ticket with every kind of audit reason, actor and close reason
shows no server English in zh-CN, on the dashboard and in the worker app, in real Chromium;
nor do a live alert and a refused action."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, get_args

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import insert

from broker.messages import CameraStatus, CommandResult, SupervisorAlert
from config.site import CategorySource, Device
from dispatcher import tickets as ticket_ops
from dispatcher.api.models import Attention
from dispatcher.evidence import EvidenceKind
from dispatcher.lifecycle import Status, Transition
from dispatcher.reasons import CloseReason, Reason, ReasonCode, utc_iso
from dispatcher.security import Role
from dispatcher.store.schema import audit
from dispatcher.tickets import ACCEPT_TIMEOUT_ACTOR, SYSTEM_ACTOR
from dispatcher.timers import REMINDER_ACTOR, SHIFT_ACTOR, SLA_ACTOR
from dispatcher.verify import REVIEW_ACTOR, VERIFY_ACTOR
from tests.conftest import login
from tests.dispatcher.factories import new_ticket
from tests.web.conftest import DESK, PHONE, ContextFactory, Screens, Stack, log_in, missing_keys

STATIC = Path(__file__).resolve().parents[2] / "dispatcher" / "web" / "static"
LANGS = ("zh-CN", "en")
PAGES = [STATIC / "app" / "index.html", STATIC / "dashboard" / "index.html"]
SCRIPTS = sorted(p for p in STATIC.rglob("*.js") if "vendor" not in p.parts and p.name != "sw.js")


def dictionary(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((STATIC / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


def camera_states() -> tuple[str, ...]:
    return get_args(CameraStatus.model_fields["state"].annotation)


# Actors the pages name by their own key ("system:verify" → actor.system.verify), and the kinds
# they name with an id ("device:edge-01" → actor.device).
NAMED_ACTORS = (
    SYSTEM_ACTOR,
    VERIFY_ACTOR,
    REVIEW_ACTOR,
    ACCEPT_TIMEOUT_ACTOR,
    REMINDER_ACTOR,
    SLA_ACTOR,
    SHIFT_ACTOR,
    "citizen:open311",
)
ACTOR_KINDS = ("device", "citizen", *get_args(Role))


# Keys the pages build as prefix + value, with every value that can reach them.
DYNAMIC: dict[str, tuple[str, ...]] = {
    "status.": tuple(s.value for s in Status),
    "transition.": tuple(t.value for t in Transition),
    "source.": get_args(CategorySource),
    "camera.": camera_states(),
    "verify.": (*get_args(CommandResult.model_fields["outcome"].annotation), "waiting"),
    "evidence.": get_args(EvidenceKind),
    "devices.kind_": get_args(Device.model_fields["kind"].annotation),
    "detail.info_": tuple(s.value for s in Status if s not in (Status.ASSIGNED, Status.ACCEPTED)),
    "net.": ("live", "connecting", "offline"),
    "done.": ("accept", "arrived", "decline", "resolve", "reject"),
    "push.": ("unassigned", "cancelled", "closed"),
    "close_reason.": tuple(r.value for r in CloseReason),
    "audit_reason.": tuple(c.value for c in ReasonCode),
    "reason_by.": ("camera", "sensor"),
    "actor.": (*(a.replace(":", ".") for a in NAMED_ACTORS), *ACTOR_KINDS),
    "error.http_": ("400", "401", "403", "404", "409", "413", "422", "429"),
    "alert.": get_args(SupervisorAlert.model_fields["reason"].annotation),
    "attention.": get_args(Attention),
}


def used_keys() -> tuple[set[str], set[str]]:
    """(static keys, dynamic prefixes) used by the pages and their scripts."""
    keys: set[str] = set()
    prefixes: set[str] = set()
    for page in PAGES:
        keys |= set(
            re.findall(
                r'data-i18n(?:-placeholder|-title|-aria)?="([^"]+)"', page.read_text("utf-8")
            )
        )
    for script in SCRIPTS:
        text = script.read_text("utf-8")
        keys |= set(re.findall(r'\bt\("([a-z0-9_.]+)"(?! \+)', text))
        prefixes |= set(re.findall(r'\bt(?:Or)?\("([a-z0-9_.]+)" \+', text))
        for table in re.findall(r"const PRESETS = \{(.*?)\};", text, flags=re.S):
            keys |= set(re.findall(r'"([a-z_]+\.[a-z0-9_]+)"', table))
    return keys, prefixes


@pytest.mark.parametrize("lang", LANGS)
def test_every_key_the_pages_use_is_translated(lang: str) -> None:
    words = dictionary(lang)
    keys, prefixes = used_keys()
    assert len(keys) > 100
    assert sorted(k for k in keys if k not in words) == []
    unknown = sorted(prefixes - set(DYNAMIC))
    assert unknown == [], f"pages build keys from {unknown}: list their values in DYNAMIC"
    missing = [p + v for p in prefixes for v in DYNAMIC[p] if p + v not in words]
    assert missing == []


def test_both_languages_have_the_same_keys_and_placeholders() -> None:
    zh, en = dictionary("zh-CN"), dictionary("en")
    assert sorted(set(zh) ^ set(en)) == []
    for key in zh:
        assert zh[key].strip() and en[key].strip(), key
        assert set(re.findall(r"\{(\w+)\}", zh[key])) == set(re.findall(r"\{(\w+)\}", en[key])), key


def test_chinese_is_the_default_and_really_chinese() -> None:
    zh = dictionary("zh-CN")
    han = re.compile(r"[\u4e00-\u9fff]")
    assert sum(1 for v in zh.values() if han.search(v)) > 0.9 * len(zh)
    for page in PAGES:
        assert '<html lang="zh-CN">' in page.read_text("utf-8")
    assert 'return LANGS.includes(saved) ? saved : "zh-CN";' in (
        STATIC / "common" / "i18n.js"
    ).read_text("utf-8")


class UntranslatedText(HTMLParser):
    """Text and labelling attributes of a page that do not go through the dictionaries."""

    VOID = frozenset({"meta", "link", "input", "img", "br", "hr", "source", "wbr"})
    LABELS = ("title", "alt", "aria-label", "placeholder")

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, dict[str, str | None]]] = []
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.found += [
            f"<{tag} {a}={named[a]!r}>" for a in self.LABELS if re.search(r"\w", named.get(a) or "")
        ]
        if tag not in self.VOID:
            self.open.append((tag, named))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if not self.open or not re.search(r"[A-Za-z\u4e00-\u9fff]", data):
            return
        tag, attrs = self.open[-1]
        if tag not in ("script", "style") and "data-i18n" not in attrs:
            self.found.append(f"<{tag}>{data.strip()}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.parent.name)
def test_no_page_text_bypasses_the_dictionaries(page: Path) -> None:
    """Every word on a page (SVG titles and labels included) comes from data-i18n keys."""
    parser = UntranslatedText()
    parser.feed(page.read_text("utf-8"))
    assert parser.found == []


# -- in a real browser: a ticket with every kind of audit reason ---------------------------

DEADLINE = "2026-01-05T13:00:00+00:00"  # 21:00 in Asia/Shanghai, the site's zone
# Each code with parameters as its producer writes them, its transition and its actor.
SAMPLES: dict[ReasonCode, tuple[Transition, str, dict[str, Any]]] = {
    ReasonCode.NOTE: (Transition.DECLINED, "worker:w01", {"text": "车坏了"}),
    ReasonCode.ASSIGN_HOME: (Transition.ASSIGNED, SYSTEM_ACTOR, {"grid": "g1"}),
    ReasonCode.ASSIGN_NEIGHBOUR: (
        Transition.REASSIGNED,
        SYSTEM_ACTOR,
        {"grid": "g1", "neighbour": "g2"},
    ),
    ReasonCode.ASSIGN_NOBODY: (Transition.ESCALATED, SYSTEM_ACTOR, {"grid": "g1"}),
    ReasonCode.ASSIGN_OUTSIDE: (Transition.ESCALATED, SYSTEM_ACTOR, {}),
    ReasonCode.DECLINED_BY: (Transition.REASSIGNED, SYSTEM_ACTOR, {"worker": "w05"}),
    ReasonCode.ACCEPT_TIMEOUT: (
        Transition.REASSIGNED,
        ACCEPT_TIMEOUT_ACTOR,
        {"worker": "w05", "seconds": 600.0},
    ),
    ReasonCode.REMINDER: (Transition.REMINDED, REMINDER_ACTOR, {"deadline": DEADLINE}),
    ReasonCode.SLA_BREACHED: (Transition.ESCALATED, SLA_ACTOR, {"deadline": DEADLINE}),
    ReasonCode.SHIFT_CHANGE: (Transition.REASSIGNED, SHIFT_ACTOR, {}),
    ReasonCode.ON_DUTY_NOW: (Transition.ASSIGNED, SHIFT_ACTOR, {}),
    ReasonCode.VERIFY_STILL_PRESENT: (
        Transition.REOPENED,
        VERIFY_ACTOR,
        {"by": "camera", "ids": ["cam-01", "cam-02"]},
    ),
    ReasonCode.VERIFY_CLEAR: (
        Transition.VERIFIED,
        VERIFY_ACTOR,
        {"by": "sensor", "ids": ["mh-tilt-01"]},
    ),
    ReasonCode.VERIFY_WAITING: (Transition.ESCALATED, REVIEW_ACTOR, {"by": "camera"}),
    ReasonCode.VERIFY_TIMEOUT_PHOTO: (Transition.VERIFIED, VERIFY_ACTOR, {"by": "camera"}),
    ReasonCode.VERIFY_TIMEOUT_REVIEW: (Transition.ESCALATED, REVIEW_ACTOR, {"by": "sensor"}),
    ReasonCode.VERIFY_UNCOVERED_PHOTO: (Transition.VERIFIED, VERIFY_ACTOR, {}),
    ReasonCode.VERIFY_UNCOVERED_REVIEW: (Transition.ESCALATED, REVIEW_ACTOR, {}),
    ReasonCode.VERIFY_UNDECIDED: (Transition.ESCALATED, REVIEW_ACTOR, {}),
    ReasonCode.CLEARED: (Transition.CANCELLED, "device:edge-01", {"by": "camera", "id": "cam-01"}),
}
LEGACY = "旧版本记录：已派单"  # a row from before codes: shown as stored
# Ids the pages show as they are (cameras, sensors, devices, accounts); everything else in a
# reason or an actor must be Chinese in zh-CN.
IDS = ("mh-tilt-01", "cam-01", "cam-02", "edge-01", "sup-s1", "Open311", "admin", "w01", "w05")


def test_every_audit_reason_is_put_into_words() -> None:
    assert set(SAMPLES) == set(ReasonCode), "give every reason code a sample here"


def foreign_words(text: str) -> str:
    """What is left of ``text`` in Latin letters once the ids are taken out."""
    for token in IDS:
        text = text.replace(token, "")
    return " ".join(re.findall(r"[A-Za-z]+", text))


def ticket_with_every_reason(stack: Stack) -> tuple[int, list[Reason | None]]:
    """A ticket in g1 whose audit trail has a row for each reason code (each actor in turn),
    a reason that follows from another, a person's words behind a decision, a row without a
    code, and at last its real cancellation by a camera. Returns its id and the reasons in
    the trail's order."""
    d, site = stack.dispatcher, stack.site
    centre = next(g for g in site.grids if g.id == "g1").polygon.representative_point()
    now = d.clock.now()
    samples = [
        (transition, actor, Reason(code, params))
        for code, (transition, actor, params) in SAMPLES.items()
        if code is not ReasonCode.CLEARED
    ]
    samples += [
        (
            Transition.REASSIGNED,
            ACCEPT_TIMEOUT_ACTOR,
            Reason(ReasonCode.ASSIGN_NEIGHBOUR, {"grid": "g1", "neighbour": "g2"}).because(
                Reason(ReasonCode.ACCEPT_TIMEOUT, {"worker": "w05", "seconds": 180.0})
            ),
        ),
        (
            Transition.REASSIGNED,
            "supervisor:sup-s1",
            Reason(ReasonCode.ASSIGN_HOME, {"grid": "g1"}).because(Reason.note("人手调整")),
        ),
        (Transition.REASSIGNED, "admin:admin", Reason.note("按区域调整")),
    ]
    with d.engine.begin() as conn:
        tid = new_ticket(
            conn, site, kind="garbage", lat=centre.y, lon=centre.x, at=now, actor="device:edge-01"
        )
        ticket_ops.apply(
            conn,
            tid,
            Transition.ASSIGNED,
            at=now,
            actor=SYSTEM_ACTOR,
            worker_id="w01",
            reason=Reason(ReasonCode.ASSIGN_HOME, {"grid": "g1"}),
        )
        rows = [
            {
                **ticket_ops.audit_row(
                    tid,
                    transition,
                    Status.ASSIGNED,
                    Status.ASSIGNED,
                    now + timedelta(milliseconds=i + 1),
                    actor,
                    "w01",
                    None,
                    reason,
                ),
                "pushed": True,  # written here only to be shown: no pushes, no points
                "metric_sent": True,
            }
            for i, (transition, actor, reason) in enumerate(samples)
        ]
        legacy = ticket_ops.audit_row(
            tid,
            Transition.ESCALATED,
            Status.ASSIGNED,
            Status.ASSIGNED,
            now,
            "system",
            "w01",
            None,
            None,
        )
        rows.append({**legacy, "reason": LEGACY, "pushed": True, "metric_sent": True})
        conn.execute(insert(audit), rows)
        transition, device, params = SAMPLES[ReasonCode.CLEARED]
        cleared = Reason(ReasonCode.CLEARED, params)
        ticket_ops.apply(
            conn,
            tid,
            transition,
            at=now + timedelta(seconds=1),
            actor=device,
            reason=cleared,
            close_reason=CloseReason.CLEARED_BY_CAMERA.value,
        )
    d.committed()
    trail: list[Reason | None] = [
        None,
        Reason(ReasonCode.ASSIGN_HOME, {"grid": "g1"}),
        *(r for _, _, r in samples),
        None,
        cleared,
    ]
    return tid, trail


def assigned_in_g1(stack: Stack) -> int:
    d, site = stack.dispatcher, stack.site
    centre = next(g for g in site.grids if g.id == "g1").polygon.representative_point()
    with d.engine.begin() as conn:
        tid = new_ticket(
            conn,
            site,
            kind="garbage",
            lat=centre.y + 0.0004,
            lon=centre.x,
            at=d.clock.now(),
            actor="device:edge-01",
        )
        ticket_ops.assign(
            conn, site, tid, at=d.clock.now(), actor=SYSTEM_ACTOR, exclude=frozenset({"w05"})
        )
        ticket_ops.apply(
            conn,
            tid,
            Transition.REASSIGNED,
            at=d.clock.now(),
            actor="admin:admin",
            worker_id="w01",
            reason="由张伟负责",
        )
    d.committed()
    return tid


def open_ticket(page: Page, ticket_id: int) -> None:
    page.fill("#filters input[name=q]", str(ticket_id))
    page.click("#filters button[type=submit]")
    page.click(f"#tickets tbody tr[data-id='{ticket_id}']")
    expect(page.locator("#dd-title")).to_contain_text(f"#{ticket_id}")


def test_no_server_english_in_the_chinese_pages(new_context: ContextFactory, stack: Stack) -> None:
    shots = Screens("i18n")
    every, trail = ticket_with_every_reason(stack)
    other = assigned_in_g1(stack)
    dash = shots.watch(new_context(**DESK).new_page())
    log_in(dash, "/dashboard/", "sup-s1", stack.password("sup-s1"))
    dash.wait_for_selector("body[data-loaded]")
    expect(dash.locator("#live")).to_have_attribute("data-state", "live")

    # a live alert: its reason (the SLA deadline, in the site's time) in words, not the note
    d = stack.dispatcher
    with d.engine.begin() as conn:
        deadline = ticket_ops.load(conn, other)["deadline"]
        ticket_ops.apply(
            conn,
            other,
            Transition.ESCALATED,
            at=d.clock.now(),
            actor=SLA_ACTOR,
            reason=Reason(ReasonCode.SLA_BREACHED, {"deadline": utc_iso(deadline)}),
            breached_at=d.clock.now(),
        )
    d.committed()
    expect(dash.locator(f".alert-toast[data-ticket='{other}']")).to_have_count(1, timeout=20_000)
    dash.click("#alerts-btn")
    said = dash.locator(f"#alerts-list li[data-ticket='{other}'] small")
    local = deadline.astimezone(stack.site.tz)
    expect(said).to_contain_text(f"已超过处置时限（{local:%m/%d %H:%M}）")
    assert foreign_words(said.inner_text()) == "" and "UTC" not in said.inner_text()
    dash.click("#alerts-btn")

    # the ticket with every reason: each row's actor and reason in Chinese words
    open_ticket(dash, every)
    cells = dash.locator("#dd-audit tbody tr")
    expect(cells).to_have_count(len(trail))
    table: list[list[str]] = dash.eval_on_selector_all(
        "#dd-audit tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    for (_at, transition, actor, reason), why in zip(table, trail, strict=True):
        assert foreign_words(actor) == "", actor
        assert foreign_words(reason) == "", (reason, why)
        assert "⟦" not in reason + actor + transition
        if why is not None and why.code is not ReasonCode.NOTE:
            assert reason and reason != why.text
    by_code = {
        why.code: row[3] for why, row in zip(trail, table, strict=True) if why and not why.cause
    }
    assert by_code[ReasonCode.REMINDER] == "须在 01/05 21:00 前完成"  # not 13:00 UTC
    assert by_code[ReasonCode.ACCEPT_TIMEOUT] == "陈静未在10分钟内接单"
    assert by_code[ReasonCode.VERIFY_STILL_PRESENT] == "摄像头 cam-01、cam-02 复核仍发现问题"
    notes = [row[3] for why, row in zip(trail, table, strict=True) if why and why.code == "note"]
    assert notes == ["车坏了", "按区域调整"]  # a person's words, as typed
    assert by_code[ReasonCode.CLEARED] == "摄像头 cam-01 在有人到场前发现问题已消失"
    timed_out, told = [row[3] for why, row in zip(trail, table, strict=True) if why and why.cause]
    assert timed_out == "陈静未在3分钟内接单；和平里东一网格无人在岗，由和平里东二网格支援"
    assert told == "人手调整；和平里东一网格有网格员在岗"
    assert LEGACY in [row[3] for row in table]
    actors = [row[2] for row in table]
    assert set(actors) == {
        "设备 edge-01",
        "系统",
        "网格员 张伟",
        "监管人员 sup-s1",
        "管理员 admin",
        "系统（摄像头复核）",
        "系统（转监管复核）",
        "系统（接单超时）",
        "系统（超时提醒）",
        "系统（处置时限）",
        "系统（交接班）",
    }
    expect(dash.locator("#dd-meta")).to_contain_text("结案原因：摄像头确认问题已消失")
    shots.shot(dash, "audit-reasons")
    dash.click("#detail .detail-close button")

    # an action the server refuses: the sentence from the dictionary, its words beneath
    open_ticket(dash, other)
    w01 = login(stack.url, "w01", stack.password("w01"))
    w01.post(f"/tickets/{other}/reject", json={"reason": "重复"}).raise_for_status()
    dash.fill("#dd-reason", "重复工单")
    dash.click("#dd-actions button.danger")
    error = dash.locator("#dd-error")
    expect(error).to_be_visible()
    sentence = dash.evaluate("document.querySelector('#dd-error').firstChild.textContent")
    assert sentence == dictionary("zh-CN")["error.http_409"]
    expect(error.locator(".error-detail")).to_contain_text(f"cannot reject ticket {other}")
    dash.click("#detail .detail-close button")
    assert missing_keys(dash) == []

    # English on demand: the same rows in English words, the time still the site's
    open_ticket(dash, every)
    dash.click("#detail .detail-close button")
    dash.click("#lang")
    expect(dash.locator("#kpi-backlog h3")).to_have_text("Backlog")
    open_ticket(dash, every)
    expect(dash.locator("#dd-audit")).to_contain_text("Due by 01/05, 21:00")
    expect(dash.locator("#dd-audit")).to_contain_text("Device edge-01")
    expect(dash.locator("#dd-meta")).to_contain_text("cleared, seen by a camera")
    assert missing_keys(dash) == []

    # the worker app shows the same trail in words
    app = shots.watch(new_context(**PHONE).new_page())
    log_in(app, "/app/", "w01", stack.password("w01"))
    expect(app.locator("#net")).to_have_class("net live")
    app.goto(f"/app/#/t/{every}")
    lines = app.locator("#d-audit li")
    expect(lines).to_have_count(len(trail))
    app.click("details:has(#d-audit) summary")
    expect(lines.first).to_be_visible()
    for line, why in zip(lines.all_inner_texts(), trail, strict=True):
        assert foreign_words(line) == "", line
        if why is not None and why.code is not ReasonCode.NOTE:
            assert why.text not in line
    expect(app.locator("#d-audit")).to_contain_text("须在 01/05 21:00 前完成")
    shots.shot(app, "worker-audit-reasons", full_page=True)
    assert missing_keys(app) == []
    assert [e for e in shots.errors if "Failed to load resource" not in e] == []
