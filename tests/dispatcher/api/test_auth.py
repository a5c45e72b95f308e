"""Accounts over real HTTP: login, device credentials refused, token expiry and revocation,
password change, the login rate limits (per user and address, per account), and denials in
the log."""

from __future__ import annotations

import logging

import httpx
import jwt
import pytest

from tests.dispatcher.api.conftest import Env


def test_login_returns_a_signed_expiring_token(env: Env) -> None:
    r = env.anonymous().post(
        "/auth/login", json={"username": "w01", "password": env.password("w01")}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["role"] == "worker" and body["display_name"] == "张伟"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "w01" and claims["exp"] > claims["iat"]
    me = env.client("w01").get("/auth/me").json()
    assert me == {
        "username": "w01",
        "role": "worker",
        "display_name": "张伟",
        "grid_id": "g1",
        "streets": [],
        "grids": [],
    }
    assert env.client("sup-s1").get("/auth/me").json()["grids"] == ["g1", "g2"]


def test_wrong_password_and_unknown_user_get_the_same_answer(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    anon = env.anonymous()
    with caplog.at_level(logging.WARNING):
        wrong = anon.post("/auth/login", json={"username": "w02", "password": "nope"})
        nobody = anon.post("/auth/login", json={"username": "nobody", "password": "nope"})
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json() == {"detail": "wrong username or password"}
    assert "denied: failed login for 'w02'" in caplog.text
    assert "denied: failed login for 'nobody'" in caplog.text


@pytest.mark.parametrize("device", ["edge-01", "node-02", "dispatcher"])
def test_device_credentials_are_refused(
    env: Env, device: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Devices talk MQTT only: their real broker passwords do not open the HTTP API."""
    if device == "dispatcher":
        password = env.site.broker.dispatcher_password.get_secret_value()
    else:
        dev = env.site.device(device)
        assert dev is not None
        password = dev.password.get_secret_value()
    with caplog.at_level(logging.WARNING):
        r = env.anonymous().post(
            "/auth/login",
            json={"username": device, "password": password},
            headers={"X-Forwarded-For": "10.9.9.9"},
        )
    assert r.status_code == 401
    assert f"denied: device account {device!r}" in caplog.text
    r = env.anonymous().get("/tickets", headers={"Authorization": f"Basic {device}:{password}"})
    assert r.status_code == 401


def test_token_expires(env: Env) -> None:
    worker = env.client("w03")
    assert worker.get("/tickets").status_code == 200
    ttl = env.dispatcher.settings.token_ttl_minutes
    env.clock.advance(minutes=ttl + 1)
    try:
        r = worker.get("/tickets")
        assert r.status_code == 401
        assert r.json()["detail"] == "token expired"
        assert r.headers["WWW-Authenticate"] == "Bearer"
    finally:
        env.clock.advance(minutes=-(ttl + 1))
    assert worker.get("/tickets").status_code == 200


def test_forged_tampered_and_url_tokens_are_refused(env: Env) -> None:
    good = env.client("w04").headers["Authorization"].removeprefix("Bearer ")
    forged = jwt.encode(
        {"sub": "admin", "role": "admin", "ver": 0, "exp": 4102444800},
        "not-the-secret-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    unsigned = jwt.encode(
        {"sub": "admin", "role": "admin", "ver": 0, "exp": 4102444800}, None, algorithm="none"
    )
    head, payload, sig = good.split(".")
    tampered = f"{head}.{payload[:-2]}AA.{sig}"
    anon = env.anonymous()
    for token in (forged, unsigned, tampered, "garbage"):
        r = anon.get("/tickets", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
        assert r.json()["detail"].startswith("invalid token")
    assert anon.get("/tickets", params={"access_token": good}).status_code == 401


def test_logout_revokes_every_token_of_the_account(env: Env) -> None:
    phone, tablet = env.client("w05"), env.client("w05")
    assert phone.post("/auth/logout").status_code == 204
    for client in (phone, tablet):
        r = client.get("/tickets")
        assert r.status_code == 401 and r.json()["detail"] == "token revoked"
    assert env.client("w05").get("/tickets").status_code == 200


def test_password_change(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    user = "sup-s2"
    old = env.password(user)
    client = env.client(user)
    other_session = env.client(user)
    with caplog.at_level(logging.WARNING):
        r = client.post(
            "/auth/password",
            json={"current_password": "wrong-one", "new_password": "a-much-better-one"},
        )
    assert r.status_code == 403 and "denied: supervisor:sup-s2 gave a wrong current" in caplog.text
    r = client.post("/auth/password", json={"current_password": old, "new_password": "short"})
    assert r.status_code == 422 and "new_password" in r.text
    r = client.post("/auth/password", json={"current_password": old, "new_password": "SUP-S2"})
    assert r.status_code == 422
    r = client.post(
        "/auth/password", json={"current_password": old, "new_password": "a-much-better-one"}
    )
    assert r.status_code == 200
    fresh = r.json()["access_token"]
    assert other_session.get("/tickets").status_code == 401
    anon = env.anonymous()
    assert anon.get("/auth/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert anon.post("/auth/login", json={"username": user, "password": old}).status_code == 401
    back = anon.post("/auth/login", json={"username": user, "password": "a-much-better-one"})
    assert back.status_code == 200
    r = anon.post(
        "/auth/password",
        json={"current_password": "a-much-better-one", "new_password": old},
        headers={"Authorization": f"Bearer {back.json()['access_token']}"},
    )
    assert r.status_code == 200


def test_login_is_rate_limited_per_user_and_address(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    anon = env.anonymous()
    user = "w06"
    for _ in range(5):
        assert anon.post("/auth/login", json={"username": user, "password": "x"}).status_code == 401
    with caplog.at_level(logging.WARNING):
        locked = anon.post("/auth/login", json={"username": user, "password": env.password(user)})
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 300
    assert "denied: login for 'w06'" in caplog.text and "is locked" in caplog.text
    # another account from the same address is not locked by w06's failures
    assert (
        anon.post(
            "/auth/login", json={"username": "w04", "password": env.password("w04")}
        ).status_code
        == 200
    )
    env.clock.advance(seconds=301)
    try:
        ok = anon.post("/auth/login", json={"username": user, "password": env.password(user)})
        assert ok.status_code == 200
    finally:
        env.clock.advance(seconds=-301)


def test_login_is_limited_per_account_from_any_address_for_a_short_time(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """20 wrong passwords in 5 minutes from anywhere lock the account for a minute, except from
    where it already logged in; while 20 stay in the window, each new one locks it again."""
    user = "w03"
    right = {"username": user, "password": env.password(user)}
    home = env.client(user)  # logs in from 127.0.0.1, which becomes a known address
    hosts = iter(range(1, 100))

    def new_address() -> httpx.Client:
        return env.anonymous(f"127.0.20.{next(hosts)}")

    for _ in range(5):
        guesser = new_address()
        for i in range(4):
            r = guesser.post("/auth/login", json={"username": user, "password": f"guess-{i}"})
            assert r.status_code == 401
    with caplog.at_level(logging.WARNING):
        locked = new_address().post("/auth/login", json=right)
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 60
    assert f"denied: login for {user!r}" in caplog.text
    assert "(too many failed logins for this account)" in caplog.text
    assert env.anonymous().post("/auth/login", json=right).status_code == 200
    assert home.get("/auth/me").status_code == 200
    try:
        env.clock.advance(seconds=61)
        assert new_address().post("/auth/login", json=right).status_code == 200
        wrong = {"username": user, "password": "one-more"}
        assert new_address().post("/auth/login", json=wrong).status_code == 401
        assert new_address().post("/auth/login", json=right).status_code == 429
        env.clock.advance(seconds=240)
        assert new_address().post("/auth/login", json=right).status_code == 200
    finally:
        env.clock.advance(seconds=-301)
