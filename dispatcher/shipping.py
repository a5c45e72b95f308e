"""The thread behind each shipper (pushes, metrics): woken after a commit, or every second."""

from __future__ import annotations

import threading


class ShipperThread:
    """Start, wake and stop one background thread; subclasses write ``_run``."""

    thread_name = "shipper"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Ship now (called after a commit that wrote audit rows)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        raise NotImplementedError
