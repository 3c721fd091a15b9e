"""Web UI sessions at the HTTP level: the cookie's attributes (Secure under
TLS), refusals of cross-site requests, a session that outlives a restart,
a revoked token's or a signed-out session refused at once, expiry, and no
sign-in at all without an auth file.

Cookies are handled by hand (the Set-Cookie header read, the Cookie header
sent), so that every attribute is seen as the collector wrote it.
"""

from __future__ import annotations

import signal
import stat
import time

import pytest
import requests

from conftest import Collector, unique
from test_auth import Setup, bearer, new_token, searchable

UI = {"X-Periscope-Request": "1"}


@pytest.fixture
def setup(tmp_path) -> Setup:  # noqa: ANN001
    s = Setup(tmp_path)
    # A token of two tenants that may read (and write, which a session never may).
    s.team, s.blocks["team"] = new_token("team", ["shop", "lab"], "read,write")
    s.write_auth()
    return s


def start(collectors, s: Setup, tls: bool = True, extra: list[str] | None = None, data_dir="default") -> Collector:  # noqa: ANN001
    args = s.args() if tls else ["--auth-file", str(s.auth)]
    return collectors(data_dir=data_dir, args=args + (extra or []), tls_ca=str(s.ca_pem) if tls else None).start()


def attributes(set_cookie: str) -> tuple[str, dict[str, str]]:
    """`name=value` and the attributes of one Set-Cookie value."""
    first, *rest = [p.strip() for p in set_cookie.split(";")]
    attrs = {}
    for a in rest:
        k, _, v = a.partition("=")
        attrs[k.lower()] = v
    return first, attrs


def sign_in(c: Collector, token: str, tenant: str | None = None, headers: dict[str, str] | None = None) -> requests.Response:
    body = {"token": token} if tenant is None else {"token": token, "tenant": tenant}
    return c.session.post(c.http_url("/api/v1/session"), json=body, headers=UI if headers is None else headers, timeout=30)


def cookie_of(r: requests.Response) -> str:
    assert r.status_code == 200, r.text
    return attributes(r.headers["Set-Cookie"])[0]


def with_cookie(cookie: str, **extra: str) -> dict[str, str]:
    return {"Cookie": cookie, **extra}


def get(c: Collector, path: str, cookie: str, **params) -> requests.Response:  # noqa: ANN003
    return c.session.get(c.http_url(path), params=params, headers=with_cookie(cookie), timeout=30)


