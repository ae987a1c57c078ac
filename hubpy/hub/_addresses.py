"""Which resolved addresses a brokered call may connect to, and DNS resolution with a timeout.

Checked after resolution, on every hop, on every address a name resolves to: one refused address
refuses the host (a name that mixes public and private addresses is how DNS rebinding starts).
The tables are written out (IANA's special-purpose registries) rather than left to ``ipaddress``'s
``is_global``, whose answers changed between Python releases; ``not is_global`` is a last catch.
An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo)
is also judged by that IPv4 address.

Shared by the dispatcher's broker and ``python -m hub run``. Standard library only.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from collections.abc import Callable
from enum import Enum

from ._hosts import ip_literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port, timeout_s) -> the addresses to connect to, in the order to try them. Tests inject their own.
Resolver = Callable[[str, int, float], list[IPAddress]]


class AddressClass(str, Enum):  # noqa: UP042 - StrEnum is 3.11+, the SDK supports 3.10
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    MULTICAST = "multicast"
    RESERVED = "reserved"
    UNSPECIFIED = "unspecified"
    METADATA = "cloud metadata"

    @property
    def always_refused(self) -> bool:
        """Refused even with HUB_HTTP_ALLOW_PRIVATE=1: never a web API, and link-local is where cloud
        metadata (credentials) lives."""
        return self in (AddressClass.LINK_LOCAL, AddressClass.MULTICAST, AddressClass.UNSPECIFIED,
                        AddressClass.METADATA)


def _nets(kind: AddressClass, *cidrs: str) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, AddressClass]]:
    return [(ipaddress.ip_network(c), kind) for c in cidrs]


# Most specific first: the first network that holds the address names its class.
_TABLE = [
    *_nets(AddressClass.METADATA, "169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32"),
    *_nets(AddressClass.UNSPECIFIED, "0.0.0.0/32", "::/128"),
    *_nets(AddressClass.LOOPBACK, "127.0.0.0/8", "::1/128"),
    *_nets(AddressClass.LINK_LOCAL, "169.254.0.0/16", "fe80::/10"),
    *_nets(AddressClass.MULTICAST, "224.0.0.0/4", "ff00::/8"),
    *_nets(AddressClass.PRIVATE, "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
           "fec0::/10"),
    *_nets(AddressClass.RESERVED,
           "0.0.0.0/8",          # "this network"
           "192.0.0.0/24",       # IETF protocol assignments
           "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
           "192.88.99.0/24",     # 6to4 relay anycast
           "198.18.0.0/15",      # benchmarking
           "240.0.0.0/4",        # future use, and 255.255.255.255 (broadcast)
           "100::/64",           # discard-only
           "2001::/23",          # IETF protocol assignments (Teredo, ORCHID, ...)
           "2001:db8::/32", "3fff::/20",  # documentation
           "64:ff9b:1::/48",     # local-use NAT64
           "5f00::/16",          # SRv6 SIDs
           "::/8"),              # IPv4-compatible and other reserved low space
]


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it stands for one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    packed = int(ip)
    if ip in _NAT64 or (packed >> 32 == 0 and packed > 1):  # NAT64 well-known prefix, IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def classify(ip: IPAddress) -> AddressClass | None:
    """The class of a non-public address, None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            inner_class = classify(inner)
            if inner_class is not None:
                return inner_class
            if ip.ipv4_mapped is not None or ip in _NAT64:
                return None  # ::ffff:a.b.c.d is a.b.c.d; NAT64 reaches it through a gateway
        if ip.scope_id:
            return AddressClass.LINK_LOCAL
    for net, kind in _TABLE:
        if ip.version == net.version and ip in net:
            return kind
    if not ip.is_global:
        return AddressClass.RESERVED
    return None


def refusal(ip: IPAddress, *, allow_private: bool, host: str | None = None) -> str | None:
    """Why a connection to ``ip`` is refused, or None when it is allowed.

    With ``host`` (a name, not a literal) the text says the name resolves to such an address without
    saying which: an agent learns nothing of the operator's internal addressing.
    """
    kind = classify(ip)
    if kind is None:
        return None
    what = f"{ip} is" if host is None else f"{host} resolves to"
    a = "an" if kind.value[0] in "aeiou" else "a"
    if kind.always_refused:
        return f"{what} {a} {kind.value} address, which is never allowed"
    if allow_private:
        return None
    return f"{what} {a} {kind.value} address; only public addresses are allowed (HUB_HTTP_ALLOW_PRIVATE is off)"


_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="hub-http-dns")


def _getaddrinfo(host: str, port: int) -> list[IPAddress]:
    seen: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def system_resolver(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """The system's resolver (getaddrinfo, in the system's preference order), bounded by ``timeout_s``.

    getaddrinfo has no timeout of its own; a stuck lookup is left to finish in its pool thread.
    Raises ``socket.gaierror`` (no such name) or ``TimeoutError``.
    """
    literal = ip_literal(host)
    if literal is not None:
        return [literal]
    future = _POOL.submit(_getaddrinfo, host, port)
    try:
        return future.result(timeout=max(timeout_s, 0.001))
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"resolving {host} took longer than {timeout_s:.1f} s") from None
