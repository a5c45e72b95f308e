"""The one MQTT client every part uses: MQTT v5, QoS 1, persistent sessions, reconnect, last will, TLS.

No other module imports paho-mqtt. Typical use::

    bus = BusClient(BusSettings(client_id="dispatcher-1", username=..., password=...))
    bus.subscribe(topics.shared(topics.all_edge("event")), on_event)
    bus.start()
    bus.publish(topics.worker_tickets("w01"), push)   # a Message or raw bytes

Handlers run on the network thread and must return quickly. With ``manual_ack=True`` a
QoS 1 message is acknowledged only when the handler's code calls ``delivery.ack()``, so the
broker redelivers anything the process did not finish (the dispatcher acks after its commit).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import DISCONNECT, PUBLISH
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from broker.messages import Message

log = logging.getLogger(__name__)


class TlsSettings(BaseModel):
    """TLS for the broker connection; production listeners have it on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(default=None, description="CA bundle; None uses the system's")
    cert_file: Path | None = Field(default=None, description="client certificate (optional)")
    key_file: Path | None = None


class Will(BaseModel):
    """The last will: published by the broker if the client vanishes without a clean disconnect."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    payload: bytes
    retain: bool = True


class BusSettings(BaseModel):
    """How to reach the broker and how to behave on the session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(min_length=1, max_length=128)
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(default=20, ge=5, le=600)
    session_expiry_s: int = Field(default=24 * 3600, ge=0, description="broker keeps our session")
    clean_start: bool = Field(default=False, description="False resumes the persistent session")
    manual_ack: bool = Field(default=False, description="ack QoS 1 deliveries only on request")
    max_inflight: int = Field(default=100, ge=1, le=65535)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=20, gt=0)
    tls: TlsSettings | None = None
    will: Will | None = None


@dataclass(frozen=True)
class Delivery:
    """One received message; call ``ack()`` when ``manual_ack`` is on and the work is safe."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    _ack: Callable[[], None] = field(repr=False)

    def ack(self) -> None:
        self._ack()


Handler = Callable[[Delivery], None]


@dataclass
class Published:
    """A publish in progress; ``done()`` turns true when the broker acknowledged it (PUBACK)."""

    mid: int
    _info: mqtt.MQTTMessageInfo = field(repr=False)

    def done(self) -> bool:
        # paho's is_published() raises for a message published while disconnected, although
        # paho keeps it queued and sends it on reconnect; read the flag its PUBACK handler sets.
        info = self._info
        with info._condition:
            return bool(info._published)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the PUBACK (woken by it, no polling); ``done()``."""
        info = self._info
        with info._condition:
            return bool(info._condition.wait_for(lambda: info._published, timeout_s))


# MQTT v5 PUBACK reason code 0x10: accepted, but no subscription matched (not a failure).
NO_MATCHING_SUBSCRIBERS = 0x10


# Topics whose handler list is remembered (one per device and channel in practice).
ROUTE_CACHE_SIZE = 50_000


