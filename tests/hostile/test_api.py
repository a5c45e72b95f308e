"""Hostile requests against the real dispatcher API (real uvicorn, real store, real broker).

- schemathesis generates requests from the API's own OpenAPI document, as admin and as a
  worker: no 500, no status code the document does not list, no response that violates the
  documented schema or content type;
- SQL and path tricks in every filter and path parameter; CRLF and over-long headers;
- uploads: corrupt JPEGs, images whose header claims huge dimensions, formats we do not
  accept, content-type lies, and path tricks in the upload's file name;
- over-sized bodies (declared and chunked), and brute-force logins (per account and address,
  sprayed, spread over many addresses).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from PIL import Image
from schemathesis import runner
from schemathesis.checks import not_a_server_error
from schemathesis.runner import events
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select

from broker.mosquitto import MosquittoServer
from config.clock import ManualClock
from config.site import SAMPLE_SITE, Site
from dispatcher import tickets as ticket_ops
from dispatcher.api.app import create_app
from dispatcher.evidence import MAX_IMAGE_BYTES
from dispatcher.security import LoginThrottle
from dispatcher.service import Dispatcher
from dispatcher.store.schema import evidence, tickets
from simulators.local_services import InfluxServer
from tests.conftest import ApiServer, dispatcher_settings, login
from tests.dispatcher.factories import new_ticket, offset
from tests.hostile.strategies import SCALE, TRIED

ADMIN_PASSWORD = "admin-pass-1"
G1_CENTRE = (39.957, 116.4175)  # grid g1: w01 on the day shift


def day_shift_morning(site: Site) -> datetime:
    """The latest 10:00 site time at or before now (everyone on the day shift is on duty)."""
    local = datetime.now(UTC).astimezone(site.tz)
    at = datetime.combine(local.date(), time(10, 0), tzinfo=site.tz)
    return (at - timedelta(days=1) if at > local else at).astimezone(UTC)


def jpeg(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buf, "JPEG")
    return buf.getvalue()


@dataclass
class Api:
    site: Site
    dispatcher: Dispatcher
    server: ApiServer
    secrets: dict[str, str]
    made: int = 0
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def as_user(self, username: str) -> httpx.Client:
        """A logged-in client, one per user for the module (each login costs an argon2 hash)."""
        if username not in self.clients:
            pw = (
                ADMIN_PASSWORD
                if username == "admin"
                else self.secrets[f"GW_PW_{username.upper().replace('-', '_')}"]
            )
            self.clients[username] = login(self.url, username, pw)
        return self.clients[username]

    def ticket_for_w01(self) -> int:
        """A new ticket in g1, assigned to w01 (each at its own spot, so none merge)."""
        self.made += 1
        lat, lon = offset(
            *G1_CENTRE, north_m=35 * (self.made % 10) - 150, east_m=35 * (self.made // 10) - 150
        )
        d = self.dispatcher
        with d.engine.begin() as conn:
            tid = new_ticket(conn, self.site, kind="garbage", lat=lat, lon=lon, at=d.clock.now())
            row = ticket_ops.assign(conn, self.site, tid, at=d.clock.now(), actor="system")
        assert row["worker_id"] == "w01", row
        return tid

    def ticket_count(self) -> int:
        with self.dispatcher.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tickets)).scalar_one())


@pytest.fixture(scope="module")
def api(
    site: Site,
    site_secrets: dict[str, str],
    mosquitto: MosquittoServer,
    influx: InfluxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    state: Path = tmp_path_factory.mktemp("hostile-api")
    settings = dispatcher_settings(SAMPLE_SITE, state, influx, admin_password=ADMIN_PASSWORD)
    d = Dispatcher(settings, site, ManualClock(day_shift_morning(site)))
    d.start(wait_s=15)
    try:
        app = create_app(d)
        # The production limits, except spraying locks an address after 10 failures, not 100,
        # and guesses spread over addresses lock an account after 10, not 20 (each failure
        # costs an argon2 hash; the mechanism is the same).
        app.state.login_throttle = LoginThrottle(
            max_failures=5, max_per_address=10, max_per_account=10
        )
        with ApiServer(app) as server:
            a = Api(site, d, server, site_secrets)
            for _ in range(3):
                a.ticket_for_w01()
            yield a
    finally:
        d.stop()


# -- schemathesis ------------------------------------------------------------------------
def run_schemathesis(api: Api, username: str, examples: int) -> tuple[int, list[str]]:
    """Every operation of the OpenAPI document, ``examples`` generated cases each (positive and
    negative data), as ``username``; returns (cases, failures).

    Left out: what would end the run's own sessions (logout, password changes and resets,
    disabling accounts), the login limits, and the endless stream."""
    schema = schemathesis.from_uri(
        api.url + "/openapi.json",
        force_schema_version="30",
        data_generation_methods=[
            schemathesis.DataGenerationMethod.positive,
            schemathesis.DataGenerationMethod.negative,
        ],
    ).exclude(path_regex=r"^/(auth/(login|logout|password)|stream|accounts/.+)$")
    client = api.as_user(username)
    run = runner.from_schema(
        schema,
        checks=[
            not_a_server_error,
            status_code_conformance,
            response_schema_conformance,
            content_type_conformance,
        ],
        hypothesis_settings=hypothesis.settings(
            max_examples=examples, deadline=None, database=None, derandomize=True
        ),
        headers={"Authorization": client.headers["Authorization"]},
        request_timeout=30_000,
    )
    cases, failures = 0, []
    for event in run.execute():
        if isinstance(event, events.AfterExecution):
            checked = {c.example.id if c.example else id(c) for c in event.result.checks}
            cases += len(checked)
            for check in event.result.checks:
                if check.value.name != "success":
                    detail = getattr(check.context, "message", "") or ""
                    failures.append(
                        f"{event.result.method} {event.result.path}: {check.name}: "
                        f"{(check.message or '')[:300]} {detail[:300]}".strip()
                    )
        elif isinstance(event, events.InternalError):
            failures.append(f"schemathesis internal error: {event.message}")
    return cases, sorted(set(failures))


@pytest.mark.parametrize("username", ["admin", "w01", "sup-s1"] if SCALE > 1 else ["admin", "w01"])
def test_generated_requests_get_no_500_and_match_the_schema(api: Api, username: str) -> None:
    cases, failures = run_schemathesis(api, username, examples=4 * SCALE)
    TRIED["api requests (schemathesis)"] += cases
    assert cases > 30
    assert failures == []


# -- injection ---------------------------------------------------------------------------
SQL = [
    "' OR '1'='1",
    "g1' OR 1=1 --",
    "'; DROP TABLE tickets; --",
    "1 UNION SELECT username, password_hash FROM users --",
    "%' OR 'a'='a",
    '" OR ""="',
    "g1\x00",
    "*",
    "%",
    "_",
]
FILTERS = {
    "/tickets": ["grid", "category", "street", "worker", "source", "q", "status", "sort"],
    "/tickets/export": ["grid", "category", "q", "status"],
    "/incidents": ["status", "kind", "grid", "source"],
    "/workers": ["grid"],
    "/devices": ["kind"],
    "/open311/v2/requests.json": ["service_code", "status", "service_request_id"],
}


def test_sql_in_filters_changes_nothing_and_shows_nothing_more(api: Api) -> None:
    w01 = api.as_user("w01")
    mine = {t["id"] for t in w01.get("/tickets", params={"limit": 500}).json()["items"]}
    before = api.ticket_count()
    for path, params in FILTERS.items():
        for name in params:
            for value in SQL:
                TRIED["api injection"] += 1
                r = w01.get(path, params={name: value})
                assert r.status_code in (200, 400, 403, 404, 422), (path, name, value, r.text)
                if path == "/tickets" and r.status_code == 200:
                    assert {t["id"] for t in r.json()["items"]} <= mine, (name, value)
    assert api.ticket_count() == before


@pytest.mark.parametrize(
    "path",
    [
        "/tickets/1%20OR%201=1",
        "/tickets/1;DROP%20TABLE%20tickets",
        "/tickets/-1",
        "/tickets/99999999999999999999999",
        "/grids/..%2F..%2Fetc%2Fpasswd",
        "/grids/%2e%2e",
        "/devices/%00",
        "/workers/w01%27--",
        "/evidence/..%2F..%2F..%2Fetc%2Fpasswd",
        "/evidence/1.0",
        "/open311/v2/requests/..%2Fservices.json",
    ],
)
def test_path_tricks_are_404_or_422(api: Api, path: str) -> None:
    TRIED["api injection"] += 1
    r = api.as_user("admin").get(path)
    assert r.status_code in (404, 422), (path, r.status_code, r.text[:200])
    assert "root:" not in r.text


def test_crlf_and_huge_headers_do_not_split_or_crash(api: Api) -> None:
    admin = api.as_user("admin")
    r = admin.get("/tickets/export", params={"grid": "g1\r\nSet-Cookie: stolen=1"})
    TRIED["api injection"] += 3
    assert r.status_code in (200, 422)
    assert "set-cookie" not in {k.lower() for k in r.headers}
    assert "\r" not in r.headers.get("content-disposition", "")
    huge = admin.get("/health", headers={"X-Junk": "a" * 200_000})
    assert huge.status_code in (200, 400, 413, 431)
    assert admin.get("/health").status_code == 200


# -- uploads -----------------------------------------------------------------------------
def patched_jpeg_size(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(jpeg())
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR (with a correct CRC) claims ``width`` x ``height``, and tiny data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def other_format(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, fmt)
    return buf.getvalue()


BAD_IMAGES = {
    "text as jpeg": (b"hello, not an image", "image/jpeg"),
    "soi only": (b"\xff\xd8", "image/jpeg"),
    "truncated jpeg": (jpeg()[:40], "image/jpeg"),
    "jpeg with garbage after soi": (b"\xff\xd8" + bytes(range(256)) * 8, "image/jpeg"),
    "jpeg claiming 65000x65000": (patched_jpeg_size(65000, 65000), "image/jpeg"),
    "png claiming 100000x100000": (png_claiming(100_000, 100_000), "image/png"),
    "png claiming 0x0": (png_claiming(0, 0), "image/png"),
    "gif": (other_format("GIF"), "image/gif"),
    "bmp": (other_format("BMP"), "image/bmp"),
    "tiff": (other_format("TIFF"), "image/tiff"),
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        "image/svg+xml",
    ),
    "html as jpeg": (b"<html><script>alert(1)</script></html>", "image/jpeg"),
}


def test_bad_images_are_refused_with_a_reason_and_nothing_is_stored(api: Api) -> None:
    w01 = api.as_user("w01")
    tid = api.ticket_for_w01()
    assert w01.post(f"/tickets/{tid}/accept").status_code == 200
    with api.dispatcher.engine.connect() as conn:
        stored_before = conn.execute(select(func.count()).select_from(evidence)).scalar_one()
    for name, (data, ctype) in BAD_IMAGES.items():
        TRIED["api uploads"] += 1
        r = w01.post(f"/tickets/{tid}/resolve", files={"photo": ("p.jpg", data, ctype)})
        assert r.status_code == 422, (name, r.status_code, r.text[:300])
        assert r.json()["detail"][0]["loc"][-1] == "photo", name
        assert r.json()["detail"][0]["msg"].strip(), name
    with api.dispatcher.engine.connect() as conn:
        stored_after = conn.execute(select(func.count()).select_from(evidence)).scalar_one()
    assert stored_after == stored_before
    assert w01.get(f"/tickets/{tid}").json()["status"] == "accepted"


@pytest.mark.parametrize(
    "filename",
    [
        "../../../../../../tmp/gw-pwned.jpg",
        "..\\..\\..\\gw-pwned.jpg",
        "/etc/cron.d/gw-pwned.jpg",
        "evidence/../../gw-pwned.jpg",
        "a\x00b.jpg",
        "\u202egpj.exe",
        "x" * 5000 + ".jpg",
    ],
    ids=["dotdot", "backslashes", "absolute", "nested", "nul", "rtl", "long"],
)
def test_upload_names_never_choose_where_files_go(api: Api, filename: str) -> None:
    w01 = api.as_user("w01")
    tid = api.ticket_for_w01()
    assert w01.post(f"/tickets/{tid}/accept").status_code == 200
    TRIED["api uploads"] += 1
    photo = jpeg(64 + api.made, 48)
    r = w01.post(f"/tickets/{tid}/resolve", files={"photo": (filename, photo, "image/jpeg")})
    assert r.status_code in (200, 400, 422), r.text[:300]
    root = api.dispatcher.evidence.root
    with api.dispatcher.engine.connect() as conn:
        paths = list(
            conn.execute(select(evidence.c.path).where(evidence.c.ticket_id == tid)).scalars()
        )
    for rel in paths:
        stored = (root / rel).resolve()
        assert stored.is_relative_to(root) and stored.is_file(), rel
        assert "pwned" not in rel and ".." not in rel
    assert not Path("/tmp/gw-pwned.jpg").exists()
    assert not Path("/etc/cron.d/gw-pwned.jpg").exists()


# -- over-sized bodies -------------------------------------------------------------------
def streamed(size: int, head: bytes, tail: bytes, sent: list[int]) -> Iterator[bytes]:
    yield head
    chunk = b"a" * (1 << 20)
    for _ in range(size >> 20):
        sent[0] += len(chunk)
        yield chunk
    yield tail


@pytest.mark.parametrize(
    ("framing", "megabytes"),
    [("chunked", 48), ("content-length", 48), ("content-length", 4)],
    ids=["chunked", "declared-over-every-limit", "declared-over-the-login-limit"],
)
def test_oversized_anonymous_body_is_refused_before_it_is_read(
    api: Api, framing: str, megabytes: int
) -> None:
    """JSON to /auth/login (limit 1 MB), streamed: 413 with a reason once the limit is passed
    (chunked), or before any of it is read (a Content-Length over it)."""
    TRIED["api over-sized bodies"] += 1
    size, head, tail = megabytes << 20, b'{"username": "w01", "password": "', b'"}'
    sent = [0]
    headers = {"Content-Type": "application/json"}
    if framing == "content-length":
        headers["Content-Length"] = str(len(head) + size + len(tail))
    r = httpx.post(
        api.url + "/auth/login",
        content=streamed(size, head, tail, sent),
        timeout=60,
        headers=headers,
    )
    assert ("content-length" in r.request.headers) == (framing == "content-length")
    assert r.status_code == 413
    settings = api.dispatcher.settings
    assert r.json()["detail"] == (
        f"request body too large: no request may be over {settings.max_upload_bytes} bytes"
        if size > settings.max_upload_bytes and framing == "content-length"
        else f"request body too large: the limit for this request is {settings.max_body_bytes} bytes"
    )
    if megabytes == 48:
        # what left the client: at most the limit and what the sockets' buffers took
        assert sent[0] < size // 2, sent[0]


def multipart_photo(size: int, sent: list[int]) -> Iterator[bytes]:
    """A multipart body with a ``size``-byte "photo", streamed (no Content-Length)."""
    yield (
        b"--gw-boundary\r\n"
        b'Content-Disposition: form-data; name="photo"; filename="big.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0"
    )
    yield from streamed(size, b"", b"\r\n--gw-boundary--\r\n", sent)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversized_upload_is_413_and_the_ticket_unchanged(api: Api, framing: str) -> None:
    w01 = api.as_user("w01")
    tid = api.ticket_for_w01()
    assert w01.post(f"/tickets/{tid}/accept").status_code == 200
    TRIED["api over-sized bodies"] += 1
    settings = api.dispatcher.settings
    if framing == "content-length":
        big = b"\xff\xd8\xff\xe0" + b"\0" * (2 * MAX_IMAGE_BYTES)
        r = w01.post(f"/tickets/{tid}/resolve", files={"photo": ("big.jpg", big, "image/jpeg")})
        limit = f"no request may be over {settings.max_upload_bytes} bytes"
    else:
        r = w01.post(
            f"/tickets/{tid}/resolve",
            content=multipart_photo(2 * MAX_IMAGE_BYTES, [0]),
            headers={"Content-Type": "multipart/form-data; boundary=gw-boundary"},
        )
        assert "content-length" not in r.request.headers
        limit = f"the limit for this request is {settings.max_upload_bytes} bytes"
    assert r.status_code == 413
    assert r.json()["detail"] == f"request body too large: {limit}"
    assert w01.get(f"/tickets/{tid}").json()["status"] == "accepted"


def test_a_photo_just_over_its_limit_is_refused_by_name(api: Api) -> None:
    """The upload route's body limit is above the photo limit: the photo's own check answers."""
    w01 = api.as_user("w01")
    tid = api.ticket_for_w01()
    assert w01.post(f"/tickets/{tid}/accept").status_code == 200
    TRIED["api over-sized bodies"] += 1
    photo = b"\xff\xd8\xff\xe0" + b"\0" * MAX_IMAGE_BYTES
    r = w01.post(f"/tickets/{tid}/resolve", files={"photo": ("big.jpg", photo, "image/jpeg")})
    assert r.status_code == 413
    assert r.json()["detail"] == f"photo larger than {MAX_IMAGE_BYTES} bytes"
    assert w01.get(f"/tickets/{tid}").json()["status"] == "accepted"


# -- brute force -------------------------------------------------------------------------
def from_address(api: Api, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z on Linux loopback)."""
    return httpx.Client(
        base_url=api.url, timeout=15, transport=httpx.HTTPTransport(local_address=address)
    )


