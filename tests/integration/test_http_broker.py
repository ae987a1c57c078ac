"""hub.http's broker against real HTTP(S) servers on loopback addresses (HUB_HTTP_ALLOW_PRIVATE on).

Names resolve through a test resolver (``FakeDNS``) so a name can point anywhere without a DNS server, and
every connection the tests make is checked to go to a loopback address (``loopback_only``): a rule broken
on purpose makes the test fail, never a connection to another host.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import urllib3.util.connection

from dispatcher.httpcall import metrics as http_metrics
from dispatcher.httpcall.broker import HttpBroker, HttpSettings
from dispatcher.httpcall.run import RunHttp
from hubpy.hub._addresses import IPAddress
from hubpy.hub._hosts import HostPatterns
from hubpy.hub._secrets import MASK
from tests.http_servers import LocalServer, make_ca
from tests.waiting import wait_until

TOKEN = "tok/en+9f3a=x-5d1c"  # changes under percent-encoding, so every echoed form must be masked
KiB = 1024


class FakeDNS:
    """name -> addresses; a list of answers is used in turn (the last one repeats): DNS that changes."""

    def __init__(self, names: dict[str, list[list[str]] | list[str]] | None = None) -> None:
        self.names = names or {}
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int, timeout_s: float) -> list[IPAddress]:
        self.lookups.append(host)
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        answers = self.names.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        turn = min(self.lookups.count(host), len(answers)) - 1
        answer = answers[turn] if answers and isinstance(answers[0], list) else answers
        return [ipaddress.ip_address(a) for a in answer]


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every address connected to; a connection to anything but loopback (or by name) fails the test."""
    real = urllib3.util.connection.create_connection
    seen: list[str] = []
    wrong: list[str] = []

    def loopback_only(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host = address[0]
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False  # a name: the connection was not pinned to a checked address
        if not ok:
            wrong.append(host)
            raise ConnectionRefusedError(f"test guard: refused to connect to {host}")
        seen.append(host)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", loopback_only)
    yield seen
    assert not wrong, f"the broker tried to connect to {wrong}"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    s = LocalServer("127.0.0.1")
    yield s
    s.close()


@pytest.fixture
def other() -> Iterator[LocalServer]:
    s = LocalServer("127.0.0.2")
    yield s
    s.close()


@pytest.fixture
def make() -> Iterator[Callable[..., RunHttp]]:
    brokers: list[HttpBroker] = []

    def factory(*, hosts: str = "*", agent: str | None = "*", private: bool = True, secrets: dict[str, str] | None = None,
                dns: FakeDNS | None = None, deadline_s: float = 20.0, verify: bool | str = True,
                also_mask: tuple[str, ...] = (), **limits: Any) -> RunHttp:
        settings = HttpSettings(http_allow_hosts=HostPatterns.parse(hosts, "HUB_HTTP_ALLOW_HOSTS"),
                                http_allow_private=private, **{f"http_{k}": v for k, v in limits.items()})
        broker = HttpBroker(settings, resolver=dns or FakeDNS(), verify=verify)
        brokers.append(broker)
        env = {} if agent is None else {"HUB_HTTP_ALLOW": agent}
        return RunHttp(broker, env_vars=env, secrets=secrets or {}, deadline=time.monotonic() + deadline_s,
                       also_mask=also_mask)

    yield factory
    for b in brokers:
        b.close()


def ok(run: RunHttp, **params: Any) -> dict[str, Any]:
    outcome = run.call({"method": "GET", **params})
    assert outcome.ok, (outcome.error, outcome.log_line)
    assert outcome.result is not None
    return outcome.result


def fails(run: RunHttp, kind: str, **params: Any) -> str:
    outcome = run.call({"method": "GET", **params})
    assert not outcome.ok and outcome.error is not None, outcome.result
    assert outcome.error["kind"] == kind, outcome.error
    return outcome.error["message"]


# --- a call and its record -------------------------------------------------------------------


def test_a_call_returns_status_headers_and_text_and_its_joblog_line_has_no_query(
        make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="api.test", dns=FakeDNS({"api.test": ["127.0.0.1"]}))
    outcome = run.call({"method": "get", "url": server.url("/echo?q=private-query", host="api.test")})
    assert outcome.ok and outcome.result is not None
    result = outcome.result
    echoed = json.loads(result["text"])
    assert result["status"] == 200 and result["reason"] == "OK" and result["headers"]["Content-Type"] == "application/json"
    assert result["size"] == len(result["text"].encode()) and result["redirects"] == 0
    assert echoed["headers"]["Host"] == f"api.test:{server.port}" and echoed["path"] == "/echo?q=private-query"
    assert re.fullmatch(rf"http call 1: GET api\.test/echo -> 200, \d+ ms, {result['size']} bytes", outcome.log_line or "")
    assert run.stats["calls"] == 1 and run.stats["bytes"] == result["size"] and run.stats["failed"] == 0


def test_the_connection_goes_to_the_checked_address_whatever_dns_says_later(
        make: Callable[..., RunHttp], server: LocalServer, connections: list[str]) -> None:
    # First answer loopback (allowed here), every later one the metadata address: a second lookup at
    # connect time (DNS rebinding) would go there, and the guard fixture would fail the test.
    dns = FakeDNS({"api.test": [["127.0.0.1"], ["169.254.169.254"]]})
    run = make(agent="api.test", dns=dns)
    ok(run, url=server.url("/echo", host="api.test"))
    assert dns.lookups == ["api.test"] and connections == ["127.0.0.1"]


def test_status_codes_pass_through_and_head_has_no_body(make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1")
    assert ok(run, url=server.url("/status?code=404"))["status"] == 404
    assert ok(run, url=server.url("/status?code=503"))["status"] == 503
    head = run.call({"method": "HEAD", "url": server.url("/echo")})
    assert head.ok and head.result is not None and head.result["text"] == "" and head.result["status"] == 200


def test_ipv6_loopback_is_reached_by_its_literal(make: Callable[..., RunHttp]) -> None:
    six = LocalServer("::1")
    try:
        result = ok(make(agent="[::1]"), url=six.url("/echo"))
        assert json.loads(result["text"])["headers"]["Host"] == f"[::1]:{six.port}"
    finally:
        six.close()


def test_connections_are_pooled_and_no_cookie_is_carried_to_the_next_call(
        make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1")
    assert "Set-Cookie" in ok(run, url=server.url("/cookie"))["headers"]
    echoed = json.loads(ok(run, url=server.url("/echo"))["text"])
    assert "Cookie" not in echoed["headers"]
    first, second = server.requests
    assert first.client_port == second.client_port  # one kept-alive connection from the pool


# --- who may reach what ------------------------------------------------------------------------


def test_loopback_is_forbidden_without_allow_private_and_nothing_is_sent(
        make: Callable[..., RunHttp], server: LocalServer, connections: list[str]) -> None:
    run = make(private=False, dns=FakeDNS({"api.test": ["127.0.0.1"]}))
    assert "127.0.0.1 is a loopback address; only public addresses are allowed" in fails(
        run, "forbidden", url=server.url("/echo"))
    assert "api.test resolves to a loopback address" in fails(run, "forbidden", url=server.url("/echo", host="api.test"))
    assert server.requests == [] and connections == []


@pytest.mark.parametrize(("hosts", "agent", "says"), [
    ("other.test", "api.test", "api.test: not a host this hub allows (HUB_HTTP_ALLOW_HOSTS)"),
    ("*", "other.test", "api.test: not in the agent's HUB_HTTP_ALLOW"),
    ("*.test", "*.api.test", "api.test: not in the agent's HUB_HTTP_ALLOW"),
    ("*", None, "this agent declares no hosts: set its HUB_HTTP_ALLOW"),
    ("", "api.test", "hub.http is off on this hub"),
])
def test_a_host_outside_either_allow_list_is_forbidden_before_any_lookup(
        make: Callable[..., RunHttp], server: LocalServer, hosts: str, agent: str | None, says: str) -> None:
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    run = make(hosts=hosts, agent=agent, dns=dns)
    assert says in fails(run, "forbidden", url=server.url("/echo", host="api.test"))
    assert server.requests == [] and dns.lookups == []


def test_an_agents_malformed_allow_list_is_a_bad_request_naming_it(make: Callable[..., RunHttp], server: LocalServer) -> None:
    message = fails(make(agent="https://api.test"), "bad_request", url=server.url("/echo"))
    assert "HUB_HTTP_ALLOW: 'https://api.test' is not a host pattern" in message and server.requests == []


@pytest.mark.parametrize(("url", "dns"), [
    ("http://169.254.169.254/latest/meta-data/", {}),
    ("http://metadata.test/computeMetadata/v1/", {"metadata.test": ["169.254.169.254"]}),
    ("http://[::ffff:169.254.169.254]/latest/", {}),
    ("http://[fd00:ec2::254]/latest/", {}),
    ("http://[fe80::1]/", {}),
    ("http://mixed.test/", {"mixed.test": ["127.0.0.1", "169.254.169.254"]}),  # one bad address refuses the name
])
def test_cloud_metadata_and_link_local_are_forbidden_even_with_allow_private(
        make: Callable[..., RunHttp], connections: list[str], url: str, dns: dict[str, list[str]]) -> None:
    assert "which is never allowed" in fails(make(dns=FakeDNS(dns)), "forbidden", url=url)  # type: ignore[arg-type]
    assert connections == []


def test_a_name_that_does_not_resolve_and_a_closed_port_are_unavailable(make: Callable[..., RunHttp]) -> None:
    run = make()
    assert "nowhere.test: the name does not resolve" in fails(run, "unavailable", url="http://nowhere.test/")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        assert "cannot connect to 127.0.0.1" in fails(run, "unavailable", url=f"http://127.0.0.1:{port}/")


# --- redirects -------------------------------------------------------------------------------


def test_a_redirect_is_followed_when_every_hop_is_allowed(
        make: Callable[..., RunHttp], server: LocalServer, other: LocalServer) -> None:
    run = make(agent="a.test,b.test", dns=FakeDNS({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.2"]}))
    target = other.url("/echo", host="b.test")
    outcome = run.call({"method": "GET", "url": server.url(f"/redirect?to={quote(target)}", host="a.test")})
    assert outcome.ok and outcome.result is not None
    assert outcome.result["redirects"] == 1 and outcome.result["url"] == target and len(other.requests) == 1
    assert (outcome.log_line or "").endswith(", 1 redirect to b.test/echo")


@pytest.mark.parametrize(("target", "says"), [
    ("http://b.test:{port}/echo", "redirect 1 to b.test: not in the agent's HUB_HTTP_ALLOW"),
    ("http://meta.test/latest/", "redirect 1 to meta.test resolves to a cloud metadata address"),
    ("http://169.254.169.254/latest/", "redirect 1 to 169.254.169.254 is a cloud metadata address"),
    ("http://[::ffff:127.0.0.2]:{port}/echo", "redirect 1 to ::ffff:7f00:2: not in the agent's"),
    ("file:///etc/passwd", "only http and https are allowed"),
])
def test_a_redirect_to_a_forbidden_host_or_address_is_refused_and_not_followed(
        make: Callable[..., RunHttp], server: LocalServer, other: LocalServer, connections: list[str],
        target: str, says: str) -> None:
    dns = FakeDNS({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.2"], "meta.test": ["169.254.169.254"]})
    run = make(agent="a.test,meta.test,169.254.169.254", dns=dns)
    location = quote(target.format(port=other.port))
    assert says in fails(run, "forbidden", url=server.url(f"/redirect?to={location}", host="a.test"))
    assert other.requests == [] and set(connections) == {"127.0.0.1"}


def test_another_origin_gets_no_credentials_and_no_header_that_carried_a_secret(
        make: Callable[..., RunHttp], server: LocalServer, other: LocalServer) -> None:
    run = make(agent="a.test,b.test", dns=FakeDNS({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.2"]}),
               secrets={"SECRET_T": TOKEN})
    headers = {"Authorization": "Bearer {{SECRET_T}}", "X-Api-Key": "{{SECRET_T}}", "Cookie": "a=b", "X-Plain": "p"}
    ok(run, url=server.url(f"/redirect?to={quote(other.url('/echo', host='b.test'))}", host="a.test"), headers=headers)
    [first], [second] = server.requests, other.requests
    assert first.headers["Authorization"] == f"Bearer {TOKEN}" and first.headers["X-Api-Key"] == TOKEN
    assert second.headers["X-Plain"] == "p"
    assert not {"Authorization", "X-Api-Key", "Cookie"} & set(second.headers)
    # The same origin keeps them.
    ok(run, url=server.url("/redirect?to=/echo", host="a.test"), headers=headers)
    assert server.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(("status", "method", "body"), [(303, "GET", b""), (302, "GET", b""), (307, "POST", b'{"n": 1}'),
                                                         (308, "POST", b'{"n": 1}')])
def test_a_redirected_post_becomes_a_get_only_for_302_and_303(
        make: Callable[..., RunHttp], server: LocalServer, status: int, method: str, body: bytes) -> None:
    run = make(agent="127.0.0.1")
    outcome = run.call({"method": "POST", "url": server.url(f"/redirect?status={status}&to=/echo"), "json": {"n": 1}})
    assert outcome.ok
    final = server.requests[-1]
    assert (final.method, final.body) == (method, body)


def test_a_307_to_another_origin_never_resends_a_body_that_carries_a_secret(
        make: Callable[..., RunHttp], server: LocalServer, other: LocalServer) -> None:
    run = make(agent="127.0.0.1,127.0.0.2", secrets={"SECRET_T": TOKEN})
    url = server.url(f"/redirect?status=307&to={quote(other.url('/echo'))}")
    message = fails(run, "forbidden", method="POST", url=url, json={"token": "{{SECRET_T}}"})
    assert "would resend the request body with its secret" in message and other.requests == []


def test_redirects_stop_after_the_maximum(make: Callable[..., RunHttp], server: LocalServer) -> None:
    message = fails(make(agent="127.0.0.1", max_redirects=3), "unavailable", url=server.url("/loop"))
    assert "more than 3 redirects" in message and len(server.requests) == 4


# --- secrets ---------------------------------------------------------------------------------


def test_the_server_gets_the_secret_and_the_agent_gets_it_back_masked(
        make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1", secrets={"SECRET_API_TOKEN": TOKEN})
    outcome = run.call({"method": "POST", "url": server.url("/echo"), "params": {"key": "{{SECRET_API_TOKEN}}"},
                        "headers": {"Authorization": "Bearer {{SECRET_API_TOKEN}}"},
                        "json": {"token": "{{SECRET_API_TOKEN}}"}})
    assert outcome.ok and outcome.result is not None
    [seen] = server.requests
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(seen.body) == {"token": TOKEN} and quote(TOKEN, safe="") in seen.path
    result = outcome.result
    assert result["headers"]["X-Echo-Authorization"] == f"Bearer {MASK}"
    echoed = json.loads(result["text"])
    assert echoed["headers"]["Authorization"] == f"Bearer {MASK}" and json.loads(echoed["body"]) == {"token": MASK}
    assert echoed["path"] == f"/echo?key={MASK}"
    everything = json.dumps([result, outcome.log_line, run.stats])
    for form in (TOKEN, quote(TOKEN, safe=""), json.dumps(TOKEN)[1:-1]):
        assert form not in everything
    assert "{{SECRET_API_TOKEN}}" not in (outcome.log_line or "")  # the path had none; the query is never logged


def test_a_secret_in_the_path_is_logged_as_its_placeholder(make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1", secrets={"SECRET_BOT": "123456:bot-token-value"})
    outcome = run.call({"method": "GET", "url": server.url("/bot{{SECRET_BOT}}/echo")})
    assert outcome.ok and server.requests[0].path == "/bot123456:bot-token-value/echo"
    assert "GET 127.0.0.1/bot{{SECRET_BOT}}/echo -> 200" in (outcome.log_line or "")
    assert "bot-token-value" not in json.dumps([outcome.result, run.stats])


def test_a_visible_env_value_is_masked_in_the_log_but_not_in_the_response(
        make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1", also_mask=("visible-value",))
    echoed = ok(run, url=server.url("/echo?v=visible-value"))
    assert "/echo?v=visible-value" in echoed["text"]
    outcome = run.call({"method": "GET", "url": server.url("/files/visible-value")})
    assert f"GET 127.0.0.1/files/{MASK} -> 200" in (outcome.log_line or "")


def test_bad_input_is_refused_and_nothing_is_sent(make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1", secrets={"SECRET_T": TOKEN})
    assert "contains a line break" in fails(run, "bad_request", url=server.url("/echo"), headers={"X-A": "a\r\nB: c"})
    assert "unknown secret {{SECRET_NOPE}}" in fails(run, "bad_request", url=server.url("/echo?k={{SECRET_NOPE}}"))
    assert "method 'TRACE'" in fails(run, "bad_request", method="TRACE", url=server.url("/echo"))
    assert server.requests == []


# --- limits ----------------------------------------------------------------------------------


def test_calls_over_the_limit_are_refused_and_logged_once(make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1", max_calls=2)
    outcomes = [run.call({"method": "GET", "url": server.url("/echo")}) for _ in range(4)]
    assert [o.ok for o in outcomes] == [True, True, False, False]
    assert outcomes[2].kind == outcomes[3].kind == "limit"
    assert outcomes[2].log_line is not None and "HUB_HTTP_MAX_CALLS (2)" in outcomes[2].log_line
    assert outcomes[3].log_line is None
    assert len(server.requests) == 2 and run.stats["over_limit"] == 2 and run.stats["calls"] == 2


def test_a_streamed_response_over_the_limit_is_too_large_and_not_read_to_its_end(
        make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1", max_response_bytes=64 * KiB)
    message = fails(run, "too_large", url=server.url(f"/big?bytes={64 * 1024 * KiB}&length=0"))
    assert "over the hub's limit of 65536 bytes (HUB_HTTP_MAX_RESPONSE_BYTES)" in message
    wait_until(lambda: server.state.big_finished, timeout=20, what="the /big handler to stop")
    assert server.state.big_finished == [False]  # the client hung up long before 64 MiB


def test_a_declared_length_over_the_limit_is_too_large_before_any_body_arrives(
        make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1", max_response_bytes=64 * KiB)
    # The server sends no body until released: reading any of it would wait out the 5 s timeout instead.
    message = fails(run, "too_large", url=server.url(f"/declared?bytes={10 * 1024 * KiB}"), timeout=5)
    assert "is 10485760 bytes, over the hub's limit of 65536" in message and not server.state.release.is_set()


def test_a_compressed_response_is_limited_by_its_decoded_size(make: Callable[..., RunHttp], server: LocalServer) -> None:
    run = make(agent="127.0.0.1", max_response_bytes=64 * KiB)
    assert "over the hub's limit" in fails(run, "too_large", url=server.url(f"/gzip?bytes={8 * 1024 * KiB}"))
    assert ok(run, url=server.url(f"/gzip?bytes={32 * KiB}"))["size"] == 32 * KiB


def test_a_slow_server_times_out_at_the_calls_timeout(make: Callable[..., RunHttp], server: LocalServer) -> None:
    message = fails(make(agent="127.0.0.1"), "timeout", url=server.url("/hang"), timeout=0.5)
    assert "127.0.0.1 did not answer within the call's timeout of 0.5 s" in message


def test_the_runs_remaining_time_caps_the_calls_timeout(make: Callable[..., RunHttp], server: LocalServer) -> None:
    message = fails(make(agent="127.0.0.1", deadline_s=0.6), "timeout", url=server.url("/hang"), timeout=25)
    assert "did not answer within the time left in the agent's run" in message


def test_a_server_that_drips_bytes_times_out_at_the_deadline_not_per_read(
        make: Callable[..., RunHttp], server: LocalServer) -> None:
    # A byte every 0.1 s for 8 s: every single read is quick, only a deadline on the whole call ends it.
    fails(make(agent="127.0.0.1"), "timeout", url=server.url("/drip?seconds=8"), timeout=1)


def test_no_call_is_made_without_time_left_in_the_run(make: Callable[..., RunHttp], server: LocalServer) -> None:
    assert "no time left" in fails(make(agent="127.0.0.1", deadline_s=0.01), "timeout", url=server.url("/echo"))
    assert server.requests == []


def test_each_call_is_counted_in_the_metrics(make: Callable[..., RunHttp], server: LocalServer) -> None:
    def count(outcome: str) -> float:
        return http_metrics.HTTP_CALLS.labels(outcome=outcome)._value.get()

    before_ok, before_forbidden = count("ok"), count("forbidden")
    run = make(agent="127.0.0.1")
    ok(run, url=server.url("/echo"))
    fails(run, "forbidden", url="http://169.254.169.254/")
    assert (count("ok"), count("forbidden")) == (before_ok + 1, before_forbidden + 1)


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    return tmp_path


def test_https_is_verified_for_the_host_name_while_connecting_to_the_pinned_address(
        make: Callable[..., RunHttp], tls_dir: Path, connections: list[str]) -> None:
    ca = make_ca(tls_dir, ["pinned.test"])
    tls = LocalServer("127.0.0.1", tls=ca.context)
    try:
        run = make(agent="pinned.test", dns=FakeDNS({"pinned.test": ["127.0.0.1"]}), verify=str(ca.ca_file))
        result = ok(run, url=tls.url("/echo", host="pinned.test"))
        assert json.loads(result["text"])["headers"]["Host"] == f"pinned.test:{tls.port}"
        assert tls.state.sni == ["pinned.test"] and connections == ["127.0.0.1"]
    finally:
        tls.close()


def test_https_to_a_certificate_for_another_name_or_an_unknown_ca_fails(make: Callable[..., RunHttp], tls_dir: Path) -> None:
    ca = make_ca(tls_dir, ["other.test"])
    tls = LocalServer("127.0.0.1", tls=ca.context)
    try:
        dns = FakeDNS({"pinned.test": ["127.0.0.1"]})
        wrong_name = fails(make(agent="pinned.test", dns=dns, verify=str(ca.ca_file)), "unavailable",
                           url=tls.url("/echo", host="pinned.test"))
        unknown_ca = fails(make(agent="pinned.test", dns=dns), "unavailable", url=tls.url("/echo", host="pinned.test"))
        assert "TLS with pinned.test failed" in wrong_name and "TLS with pinned.test failed" in unknown_ca
        assert tls.requests == []
    finally:
        tls.close()
