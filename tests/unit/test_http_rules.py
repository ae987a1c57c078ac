"""hub.http's rules on their own: host patterns, address classes, the operator's settings."""

from __future__ import annotations

import ipaddress

import pytest

from core.config import ConfigError
from dispatcher.config import HttpSettings
from hubpy.hub._addresses import AddressClass, classify, refusal
from hubpy.hub._hosts import HostPatternError, HostPatterns


def patterns(text: str) -> HostPatterns:
    parsed = HostPatterns.parse(text, "TEST")
    assert parsed is not None
    return parsed


# --- host patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "host", "allowed"), [
    ("api.example.com", "api.example.com", True),
    ("api.example.com", "API.Example.COM.", True),       # case and a trailing dot do not matter
    ("api.example.com", "example.com", False),
    ("api.example.com", "x.api.example.com", False),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "example.com", False),             # the apex is not under itself
    ("*.example.com", "badexample.com", False),
    ("*.example.com", "example.com.evil.org", False),
    ("*.example.com", "a.example.com.evil.org", False),
    ("*", "anything.org", True),
    ("*", "203.0.113.9", True),
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.2", False),
    ("[::1]", "::1", True),
    ("::1", "[::1]", True),
    ("[2001:db8::1]", "2001:0db8:0:0::1", True),          # compared as addresses, not as text
    ("*.0.0.1", "127.0.0.1", False),                      # a wildcard never matches an address
    ("localhost,api.example.com", "localhost", True),
    (" a.test , ,b.test ", "b.test", True),
])
def test_a_host_pattern_matches_exactly_the_hosts_it_names(pattern: str, host: str, allowed: bool) -> None:
    assert patterns(pattern).allows(host) is allowed


@pytest.mark.parametrize("text", [None, "", "  ", ",", " , ,"])
def test_an_unset_or_empty_list_is_off(text: str | None) -> None:
    assert HostPatterns.parse(text, "TEST") is None


@pytest.mark.parametrize("bad", [
    "https://api.example.com", "api.example.com:443", "api.example.com/v1", "a*.example.com", "*example.com",
    "*.", "*.*.example.com", "ex ample.com", "bücher.de", "-bad.example.com", "[::1", "a..b",
])
def test_a_malformed_pattern_is_refused_naming_the_list_and_the_pattern(bad: str) -> None:
    with pytest.raises(HostPatternError) as info:
        HostPatterns.parse(f"ok.example.com,{bad}", "HUB_HTTP_ALLOW")
    assert "HUB_HTTP_ALLOW" in str(info.value) and repr(bad.strip()) in str(info.value)


def test_patterns_print_back_in_a_stable_form() -> None:
    assert str(patterns("B.test, *.Example.com,*,[::1]")) == "*,::1,b.test,*.example.com"


