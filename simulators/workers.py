"""Grid-worker simulators: log in, see assigned tickets, accept and resolve them through the real API."""

from __future__ import annotations

import io
import logging
import random
import time
from dataclasses import dataclass, field

import httpx
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)


def after_photo(ticket_id: int, seed: int) -> bytes:
    """A small JPEG standing in for the phone's after-photo."""
    rnd = random.Random(seed)
    img = Image.new("RGB", (480, 360), (rnd.randint(100, 160), rnd.randint(120, 170), 110))
    ImageDraw.Draw(img).text((10, 10), f"ticket {ticket_id} fixed", fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return buf.getvalue()


@dataclass
class WorkerSimulator:
    """One worker acting through the HTTP API after random human-like delays."""

    base_url: str
    username: str
    password: str
    accept_delay_s: tuple[float, float] = (1.0, 4.0)
    fix_delay_s: tuple[float, float] = (3.0, 8.0)
    seed: int = 0
    accepted: int = 0
    resolved: int = 0
    _due: dict[int, tuple[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)
        self.http = httpx.Client(base_url=self.base_url, timeout=15)
        self.token: str | None = None

    def login(self) -> None:
        r = self.http.post(
            "/auth/login", json={"username": self.username, "password": self.password}
        )
        r.raise_for_status()
        self.token = r.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def step(self, now: float | None = None) -> None:
        """Look at my tickets; do whatever is due."""
        now = time.monotonic() if now is None else now
        if self.token is None:
            self.login()
        r = self.http.get("/tickets", params={"status": ["assigned", "accepted"], "limit": 100})
        if r.status_code == 401:
            self.token = None
            return
        r.raise_for_status()
        for t in r.json()["items"]:
            tid, status = int(t["id"]), t["status"]
            planned = self._due.get(tid)
            if planned is None or planned[0] != status:
                delay = self.accept_delay_s if status == "assigned" else self.fix_delay_s
                self._due[tid] = (status, now + self.rnd.uniform(*delay))
        for tid, (status, at) in list(self._due.items()):
            if at > now:
                continue
            del self._due[tid]
            if status == "assigned":
                r = self.http.post(f"/tickets/{tid}/accept")
                if r.status_code == 200:
                    self.accepted += 1
            elif status == "accepted":
                r = self.http.post(
                    f"/tickets/{tid}/resolve",
                    files={
                        "photo": (
                            "after.jpg",
                            after_photo(tid, self.rnd.randint(0, 1 << 30)),
                            "image/jpeg",
                        )
                    },
                    data={"note": "已清理 / cleaned"},
                )
                if r.status_code == 200:
                    self.resolved += 1
            if r.status_code not in (200, 404, 409):
                log.warning(
                    "%s: %s on ticket %s answered %s: %s",
                    self.username,
                    status,
                    tid,
                    r.status_code,
                    r.text[:200],
                    extra={"worker_id": self.username},
                )

    def close(self) -> None:
        self.http.close()
