"""Run the real edge agent with its clock off by a fixed amount: a device whose clock is wrong.

``python -m tests.faults.skewed_agent EDGE.yaml --offset-s 600`` is ``gridwatch edge run
EDGE.yaml`` except that every time the agent reads (readings, events, heartbeats, outbox)
comes from a clock ``offset`` seconds ahead (negative: behind) of the machine's.
"""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType


class OffsetClock:
    """The wall clock plus a fixed offset."""

    def __init__(self, offset_s: float) -> None:
        self.offset = timedelta(seconds=offset_s)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def main() -> None:
    from config.logs import setup_logging
    from edge.agent import EdgeAgent
    from edge.settings import load_edge_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("--offset-s", type=float, required=True)
    args = parser.parse_args()
    setup_logging("INFO")
    agent = EdgeAgent(load_edge_settings(args.config), clock=OffsetClock(args.offset_s))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start()
    try:
        stop.wait()
    finally:
        agent.stop()


if __name__ == "__main__":
    main()
