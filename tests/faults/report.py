"""Run the fault scenarios at full length and the hostile-input suite at a larger budget, and
write their tables into docs/reliability.md.

    python -m tests.faults.report                  # everything (about 15 minutes on 2 cores)
    python -m tests.faults.report --only broker,edge
    python -m tests.faults.report --skip-hostile --print

Each scenario runs in its own folder under ``--state`` (kept for inspection: logs of every
process, the ticket store, the outboxes). The tables replace what stands between the
``<!-- faults:begin -->`` / ``<!-- hostile:begin -->`` markers and their ``end`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.markdown import replace_section
from simulators.load import DOCS as DOC
from simulators.load import machine

REPO = Path(__file__).resolve().parents[2]


def mosquitto_version() -> str:
    try:
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    m = re.search(r"mosquitto version (\S+)", out)
    return m.group(1) if m else "?"


def run_faults(names: list[str], state: Path) -> list[dict[str, Any]]:
    from simulators.local_services import InfluxServer
    from tests.faults.scenarios import SCENARIOS, CannotMount, clean
    from tests.faults.test_scenarios import FULL, KNOWN_FLAKY, KNOWN_OPEN

    rows: list[dict[str, Any]] = []
    influx = InfluxServer(clean(state / "shared-influxdb"))
    influx.start()
    try:
        for name in names:
            folder = clean(state / name)
            print(f"== {name} ({folder})", flush=True)
            fn = SCENARIOS[name]
            try:
                out = (
                    fn(folder, **FULL[name])
                    if name == "influx"
                    else fn(folder, influx, **FULL[name])
                )
            except CannotMount as exc:
                print(f"   skipped: {exc}", flush=True)
                rows.append({"name": name, "skipped": str(exc)})
                continue
            row = {
                "name": name,
                "title": out.name,
                "what": out.what,
                "counts": out.counts.as_row(),
                "recovery_s": out.recovery_s if out.repaired else "n/a",
                "checks": out.checks,
                "known_open": sorted(KNOWN_OPEN.get(name, set()) | KNOWN_FLAKY.get(name, set())),
                "notes": out.notes,
                "seconds": round(out.seconds, 1),
            }
            rows.append(row)
            print(
                f"   {'ok' if out.ok else 'FAILED ' + str(out.failed())}; {out.counts.as_row()}",
                flush=True,
            )
    finally:
        influx.stop()
    return rows


def run_hostile(scale: int, state: Path) -> dict[str, Any]:
    counts_file = state / "hostile-counts.json"
    junit = state / "hostile-junit.xml"
    env = dict(os.environ, GW_FUZZ_SCALE=str(scale), GW_HOSTILE_COUNTS=str(counts_file))
    started = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/hostile",
            f"--junitxml={junit}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
    counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    tests, failures = _junit_totals(junit)
    return {
        "scale": scale,
        "cases": counts,
        "tests": tests,
        "failures": failures,
        "summary": tail[0],
        "seconds": round(time.monotonic() - started, 1),
    }


def _junit_totals(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    text = path.read_text()
    m = re.search(r'<testsuite [^>]*errors="(\d+)" failures="(\d+)"[^>]*tests="(\d+)"', text)
    if not m:
        return 0, 0
    return int(m.group(3)), int(m.group(1)) + int(m.group(2))


def _fmt_s(v: float | str | None) -> str:
    if isinstance(v, str):
        return v
    return "did not drain" if v is None else f"{v:.1f} s"


def faults_table(rows: list[dict[str, Any]], stamp: str) -> str:
    lines = [
        f"Run {stamp}. Command: `python -m tests.faults.report` (scenarios in "
        "`tests/faults/scenarios.py`, parameters `FULL` in `tests/faults/test_scenarios.py`).",
        "",
        "| scenario | what was done | events sent / received / lost | tickets expected / made / "
        "duplicated | pushes expected / delivered / lost | recovery | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} | | | | | |")
            continue
        c = r["counts"]
        failed = [k for k, ok in r["checks"].items() if not ok]
        open_ = [k for k in failed if k in r["known_open"]]
        other = [k for k in failed if k not in r["known_open"]]
        result = "all checks pass" if not failed else ""
        if open_:
            result += "open finding: " + "; ".join(open_)
        if other:
            result += ("; " if open_ else "") + "FAILED: " + "; ".join(other)
        lines.append(
            f"| {r['title']} | {r['what']} | {c['events_sent']} / {c['events_received']} / "
            f"{c['events_lost']} | {c['tickets_expected']} / {c['tickets_made']} / "
            f"{c['tickets_duplicated']} | {c['pushes_expected']} / {c['pushes_delivered']} / "
            f"{c['pushes_lost']} | {_fmt_s(r['recovery_s'])} | {result} |"
        )
    lines += ["", "Notes per scenario (from the same run):", ""]
    for r in rows:
        if "skipped" in r:
            continue
        lines.append(f"- **{r['title']}** ({r['seconds']:.0f} s): " + "; ".join(r["notes"]))
    return "\n".join(lines)


def hostile_table(h: dict[str, Any], stamp: str) -> str:
    lines = [
        f"Run {stamp}. Command: `python -m tests.faults.report` (runs `pytest tests/hostile` with "
        f"`GW_FUZZ_SCALE={h['scale']}`); `make test` runs the same tests at scale 1.",
        "",
        "| input family | cases tried |",
        "|---|---|",
    ]
    for family, n in sorted(h["cases"].items()):
        lines.append(f"| {family} | {n} |")
    lines += [
        "",
        f"pytest: {h['tests']} tests, {h['failures']} failing ({h['summary']}), "
        f"{h['seconds']:.0f} s.",
    ]
    return "\n".join(lines)


def main() -> None:
    from tests.faults.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated scenario names: " + ", ".join(SCENARIOS))
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--skip-hostile", action="store_true")
    parser.add_argument("--scale", type=int, default=10, help="hostile example budget multiplier")
    parser.add_argument("--state", type=Path, default=None, help="folder for the runs' files")
    parser.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the tables instead of writing docs/reliability.md",
    )
    args = parser.parse_args()
    os.environ.setdefault("GW_LOG_FORMAT", "json")
    state = args.state or Path(tempfile.mkdtemp(prefix="gridwatch-faults-"))
    state.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else [n for n in SCENARIOS if n != "in-a-row"]
    stamp = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}, Mosquitto {mosquitto_version()}"
    )
    text = DOC.read_text(encoding="utf-8")
    results: dict[str, Any] = {"stamp": stamp}
    if not args.skip_faults:
        results["faults"] = run_faults(names, state)
        text = replace_section(text, "faults", faults_table(results["faults"], stamp))
    if not args.skip_hostile:
        print("== hostile input", flush=True)
        results["hostile"] = run_hostile(args.scale, state)
        text = replace_section(text, "hostile", hostile_table(results["hostile"], stamp))
    (state / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if args.print_only:
        print(text)
    else:
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC} (raw results in {state / 'results.json'})")
    failed = [
        r["name"]
        for r in results.get("faults", [])
        if any(not ok and k not in r.get("known_open", []) for k, ok in r.get("checks", {}).items())
    ]
    if failed or results.get("hostile", {}).get("failures"):
        print(
            f"unexpected failures: {failed or ''} {results.get('hostile', {}).get('failures', '')}"
        )
        raise SystemExit(1)


if __name__ == "__main__":
    main()