class _BufferedSocket:
    """The broker connection with a read buffer in front.

    paho reads each packet's type and length a byte at a time, a system call each (and a
    hand-over of the GIL each, which the intake thread then makes it wait for). This takes
    whatever has arrived in one call and hands it out from memory. ``pending()`` is the hook
    paho's loop has for bytes a TLS socket holds already: with bytes here it does not wait on
    the socket. Everything else goes to the socket itself.
    """

    CHUNK = 64 * 1024

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._at = 0

    def recv(self, bufsize: int) -> bytes:
        if self._at >= len(self._data):
            self._data, self._at = self._sock.recv(self.CHUNK), 0
        at = self._at
        out = self._data[at : at + bufsize]
        self._at = at + len(out)
        return out

    def buffered(self) -> int:
        return len(self._data) - self._at

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return self.buffered() + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Wake:
    """The sending end of paho's wake-up pair, sending one wake for a run of queued packets:
    paho sends one per packet (a batch's 500 acks were 500 system calls in the intake thread).
    ``_Client._packet_write`` re-arms it before it reads the queue. A new pair (a reconnect,
    a new loop thread) starts armed."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.armed = True

    def send(self, data: bytes) -> int:
        if not self.armed:
            return 0  # a wake is on its way: the thread will find this packet in the queue
        self.armed = False
        return int(self._sock.send(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _needs_nothing_after_write(packet: Mapping[str, Any]) -> bool:
    """paho acts once these are written: a QoS 0 publish (its callback) and DISCONNECT."""
    command = packet["command"] & 0xF0
    return not (command == PUBLISH and packet["qos"] == 0) and command != DISCONNECT


class _Client(mqtt.Client):
    """paho's client reading through ``_BufferedSocket`` and writing queued packets together.

    Stock paho 2.x reads one packet per pass of its loop (a select() each) and writes each
    packet with a send() of its own: at thousands of QoS 1 messages a second (each with its
    PUBACK) that was a third of the dispatcher's CPU. Tied to paho's internals (pinned in
    pyproject.toml); every bus test runs through it against a real Mosquitto.
    """

    def _create_socket(self) -> Any:
        sock: Any = super()._create_socket()
        if self._transport == "tcp":
            # Packets leave already joined: Nagle's wait for the broker's ACK (delayed up to
            # 40 ms) would only hold a lone push or PUBACK back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _BufferedSocket(sock)

    # Packets read in one pass at most, so a steady stream cannot hold off the writes (acks).
    READ_PER_PASS = 1000

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read the packets already buffered, not one per pass of the loop."""
        rc = super().loop_read(max_packets)
        for _ in range(self.READ_PER_PASS):
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._buffered():
                break
            rc = super().loop_read(max_packets)
        return rc

    def _buffered(self) -> int:
        sock = self._sock
        return sock.buffered() if isinstance(sock, _BufferedSocket) else 0

    # paho wakes its network thread through this socket pair, a send per queued packet;
    # wrapped so that a run of queued packets sends one (see ``_Wake``).
    @property
    def _sockpairW(self) -> Any:
        return self.__dict__.get("_wake")

    @_sockpairW.setter
    def _sockpairW(self, sock: Any) -> None:
        self.__dict__["_wake"] = None if sock is None else _Wake(sock)

    def _packet_write(self) -> MQTTErrorCode:
        """Join the queued packets that need nothing once written into one send."""
        # Re-armed before the queue is read: a packet queued from here on wakes the thread
        # again; one queued before is in the queue this call writes.
        wake = self._sockpairW
        if wake is not None:
            wake.armed = True
        out = self._out_packet
        if len(out) > 1 and _needs_nothing_after_write(out[0]):
            first = out.popleft()
            parts = [first["packet"][first["pos"] :]]
            while out and _needs_nothing_after_write(out[0]):
                parts.append(out.popleft()["packet"])
            data = b"".join(parts)
            out.appendleft({**first, "pos": 0, "to_process": len(data), "packet": data})
        return super()._packet_write()


class BusError(RuntimeError):
    """The broker refused something (authorisation, a bad topic, a full queue)."""


def _inner_filter(topic_filter: str) -> str:
    """``$share/group/a/b`` matches incoming topics like ``a/b``."""
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter


