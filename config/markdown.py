"""Generated sections of the Markdown docs: what stands between ``<!-- tag:begin -->`` and
``<!-- tag:end -->`` is rewritten by the command that measured it (reports, cards)."""

from __future__ import annotations

from pathlib import Path


class MissingMarkers(ValueError):
    """The document has no ``begin``/``end`` markers for the section."""


def replace_section(text: str, tag: str, body: str) -> str:
    """``text`` with the section ``tag`` replaced by ``body``."""
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    if begin not in text or end not in text:
        raise MissingMarkers(f"no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def write_section(doc: Path, tag: str, body: str) -> Path:
    """Rewrite the section ``tag`` of the Markdown file ``doc`` in place."""
    text = doc.read_text(encoding="utf-8")
    try:
        doc.write_text(replace_section(text, tag, body), encoding="utf-8")
    except MissingMarkers as exc:
        raise MissingMarkers(f"{doc}: {exc}") from exc
    return doc