def test_guessing_one_password_is_locked_and_the_lock_is_no_oracle(api: Api) -> None:
    attacker = from_address(api, "127.0.10.1")
    codes = [
        attacker.post("/auth/login", json={"username": "w02", "password": f"guess-{i}"}).status_code
        for i in range(12)
    ]
    TRIED["login attempts"] += len(codes)
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    right = attacker.post(
        "/auth/login", json={"username": "w02", "password": api.secrets["GW_PW_W02"]}
    )
    assert right.status_code == 429 and int(right.headers["Retry-After"]) >= 1
    assert (
        from_address(api, "127.0.10.2")
        .post("/auth/login", json={"username": "w02", "password": api.secrets["GW_PW_W02"]})
        .status_code
        == 200
    )


def test_spraying_many_accounts_from_one_address_is_locked(api: Api) -> None:
    attacker = from_address(api, "127.0.11.1")
    codes = [
        attacker.post(
            "/auth/login", json={"username": f"user{i}", "password": "Spring2026!"}
        ).status_code
        for i in range(14)
    ]
    TRIED["login attempts"] += len(codes)
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}


def test_forwarded_for_from_an_untrusted_peer_does_not_reset_the_lock(api: Api) -> None:
    attacker = from_address(api, "127.0.12.1")
    codes = [
        attacker.post(
            "/auth/login",
            json={"username": "w03", "password": f"guess-{i}"},
            headers={"X-Forwarded-For": f"10.9.{i}.{i}", "X-Real-IP": f"10.8.{i}.{i}"},
        ).status_code
        for i in range(8)
    ]
    TRIED["login attempts"] += len(codes)
    assert codes[5:] == [429] * 3


def test_guesses_spread_over_many_addresses_are_limited_per_account(api: Api) -> None:
    """Wrong passwords for w04 from 5 addresses, 4 from each (never the 5 that lock a pair):
    the 10th locks the account from every new address, briefly; w04's own address, where w04
    logged in before, still gets in."""
    right = {"username": "w04", "password": api.secrets["GW_PW_W04"]}
    home = from_address(api, "127.0.13.100")
    assert home.post("/auth/login", json=right).status_code == 200
    codes: list[int] = []
    for host in range(1, 6):
        attacker = from_address(api, f"127.0.13.{host}")
        for i in range(4):
            codes.append(
                attacker.post(
                    "/auth/login", json={"username": "w04", "password": f"g{host}-{i}"}
                ).status_code
            )
    TRIED["login attempts"] += len(codes)
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}, codes
    elsewhere = from_address(api, "127.0.13.50").post("/auth/login", json=right)
    assert elsewhere.status_code == 429
    assert 1 <= int(elsewhere.headers["Retry-After"]) <= 60
    assert home.post("/auth/login", json=right).status_code == 200
