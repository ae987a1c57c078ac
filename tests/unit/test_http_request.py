"""hub.http arguments: each malformed one is a bad_request saying which; secrets go exactly where written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.httpcall.request import build_request
from hubpy.hub._httperrors import HttpCallError, HttpErrorKind
from hubpy.hub._secrets import SecretBox

TOKEN = "tok-4f1c2d9e8b7a"
BOX = SecretBox({"SECRET_TOKEN": TOKEN, "SECRET_NEWLINE": "line1\r\nX-Injected: yes", "SECRET_PIN": "123"})


def build(max_request_bytes: int = 1 << 20, **params: Any) -> Any:
    return build_request({"method": "GET", "url": "https://api.example.com/v1", **params}, BOX,
                         max_request_bytes=max_request_bytes, max_timeout_s=30.0)


def refused(**params: Any) -> str:
    with pytest.raises(HttpCallError) as info:
        build(**params)
    assert info.value.kind is HttpErrorKind.BAD_REQUEST
    assert TOKEN not in info.value.message
    return info.value.message


@pytest.mark.parametrize(("params", "says"), [
    ({"method": "TRACE"}, "method 'TRACE' is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
    ({"method": "CONNECT"}, "method 'CONNECT'"),
    ({"method": 5}, "method 'int'"),
    ({"url": "ftp://files.example.com/x"}, "http:// or https:// URL, got ftp:"),
    ({"url": "file:///etc/passwd"}, "got file:"),
    ({"url": "javascript:alert(1)"}, "got javascript:"),
    ({"url": "api.example.com/v1"}, "got no scheme"),
    ({"url": "http://"}, "url has no host"),
    ({"url": "http://api.example.com:99999/"}, "invalid port"),
    ({"url": "http://api.example.com/a\r\nHost: evil"}, "line break"),
    ({"url": "http://api.example.com/a b"}, "a space"),
    ({"url": ""}, "url must be a non-empty str"),
    ({"url": None}, "url must be a non-empty str"),
    ({"headers": {"X-A": "1\r\nX-Injected: yes"}}, "header 'X-A' contains a line break"),
    ({"headers": {"X-A": "nul\x00"}}, "header 'X-A' contains a line break (CR/LF) or NUL"),
    ({"headers": {"X A": "1"}}, "header name 'X A' is not a valid"),
    ({"headers": {"X-A:": "1"}}, "header name 'X-A:'"),
    ({"headers": {"Host": "evil.example.com"}}, "header 'Host' is set by the hub"),
    ({"headers": {"content-length": "5"}}, "header 'content-length' is set by the hub"),
    ({"headers": {"Transfer-Encoding": "chunked"}}, "header 'Transfer-Encoding' is set by the hub"),
    ({"headers": {"X-A": "1", "x-a": "2"}}, "given twice"),
    ({"headers": {"X-A": ["1"]}}, "header 'X-A' must be a str"),
    ({"headers": ["X-A: 1"]}, "headers must be a dict"),
    ({"params": "a=1"}, "params must be a dict"),
    ({"params": {"a": {"b": 1}}}, "params['a'] must be a str"),
    ({"json": {"a": object()}}, "json is not JSON-serialisable: it contains a object"),
    ({"json": {"a": float("nan")}}, "json is not JSON-serialisable: it contains NaN"),
    ({"json": {1: "a"}}, "json is not JSON-serialisable: an object key is a int"),
    ({"json": {"a": 1}, "data": "x"}, "give json or data, not both"),
    ({"data": ["x"]}, "data must be a str (a raw body) or a dict (a form)"),
    ({"timeout": 0}, "timeout must be a positive number"),
    ({"timeout": True}, "timeout must be a positive number"),
    ({"timeout": float("inf")}, "timeout must be a positive number"),
    ({"follow_redirects": "yes"}, "follow_redirects must be a bool"),
    ({"verify": False}, "unknown argument 'verify'"),
    ({"url": "https://api.example.com/{{SECRET_NOPE}}"}, "unknown secret {{SECRET_NOPE}} in url"),
    ({"headers": {"Authorization": "Bearer {{SECRET_NOPE}}"}}, "unknown secret {{SECRET_NOPE}} in header 'Authorization'"),
    ({"params": {"k": "{{SECRET_NOPE}}"}}, "unknown secret {{SECRET_NOPE}} in params['k']"),
    ({"json": {"k": ["{{SECRET_NOPE}}"]}}, "unknown secret {{SECRET_NOPE}} in json"),
    ({"data": "k={{SECRET_NOPE}}"}, "unknown secret {{SECRET_NOPE}} in data"),
    ({"params": {"pin": "{{SECRET_PIN}}"}}, "secret SECRET_PIN is shorter than 4 characters"),
])
def test_bad_input_is_a_bad_request_saying_what_is_wrong(params: dict[str, Any], says: str) -> None:
    assert says in refused(**params)


def test_a_secret_that_would_break_a_header_is_refused_without_showing_it() -> None:
    message = refused(headers={"X-Key": "{{SECRET_NEWLINE}}"})
    assert "header 'X-Key' contains a line break (CR/LF) or NUL once its secret is put in" in message
    assert "line1" not in message and "Injected" not in message


def test_a_body_over_the_request_limit_is_refused() -> None:
    assert "the request body is 19 bytes, over the hub's limit of 10" in refused(
        max_request_bytes=10, method="POST", json={"a": "0123456789"})


def test_secrets_are_put_in_where_written_and_recorded_where_they_went() -> None:
    req = build(method="post", url="https://api.example.com/bot{{SECRET_TOKEN}}/send",
                headers={"Authorization": "Bearer {{SECRET_TOKEN}}", "X-Plain": "p"},
                params={"key": "{{SECRET_TOKEN}}", "n": 3, "flag": True, "skip": None, "many": ["a", "b"]},
                json={"{{SECRET_TOKEN}}": ["{{SECRET_TOKEN}}", 1, None, {"k": "{{ SECRET_TOKEN }}"}]})
    assert req.method == "POST"
    assert req.url == f"https://api.example.com/bot{TOKEN}/send"
    assert req.headers == {"Authorization": f"Bearer {TOKEN}", "X-Plain": "p"}
    assert req.secret_headers == {"authorization"}
    assert req.params == [("key", TOKEN), ("n", "3"), ("flag", "true"), ("many", "a"), ("many", "b")]
    assert req.json_body == {TOKEN: [TOKEN, 1, None, {"k": TOKEN}]} and req.body_has_secret
    prepared = req.prepared()
    assert prepared.url == f"https://api.example.com/bot{TOKEN}/send?key={TOKEN}&n=3&flag=true&many=a&many=b"
    assert json.loads(prepared.body or b"") == req.json_body
    assert TOKEN not in repr(req)  # a request never shows its values in a log line


def test_a_form_body_gets_its_secrets_and_a_raw_body_keeps_other_braces() -> None:
    form = build(method="POST", data={"token": "{{SECRET_TOKEN}}"})
    raw = build(method="POST", data="{{name}} {{SECRET_TOKEN}}")
    assert form.prepared().body == f"token={TOKEN}" and form.body_has_secret
    assert raw.data == f"{{{{name}}}} {TOKEN}" and raw.body_has_secret
    assert not build(method="POST", data="{{name}}").body_has_secret


def test_the_agents_timeout_is_capped_by_the_hubs() -> None:
    assert build(timeout=5).timeout_s == 5.0
    assert build(timeout=600).timeout_s == 30.0
    assert build().timeout_s is None
