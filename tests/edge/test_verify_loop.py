"""The closed loop with the real dispatcher: the agent's event opens a ticket; when the worker
resolves it, the dispatcher's verify is answered by the agent's detector on fresh frames: the
ticket reopens while the pile is still there and closes once the street is clean."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker.mosquitto import MosquittoServer
from config.site import Site
from edge.agent import EdgeAgent
from edge.settings import load_edge_settings
from simulators.workers import after_photo
from tests.conftest import wait_until
from tests.edge.conftest import ListenerFactory, camera, clear_retained, edge_yaml, image_sequence

RULE = {
    "garbage": {
        "confirm_hits": 2,
        "confirm_checks": 3,
        "confirm_seconds": 1,
        "clear_seconds": 60,  # the camera's own `cleared` must not pre-empt the verification
    }
}


def point_all(folder: Path, target: Path) -> None:
    """Re-point every frame of an image-folder camera: what the street shows from now on."""
    for link in folder.iterdir():
        link.unlink()
        link.symlink_to(target)


@pytest.mark.parametrize("cleaned", [False, True], ids=["still-there", "cleaned"])
def test_the_cameras_verify_decides_whether_a_resolved_ticket_closes(
    cleaned: bool,
    tmp_path: Path,
    site: Site,
    mosquitto: MosquittoServer,
    listen: ListenerFactory,
    make_dispatcher: Callable[..., Any],
    fake_model: Path,
) -> None:
    from dispatcher.lifecycle import Transition
    from dispatcher.store.schema import tickets

    d = make_dispatcher()
    clear_retained(listen())
    street = image_sequence(tmp_path / "street", [True] * 6)
    clean = tmp_path / "street-dark.png"
    path = edge_yaml(
        tmp_path,
        site,
        mosquitto.port,
        [camera("cam-01", street, loop=True, sample_fps=4, classes=RULE)],
        detector={"type": "onnx", "model": str(fake_model), "threads": 1},
    )
    agent = EdgeAgent(load_edge_settings(path))
    agent.start()

    def ticket() -> Any:
        with d.engine.connect() as conn:
            return conn.execute(select(tickets)).mappings().first()

    try:
        t = wait_until(lambda: (row := ticket()) and row["worker_id"] and row, 30)
        tid, worker = t["id"], t["worker_id"]
        assert t["category"] == "garbage" and t["grid_id"] == "g1"
        d.act(tid, Transition.ACCEPTED, worker_id=worker, actor=f"worker:{worker}")
        if cleaned:
            point_all(street, clean)  # the worker really cleans up
        d.resolve(tid, worker_id=worker, photo=after_photo(tid, 1), note="fixed")
        # still there: the camera reopens it (back to its worker); clean: verified and closed
        wait_until(lambda: ticket()["status"] == ("closed" if cleaned else "assigned"), 30)
    finally:
        agent.stop()
