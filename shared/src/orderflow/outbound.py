"""Where a service may connect: a guard against requests to internal addresses (SSRF).

One guard for every outbound connection (decision 0015): the notifier's webhooks and SMTP,
and intake's fetches of files named by URL in `order.submit` (decision 0024). Every
connection resolves its host name here, at send time, checks every
address it resolves to, and connects to one of those checked addresses: the name is never
resolved a second time by someone else, so a DNS answer that changes between the check
and the connection (DNS rebinding) gains nothing. TLS still verifies the certificate
against the name.

Refused unless the service's allow-list (`NOTIFIER_OUTBOUND_ALLOW`, `INTAKE_OUTBOUND_ALLOW`)
names the host or a network holding the address:
private, loopback, link-local, multicast, unspecified, reserved and any other non-global
address, IPv4 or IPv6, IPv4-mapped, 6to4 and Teredo addresses judged by the IPv4 address
they carry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import httpcore
import httpx
from pydantic import AfterValidator

from .settings import EnvList

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The setting named in a refusal when the policy was not told its own.
ALLOW_SETTING = "NOTIFIER_OUTBOUND_ALLOW"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$"
)


class OutboundRefused(Exception):
    """The target is not one the service may connect to; the message says why."""


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    # IPv4-compatible (::a.b.c.d, deprecated) still reaches the IPv4 host on some stacks
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return None


def address_class(address: IPAddress) -> str | None:
    """What kind of non-public address this is ("loopback", "private", ...); None when it
    is a public (global unicast) address."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = address_class(embedded)
        return f"{inner} (IPv4 in IPv6)" if inner else None
    for name, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return name
    if not address.is_global:
        return "non-public"
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    """Hosts and networks the operator allowed besides the public internet."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    #: the setting a refusal tells the operator to extend
    setting: str = ALLOW_SETTING

    @classmethod
    def parse(cls, entries: Iterable[str], *, setting: str = ALLOW_SETTING) -> OutboundPolicy:
        """`127.0.0.1`, `10.0.0.0/8`, `::1`, `erp.internal`; a bad entry is refused, named."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not _HOSTNAME.match(entry) or "/" in entry:
                raise ValueError(f"{entry!r} is neither a host name, an IP address nor a CIDR")
            hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks), setting)

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why `address` (which `host` resolved to) may not be connected to; None if it may."""
        kind = address_class(address)
        if kind is None or self.host_allowed(host):
            return None
        plain = _embedded_ipv4(address) or address
        if any(a in net for net in self.networks for a in {address, plain}):
            return None
        named = host if host == str(address) else f"{host} ({address})"
        return f"{named} is a {kind} address; add it to {self.setting} to allow it"

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to, every one checked; OutboundRefused otherwise."""
        literal = _literal(host)
        if literal is not None:
            infos = [str(literal)]
        else:
            try:
                found = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
            except socket.gaierror as exc:
                raise OutboundRefused(f"{host} does not resolve: {exc.strerror}") from None
            infos = list(dict.fromkeys(str(info[4][0]) for info in found))
        if not infos:
            raise OutboundRefused(f"{host} does not resolve")
        for text in infos:
            why = self.refusal(host, ipaddress.ip_address(text.split("%", 1)[0]))
            if why:
                # one bad answer is enough: a name that also points inside is not trusted
                raise OutboundRefused(why)
        return infos


def _checked_allow_list(value: list[str]) -> list[str]:
    OutboundPolicy.parse(value)  # a bad entry stops the service, named
    return value


#: A service's allow-list setting: comma-separated or a JSON list of what
#: `OutboundPolicy.parse` accepts, a bad entry refused when the settings are read.
AllowList = Annotated[EnvList, AfterValidator(_checked_allow_list)]


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# --- HTTP: an httpcore network backend that connects only to checked addresses -----------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host itself, then connects to the checked address; httpcore
    keeps the name for TLS (SNI and certificate check) and the Host header."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.resolve(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets are not an outbound target")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, its connection pool built on `GuardedBackend`; no proxy from
    the environment (a proxy would connect to the target unchecked)."""

    def __init__(self, policy: OutboundPolicy, **kwargs: Any) -> None:
        super().__init__(trust_env=False, **kwargs)
        old = self._pool
        # httpx exposes no network_backend argument: the same pool, with ours
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=old._ssl_context,
            max_connections=old._max_connections,
            max_keepalive_connections=old._max_keepalive_connections,
            keepalive_expiry=old._keepalive_expiry,
            http1=old._http1,
            http2=old._http2,
            network_backend=GuardedBackend(policy),
        )


# --- SMTP: a socket connected to a checked address ----------------------------------------


async def connect_socket(
    policy: OutboundPolicy, host: str, port: int, *, timeout: float
) -> socket.socket:
    """A connected, non-blocking socket to a checked address of `host`."""
    addresses: Sequence[str] = await policy.resolve(host, port)
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (address, port))
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError(f"timed out connecting to {host}")
    assert last is not None
    raise last
