"""Both languages are complete: every key the pages use exists in zh-CN and in en, the two
dictionaries have the same keys and the same {placeholders}, and every value the server can
send where the pages build a key from it (statuses, transitions, sources…) is translated.
The browser tests add the live check: window.gwMissingKeys stays empty on every screen."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import get_args

import pytest

from broker.messages import CameraStatus, CommandResult, SupervisorAlert
from config.site import CategorySource, Device
from dispatcher.api.models import Attention
from dispatcher.evidence import EvidenceKind
from dispatcher.lifecycle import Status, Transition

STATIC = Path(__file__).resolve().parents[2] / "dispatcher" / "web" / "static"
LANGS = ("zh-CN", "en")
PAGES = [STATIC / "app" / "index.html", STATIC / "dashboard" / "index.html"]
SCRIPTS = sorted(p for p in STATIC.rglob("*.js") if "vendor" not in p.parts and p.name != "sw.js")


def dictionary(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((STATIC / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


def camera_states() -> tuple[str, ...]:
    return get_args(CameraStatus.model_fields["state"].annotation)


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
    "close_reason.": ("fixed", "cleared", "false_alarm"),
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
