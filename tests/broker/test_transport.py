"""The bus client's own socket handling (a read buffer, queued packets written together)
against a real Mosquitto, over plain TCP and over TLS: bursts of QoS 1 messages acknowledged
together, payloads far larger than one read, and nothing left for the broker to send again."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker import topics
from broker.client import Delivery, TlsSettings
from broker.mosquitto import BrokerOptions
from config.site import Site
from tests.conftest import DeviceFactory, broker_of_its_own, wait_until


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt")
    )
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=gw-ca"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


@pytest.fixture(params=["tcp", "tls"])
def broker(
    request: pytest.FixtureRequest, site: Site, tmp_path: Path
) -> Iterator[tuple[DeviceFactory, TlsSettings | None]]:
    """A broker of this test's own (plain or TLS listener) and a way to connect to it."""
    opts, tls = BrokerOptions(), None
    if request.param == "tls":
        ca, cert, key = make_certificates(tmp_path)
        opts, tls = BrokerOptions(tls_cert=cert, tls_key=key), TlsSettings(ca_file=ca)
    with broker_of_its_own(site, tmp_path / "broker", opts) as (_, connect):
        yield connect, tls


def test_a_burst_acknowledged_together_is_not_sent_again(
    site: Site, broker: tuple[DeviceFactory, TlsSettings | None]
) -> None:
    connect, tls = broker
    password = site.broker.dispatcher_password.get_secret_value()
    client_id = f"t-disp-{uuid.uuid4().hex[:6]}"
    got: list[Delivery] = []
    lock = threading.Lock()

    def keep(d: Delivery) -> None:
        with lock:
            got.append(d)

    sub = connect("dispatcher", password, client_id=client_id, manual_ack=True, tls=tls)
    sub.subscribe(topics.all_edge("event"), keep)
    sub.start(wait_s=10)
    device = connect("edge-01", tls=tls, max_inflight=500)
    device.start(wait_s=10)
    big = bytes(range(256)) * 6000  # 1.5 MB: many reads of the client's buffer
    sent = [f'{{"n": {i}}}'.encode() for i in range(2000)]
    sent.insert(1000, big)
    for body in sent:
        device.publish(topics.event("edge-01"), body)

    # The broker sends at most its in-flight window of unacknowledged messages: ack as they come.
    def more_than(n: int) -> Callable[[], bool]:
        return lambda: len(got) > n

    acked = 0
    while acked < len(sent):
        wait_until(more_than(acked), 20)
        with lock:
            batch = got[acked:]
        for d in batch:  # acknowledged together, from this thread, as the dispatcher does
            d.ack()
        acked += len(batch)
    assert [hashlib.sha1(d.payload).digest() for d in got] == [
        hashlib.sha1(b).digest() for b in sent
    ]
    sub.stop()

    again: list[Delivery] = []
    resumed = connect(
        "dispatcher", password, client_id=client_id, manual_ack=True, tls=tls, clean_start=False
    )
    resumed.subscribe(topics.all_edge("event"), again.append)
    resumed.start(wait_s=10)
    device.publish(topics.event("edge-01"), b'{"n": "last"}')
    wait_until(lambda: again, 10)
    assert [d.payload for d in again] == [b'{"n": "last"}'], "acknowledged messages came back"
