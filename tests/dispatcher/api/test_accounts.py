"""The admin's account routes over real HTTP: only the admin may list accounts, reset a password,
disable and enable one; a reset or a disable ends the account's sessions at once; and a worker
or supervisor who leaves the site file is disabled when the dispatcher seeds its accounts."""

from __future__ import annotations

import logging

import pytest

from dispatcher.accounts import seed_users
from tests.dispatcher.api.conftest import ADMIN_PASSWORD, Env

NEW_PASSWORD = "a-new-password-1"


def login_status(env: Env, username: str, password: str) -> int:
    r = env.anonymous().post("/auth/login", json={"username": username, "password": password})
    return r.status_code


def test_only_the_admin_manages_accounts(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    calls = [
        ("GET", "/accounts", None),
        ("POST", "/accounts/w02/password", {"new_password": NEW_PASSWORD}),
        ("POST", "/accounts/w02/disable", None),
        ("POST", "/accounts/w02/enable", None),
    ]
    anon = env.anonymous()
    with caplog.at_level(logging.WARNING):
        for username in ("w01", "sup-s1"):
            client = env.client(username)
            for method, path, body in calls:
                assert client.request(method, path, json=body).status_code == 403, (username, path)
        for method, path, body in calls:
            assert anon.request(method, path, json=body).status_code == 401, path
    assert "denied: worker:w01 may not POST /accounts/w02/disable" in caplog.text
    assert "denied: supervisor:sup-s1 may not POST /accounts/w02/password" in caplog.text
    # nothing changed: w02 still logs in with the site's password
    assert login_status(env, "w02", env.password("w02")) == 200
    listed = {a["username"]: a for a in env.client("admin").get("/accounts").json()}
    assert set(listed) >= {"admin", "w01", "w02", "sup-s1", "sup-s2"}
    w02 = listed["w02"]
    assert (w02["role"], w02["disabled"], w02["has_password"], w02["in_site"]) == (
        "worker",
        False,
        True,
        True,
    )
    assert not any("hash" in key for key in w02)


def test_a_password_reset_ends_the_old_password_and_tokens(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    w03 = env.client("w03")
    assert w03.get("/auth/me").status_code == 200
    admin = env.client("admin")
    with caplog.at_level(logging.INFO):
        r = admin.post("/accounts/w03/password", json={"new_password": NEW_PASSWORD})
    assert r.status_code == 200 and r.json()["disabled"] is False
    assert "admin:admin reset the password of w03; its tokens are revoked" in caplog.text
    assert w03.get("/auth/me").status_code == 401
    assert login_status(env, "w03", env.password("w03")) == 401
    assert login_status(env, "w03", NEW_PASSWORD) == 200


def test_a_disabled_account_cannot_log_in_until_enabled(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    sup = env.client("sup-s2")
    assert sup.get("/tickets").status_code == 200
    admin = env.client("admin")
    with caplog.at_level(logging.WARNING):
        r = admin.post("/accounts/sup-s2/disable")
        assert r.status_code == 200 and r.json()["disabled"] is True
        assert sup.get("/tickets").status_code == 401
        assert login_status(env, "sup-s2", env.password("sup-s2")) == 401
    assert "admin:admin disabled account sup-s2; its tokens are revoked" in caplog.text
    assert "denied: login for disabled account 'sup-s2'" in caplog.text
    # a new password does not enable it
    admin.post("/accounts/sup-s2/password", json={"new_password": NEW_PASSWORD})
    assert login_status(env, "sup-s2", NEW_PASSWORD) == 401
    again = admin.post("/accounts/sup-s2/disable")
    assert again.status_code == 200 and again.json()["disabled"] is True
    enabled = admin.post("/accounts/sup-s2/enable")
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert login_status(env, "sup-s2", NEW_PASSWORD) == 200


def test_account_route_refusals(env: Env) -> None:
    admin = env.client("admin")
    assert admin.post("/accounts/admin/disable").status_code == 409
    assert admin.post("/accounts/nobody/disable").status_code == 404
    assert admin.post("/accounts/nobody/enable").status_code == 404
    reset = "/accounts/w04/password"
    assert (
        admin.post("/accounts/nobody/password", json={"new_password": NEW_PASSWORD}).status_code
        == 404
    )
    same = admin.post(reset, json={"new_password": "W04" + " " * 8})
    assert same.status_code == 422
    assert admin.post(reset, json={"new_password": "short"}).status_code == 422
    assert admin.get("/auth/me").status_code == 200
    assert login_status(env, "w04", env.password("w04")) == 200


def test_seeding_disables_whoever_left_the_site_file(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Seeding is what the dispatcher does on start; w06 has left the site file."""
    w06 = env.client("w06")
    d = env.dispatcher
    smaller = env.site.model_copy(
        update={"workers": tuple(w for w in env.site.workers if w.id != "w06")}
    )
    with caplog.at_level(logging.WARNING), d.engine.begin() as conn:
        seed_users(conn, smaller, d.clock.now(), ADMIN_PASSWORD)
    assert "worker w06 is no longer in the site file: account disabled" in caplog.text
    assert w06.get("/auth/me").status_code == 401
    assert login_status(env, "w06", env.password("w06")) == 401
    listed = {a["username"]: a for a in env.client("admin").get("/accounts").json()}
    assert listed["w06"]["disabled"] is True and listed["w05"]["disabled"] is False
    # back in the site file, it stays disabled until the admin enables it
    caplog.clear()
    with caplog.at_level(logging.WARNING), d.engine.begin() as conn:
        seed_users(conn, env.site, d.clock.now(), ADMIN_PASSWORD)
    assert "account w06 is in the site file but disabled" in caplog.text
    assert login_status(env, "w06", env.password("w06")) == 401
    assert env.client("admin").post("/accounts/w06/enable").status_code == 200
    assert login_status(env, "w06", env.password("w06")) == 200