def test_the_cookie_is_http_only_strict_and_secure_under_tls(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    r = sign_in(c, setup.team)
    assert r.status_code == 200, r.text
    j = r.json()
    assert (j["name"], j["tenant"], j["tenants"], j["scopes"]) == ("team", "shop", ["shop", "lab"], ["read"]), j
    first, attrs = attributes(r.headers["Set-Cookie"])
    name, value = first.split("=", 1)
    assert name == "periscope_session" and value
    assert setup.team not in value, "the cookie never holds the token"
    assert "httponly" in attrs and attrs["samesite"] == "Strict" and attrs["path"] == "/"
    assert attrs["max-age"] == str(12 * 3600), attrs
    assert "secure" in attrs, attrs
    assert "no-store" in r.headers.get("Cache-Control", "")
    key = c.data_dir / "ui-session.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    # Over plain HTTP the cookie is not Secure (the browser would drop it).
    plain = start(collectors, setup, tls=False, data_dir=c.data_dir.parent / "plain")
    _, attrs = attributes(sign_in(plain, setup.team).headers["Set-Cookie"])
    assert "secure" not in attrs and "httponly" in attrs


def test_a_session_reads_its_tenant_and_nothing_more(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    shop_body, lab_body = unique("sessshop"), unique("sesslab")
    from otlp_util import log_record, logs_request

    for tenant, body in (("shop", shop_body), ("lab", lab_body)):
        r = c.session.post(
            c.otlp_url("/v1/logs"),
            data=logs_request([log_record(body)]).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": tenant, **bearer(setup.team)},
            timeout=30,
        )
        assert r.status_code == 200, r.text
    assert searchable(c, setup.team, shop_body, tenant="shop") and searchable(c, setup.team, lab_body, tenant="lab")
    cookie = cookie_of(sign_in(c, setup.team))
    hits = get(c, "/api/v1/logs/search", cookie, q=shop_body).json()["hits"]
    assert [h["body"] for h in hits] == [shop_body]
    assert get(c, "/api/v1/logs/search", cookie, q=lab_body).json()["hits"] == []
    # Switching tenant: a new cookie for the other tenant.
    r = c.session.put(c.http_url("/api/v1/session"), json={"tenant": "lab"}, headers=with_cookie(cookie, **UI), timeout=30)
    assert r.status_code == 200 and r.json()["tenant"] == "lab", r.text
    lab = cookie_of(r)
    assert [h["body"] for h in get(c, "/api/v1/logs/search", lab, q=lab_body).json()["hits"]] == [lab_body]
    r = c.session.put(c.http_url("/api/v1/session"), json={"tenant": "elsewhere"}, headers=with_cookie(lab, **UI), timeout=30)
    assert r.status_code == 403 and "does not reach tenant" in r.json()["error"], r.text
    # Read only, whatever the token may do: no remote write, no /metrics.
    r = c.session.post(c.http_url("/api/v1/write"), data=b"", headers=with_cookie(lab, **UI, **{"Content-Type": "application/x-protobuf"}), timeout=30)
    assert r.status_code == 403 and "scope" in r.json()["error"], r.text
    ops = cookie_of(sign_in(c, setup.ops, tenant="shop"))
    assert get(c, "/metrics", ops).status_code == 403
    assert get(c, "/api/v1/session", ops).json()["tenants"] == "*"
    # A token of every tenant names one; a write-only token cannot sign in.
    r = sign_in(c, setup.ops)
    assert r.status_code == 403 and "enter the tenant" in r.json()["error"], r.text
    writer, setup.blocks["writer"] = new_token("writer", ["shop"], "write")
    setup.write_auth()
    c.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (r := sign_in(c, writer)).status_code == 401 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert r.status_code == 403 and "read" in r.json()["error"], r.text


def test_cross_site_requests_are_refused(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    origin = f"https://{c.listening['http']}"
    # Sign-in without the UI's header (a form of another site), or from
    # another origin.
    r = sign_in(c, setup.team, headers={})
    assert r.status_code == 403 and "X-Periscope-Request" in r.json()["error"], r.text
    r = sign_in(c, setup.team, headers={**UI, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "Origin" in r.json()["error"], r.text
    r = sign_in(c, setup.team, headers={**UI, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403, r.text
    cookie = cookie_of(sign_in(c, setup.team, headers={**UI, "Origin": origin, "Sec-Fetch-Site": "same-origin"}))
    url = c.http_url("/api/v1/session")
    for method, body in (("PUT", {"tenant": "lab"}), ("DELETE", None)):
        r = c.session.request(method, url, json=body, headers=with_cookie(cookie), timeout=30)
        assert r.status_code == 403, (method, r.text)
        r = c.session.request(method, url, json=body, headers=with_cookie(cookie, **UI, Origin="http://127.0.0.1:1"), timeout=30)
        assert r.status_code == 403, (method, r.text)
    # Any other state-changing request made with the cookie: a PromQL
    # query sent as a form post needs the header too; reads do not.
    q = c.http_url("/prometheus/api/v1/query")
    assert c.session.post(q, data={"query": "1"}, headers=with_cookie(cookie), timeout=30).status_code == 403
    assert c.session.post(q, data={"query": "1"}, headers=with_cookie(cookie, **UI, Origin=origin), timeout=30).status_code == 200
    r = c.session.get(c.http_url("/api/v1/services"), headers=with_cookie(cookie, Origin="https://evil.example"), timeout=30)
    assert r.status_code == 200
    # With a token the cookie is not read, and nothing is asked of the request.
    assert c.session.post(q, data={"query": "1"}, headers={**with_cookie(cookie), **bearer(setup.shop)}, timeout=30).status_code == 200
    assert get(c, "/api/v1/session", cookie).status_code == 200, "the session still works"


def test_a_session_outlives_a_restart_and_sign_out_ends_it(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    kept = cookie_of(sign_in(c, setup.team))
    ended = cookie_of(sign_in(c, setup.team))
    # The copy of a switched session belongs to it as well.
    r = c.session.put(c.http_url("/api/v1/session"), json={"tenant": "lab"}, headers=with_cookie(ended, **UI), timeout=30)
    ended_lab = cookie_of(r)
    r = c.session.delete(c.http_url("/api/v1/session"), headers=with_cookie(ended_lab, **UI), timeout=30)
    assert r.status_code == 204 and "Max-Age=0" in r.headers["Set-Cookie"], r.headers
    for old in (ended, ended_lab):
        assert get(c, "/api/v1/session", old).status_code == 401
        assert get(c, "/api/v1/services", old).status_code == 401
    c.stop_ok()
    c2 = start(collectors, setup)
    r = get(c2, "/api/v1/session", kept)
    assert r.status_code == 200 and r.json()["tenant"] == "shop", r.text
    assert get(c2, "/api/v1/services", kept).status_code == 200
    assert get(c2, "/api/v1/session", ended).status_code == 401, "still signed out after a restart"


def test_a_revoked_tokens_sessions_stop_at_once(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup)
    cookie = cookie_of(sign_in(c, setup.team))
    other = cookie_of(sign_in(c, setup.shop))
    assert get(c, "/api/v1/services", cookie).status_code == 200
    del setup.blocks["team"]
    setup.write_auth()
    c.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while get(c, "/api/v1/services", cookie).status_code == 200:
        assert time.monotonic() < deadline, "the revoked token's session still works"
        time.sleep(0.1)
    r = get(c, "/api/v1/logs/search", cookie, q="x")
    assert r.status_code == 401, r.text
    r = get(c, "/api/v1/session", cookie)
    assert r.status_code == 401 and "Max-Age=0" in r.headers.get("Set-Cookie", ""), r.headers
    assert get(c, "/api/v1/services", other).status_code == 200, "other tokens' sessions go on"


def test_an_expired_session_is_refused(collectors, setup: Setup) -> None:  # noqa: ANN001
    c = start(collectors, setup, extra=["--ui-session-ttl", "2s"])
    r = sign_in(c, setup.team)
    assert attributes(r.headers["Set-Cookie"])[1]["max-age"] == "2"
    cookie = cookie_of(r)
    assert get(c, "/api/v1/services", cookie).status_code == 200
    time.sleep(3.2)
    assert get(c, "/api/v1/services", cookie).status_code == 401
    assert get(c, "/api/v1/session", cookie).status_code == 401


def test_without_an_auth_file_there_is_no_sign_in(collectors) -> None:  # noqa: ANN001
    c = collectors().start()
    assert c.get("/api/v1/auth").json() == {"enabled": False}
    r = c.session.post(c.http_url("/api/v1/session"), json={"token": "x"}, headers=UI, timeout=30)
    assert r.status_code == 404
    # As before: no cookie, tenants from the header, POSTs without the UI's header.
    assert c.get("/api/v1/logs/search", params={"q": "x"}, tenant="anyone").status_code == 200
    r = c.session.post(c.http_url("/prometheus/api/v1/query"), data={"query": "1"}, headers={"Cookie": "periscope_session=stale"}, timeout=30)
    assert r.status_code == 200
    assert not (c.data_dir / "ui-session.key").exists()