# --- address classes -----------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808",
])
def test_public_addresses_are_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert classify(ip) is None and refusal(ip, allow_private=False) is None


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", AddressClass.LOOPBACK),
    ("127.254.3.4", AddressClass.LOOPBACK),
    ("::1", AddressClass.LOOPBACK),
    ("::ffff:127.0.0.1", AddressClass.LOOPBACK),        # IPv4-mapped
    ("::127.0.0.1", AddressClass.LOOPBACK),             # IPv4-compatible
    ("10.1.2.3", AddressClass.PRIVATE),
    ("172.16.0.1", AddressClass.PRIVATE),
    ("172.31.255.254", AddressClass.PRIVATE),
    ("192.168.1.1", AddressClass.PRIVATE),
    ("100.64.0.1", AddressClass.PRIVATE),               # shared address space (carrier NAT)
    ("fd12:3456::1", AddressClass.PRIVATE),
    ("::ffff:10.0.0.1", AddressClass.PRIVATE),
    ("169.254.169.254", AddressClass.METADATA),
    ("::ffff:169.254.169.254", AddressClass.METADATA),
    ("::169.254.169.254", AddressClass.METADATA),
    ("64:ff9b::a9fe:a9fe", AddressClass.METADATA),      # NAT64 of 169.254.169.254
    ("2002:a9fe:a9fe::1", AddressClass.METADATA),       # 6to4 of 169.254.169.254
    ("fd00:ec2::254", AddressClass.METADATA),
    ("100.100.100.200", AddressClass.METADATA),
    ("169.254.1.1", AddressClass.LINK_LOCAL),
    ("fe80::1", AddressClass.LINK_LOCAL),
    ("fe80::1%2", AddressClass.LINK_LOCAL),
    ("febf::1", AddressClass.LINK_LOCAL),
    ("224.0.0.1", AddressClass.MULTICAST),
    ("239.1.2.3", AddressClass.MULTICAST),
    ("ff02::1", AddressClass.MULTICAST),
    ("0.0.0.0", AddressClass.UNSPECIFIED),
    ("::", AddressClass.UNSPECIFIED),
    ("0.1.2.3", AddressClass.RESERVED),
    ("192.0.2.1", AddressClass.RESERVED),
    ("198.18.0.1", AddressClass.RESERVED),
    ("240.0.0.1", AddressClass.RESERVED),
    ("255.255.255.255", AddressClass.RESERVED),
    ("2001:db8::1", AddressClass.RESERVED),
    ("::ffff:192.0.2.1", AddressClass.RESERVED),
])
def test_each_non_public_address_has_its_class(address: str, kind: AddressClass) -> None:
    assert classify(ipaddress.ip_address(address)) is kind


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.1", "fd00::1", "192.0.2.1", "::ffff:127.0.0.1"])
def test_loopback_private_and_reserved_need_allow_private(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert refusal(ip, allow_private=False) is not None
    assert refusal(ip, allow_private=True) is None


@pytest.mark.parametrize("address", [
    "169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "fd00:ec2::254", "169.254.3.3", "fe80::1",
    "224.0.0.1", "ff02::1", "0.0.0.0", "::",
])
def test_link_local_metadata_multicast_and_unspecified_are_refused_even_with_allow_private(address: str) -> None:
    why = refusal(ipaddress.ip_address(address), allow_private=True)
    assert why is not None and "never allowed" in why


def test_a_refusal_for_a_name_says_the_class_without_the_address() -> None:
    why = refusal(ipaddress.ip_address("10.9.8.7"), allow_private=False, host="db.internal")
    assert why is not None and "db.internal resolves to a private address" in why and "10.9.8.7" not in why


# --- the operator's settings ---------------------------------------------------------------


def test_settings_default_to_off_with_the_documented_limits() -> None:
    s = HttpSettings.from_env({})
    assert (s.http_enabled, s.http_allow_private, s.http_max_calls, s.http_max_response_bytes, s.http_timeout_s,
            s.http_max_redirects, s.http_max_request_bytes) == (False, False, 50, 1 << 20, 30.0, 5, 1 << 20)


def test_settings_read_every_variable() -> None:
    s = HttpSettings.from_env({"HUB_HTTP_ALLOW_HOSTS": "*.example.com", "HUB_HTTP_ALLOW_PRIVATE": "1",
                               "HUB_HTTP_MAX_CALLS": "7", "HUB_HTTP_MAX_RESPONSE_BYTES": "1000",
                               "HUB_HTTP_TIMEOUT_S": "2.5", "HUB_HTTP_MAX_REDIRECTS": "0",
                               "HUB_HTTP_MAX_REQUEST_BYTES": "10"})
    assert s.http_enabled and s.http_allow_hosts is not None and s.http_allow_hosts.allows("a.example.com")
    assert (s.http_allow_private, s.http_max_calls, s.http_max_response_bytes, s.http_timeout_s, s.http_max_redirects,
            s.http_max_request_bytes) == (True, 7, 1000, 2.5, 0, 10)


@pytest.mark.parametrize(("env", "named"), [
    ({"HUB_HTTP_ALLOW_HOSTS": "https://x.com"}, "HUB_HTTP_ALLOW_HOSTS"),
    ({"HUB_HTTP_MAX_CALLS": "many"}, "HUB_HTTP_MAX_CALLS"),
    ({"HUB_HTTP_MAX_RESPONSE_BYTES": "0"}, "HUB_HTTP_MAX_RESPONSE_BYTES"),
    ({"HUB_HTTP_TIMEOUT_S": "0"}, "HUB_HTTP_TIMEOUT_S"),
])
def test_a_bad_setting_stops_the_process_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        HttpSettings.from_env(env)