class BusClient:
    """A connected, self-healing MQTT v5 session with a small callback API."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._subs: list[tuple[str, str, int, Handler]] = []
        self._routes: dict[str, tuple[Handler, ...]] = {}  # topic -> handlers, filled on use
        self._connect_listeners: list[Callable[[bool], None]] = []
        self._disconnect_listeners: list[Callable[[str], None]] = []
        self._publish_listeners: list[Callable[[int, bool], None]] = []
        self._unrouted_listeners: list[Callable[[int], None]] = []
        self._connected = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=True,
            manual_ack=settings.manual_ack,
        )
        c = self._client
        if settings.username is not None:
            c.username_pw_set(
                settings.username,
                settings.password.get_secret_value() if settings.password else None,
            )
        if settings.tls is not None:
            t = settings.tls
            c.tls_set(
                ca_certs=str(t.ca_file) if t.ca_file else None,
                certfile=str(t.cert_file) if t.cert_file else None,
                keyfile=str(t.key_file) if t.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if settings.will is not None:
            c.will_set(
                settings.will.topic, settings.will.payload, qos=1, retain=settings.will.retain
            )
        c.reconnect_delay_set(
            min_delay=max(1, round(settings.reconnect_min_s)),
            max_delay=round(settings.reconnect_max_s),
        )
        c.max_inflight_messages_set(settings.max_inflight)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, wait_s: float | None = None) -> None:
        """Connect in the background; with ``wait_s``, wait that long for the first CONNACK."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=self.settings.clean_start,
            properties=props,
        )
        self._client.loop_start()
        if wait_s is not None and not self._connected.wait(wait_s):
            self.stop()
            raise BusError(
                f"no connection to {self.settings.host}:{self.settings.port} within {wait_s}s"
                + (f": {self.last_error}" if self.last_error else "")
            )

    def stop(self, *, end_session: bool = False) -> None:
        """Disconnect cleanly (no last will) and stop the network thread.

        With ``end_session`` the broker forgets the session now (MQTT v5: session expiry 0 in
        the DISCONNECT), its subscriptions and anything queued for it, instead of keeping it
        for ``session_expiry_s``: a client that will not come back leaves no subscriber
        behind that takes messages nobody reads."""
        self._stopping = True
        props: Properties | None = None
        if end_session:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
        try:
            self._client.disconnect(properties=props)
        finally:
            self._client.loop_stop()
            self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    # -- listeners -----------------------------------------------------------------------
    def on_connected(self, fn: Callable[[bool], None]) -> None:
        """``fn(session_present)`` after every successful (re)connect."""
        self._connect_listeners.append(fn)

    def on_disconnected(self, fn: Callable[[str], None]) -> None:
        self._disconnect_listeners.append(fn)

    def on_acknowledged(self, fn: Callable[[int, bool], None]) -> None:
        """``fn(mid, ok)`` when the broker acknowledges one of our QoS 1 publishes."""
        self._publish_listeners.append(fn)

    def on_unrouted(self, fn: Callable[[int], None]) -> None:
        """``fn(mid)`` when the broker's PUBACK says "No matching subscribers": it took the
        publish and dropped it. With such a listener the publish is not reported to
        ``on_acknowledged`` listeners, so a store-and-forward sender keeps it and sends it
        again (no dispatcher subscribed yet, or a restarted Mosquitto 2.0 that did not
        restore the dispatchers' shared subscription)."""
        self._unrouted_listeners.append(fn)

    # -- traffic -------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Register a handler; the subscription is (re)made on every connect."""
        with self._lock:
            self._subs.append((topic_filter, _inner_filter(topic_filter), qos, handler))
            self._routes.clear()
        if self.connected:
            self._client.subscribe(topic_filter, qos=qos)

    def publish(
        self,
        topic: str,
        payload: Message | bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
    ) -> Published:
        """Queue a publish; it is sent now if connected, else on reconnect (same process).

        With ``expiry_s`` (MQTT v5 Message Expiry Interval) the broker drops the message once
        it is that many seconds old: it is not delivered later from a persistent session's
        queue, and a retained copy disappears. For news that is worthless when late (heartbeats).
        """
        data = payload.to_json() if isinstance(payload, Message) else payload
        props: Properties | None = None
        if expiry_s is not None:
            if expiry_s < 1:
                raise ValueError(f"message expiry must be at least 1 s, not {expiry_s}")
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = expiry_s
        info = self._client.publish(topic, data, qos=qos, retain=retain, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise BusError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        return Published(info.mid, info)

    # -- paho callbacks (network thread) -------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused connection: {reason}"
            log.error("MQTT connect refused for %s: %s", self.settings.client_id, reason)
            return
        self.last_error = None
        with self._lock:
            subs = [(f, q) for f, _, q, _ in self._subs]
        if subs:
            client.subscribe(subs)
        self._connected.set()
        log.info(
            "MQTT connected as %s (session present: %s)",
            self.settings.client_id,
            flags.session_present,
        )
        for fn in list(self._connect_listeners):
            self._call(fn, flags.session_present)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was:
            log.log(
                logging.INFO if self._stopping else logging.WARNING,
                "MQTT disconnected (%s): %s",
                self.settings.client_id,
                reason,
            )
        for fn in list(self._disconnect_listeners):
            self._call(fn, str(reason))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        for r in reasons:
            if r.is_failure:
                self.last_error = f"subscription refused: {r}"
                log.error("MQTT subscription refused for %s: %s", self.settings.client_id, r)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        ok = not reason.is_failure
        if not ok:
            log.error("broker rejected publish mid=%s: %s", mid, reason)
        elif reason.value == NO_MATCHING_SUBSCRIBERS and self._unrouted_listeners:
            for unrouted in list(self._unrouted_listeners):
                self._call(unrouted, mid)
            return
        for fn in list(self._publish_listeners):
            self._call(fn, mid, ok)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        handlers = self._routes.get(topic)
        if handlers is None:
            with self._lock:
                handlers = tuple(
                    h for _, inner, _, h in self._subs if mqtt.topic_matches_sub(inner, topic)
                )
                if len(self._routes) >= ROUTE_CACHE_SIZE:
                    self._routes.clear()
                self._routes[topic] = handlers
        qos, mid = msg.qos, msg.mid
        once = threading.Lock()  # taken by the first ack; a second one does nothing

        def ack() -> None:
            if self.settings.manual_ack and qos > 0 and once.acquire(blocking=False):
                client.ack(mid, qos)

        delivery = Delivery(topic, bytes(msg.payload), qos, bool(msg.retain), mid, ack)
        if not handlers:
            log.warning("no handler for message on %s", topic, extra={"topic": topic})
            delivery.ack()
            return
        for handler in handlers:
            try:
                handler(delivery)
            except Exception:
                log.exception("handler failed for message on %s", topic, extra={"topic": topic})
                delivery.ack()

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("bus listener %r failed", fn)
