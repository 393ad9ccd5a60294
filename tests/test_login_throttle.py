"""Issue #8, finding 2: failed logins are throttled per account across every address, and the owner's
own browser (which signed in before) is never locked out by someone else's guessing."""

from __future__ import annotations

from tests.conftest import TEST_PASSWORD, csrf_token, make_user
from webapp import ratelimit
from webapp.auth import devices


def _login(client, password: str, address: str):
    token = csrf_token(client, "/login")
    return client.post(
        "/login",
        data={"username": "alice", "password": password, "csrf_token": token},
        environ_base={"REMOTE_ADDR": address},
    )


def test_guessing_from_many_addresses_hits_the_account_limit_but_not_the_owner(app):
    make_user(app, "alice")
    app.extensions[ratelimit.EXTENSION_KEY] = ratelimit.RateLimits(
        {**app.config, "PRISM_RATELIMIT_LOGIN_ACCOUNT": "3 per hour"}
    )
    owner = app.test_client()
    assert _login(owner, TEST_PASSWORD, "192.0.2.1").status_code == 302  # the owner's browser, before
    assert owner.get_cookie(devices.COOKIE) is not None

    # Three guesses, each from a new address (the per-address limit never sees more than one).
    attacker = app.test_client()
    assert [_login(attacker, f"guess {n}", f"203.0.113.{n}").status_code for n in range(3)] == [200, 200, 200]
    refused = _login(attacker, TEST_PASSWORD, "203.0.113.99")  # even the right password, from a stranger
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0

    assert _login(owner, TEST_PASSWORD, "198.51.100.7").status_code == 302  # the owner, from a new network


def test_a_forged_device_cookie_does_not_pass(app):
    make_user(app, "alice")
    app.extensions[ratelimit.EXTENSION_KEY] = ratelimit.RateLimits(
        {**app.config, "PRISM_RATELIMIT_LOGIN_ACCOUNT": "1 per hour"}
    )
    attacker = app.test_client()
    assert _login(attacker, "wrong", "203.0.113.1").status_code == 200
    attacker.set_cookie(devices.COOKIE, '["alice"]')  # unsigned
    assert _login(attacker, TEST_PASSWORD, "203.0.113.2").status_code == 429
