"""Connections to public addresses only: no private, loopback, link-local or reserved address, but for trusted hosts
(a local server the operator named). The bot's downloads and the gallery collector share it."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult


class PrivateAddressError(OSError):
    """A host that resolves only to private, loopback, link-local or reserved addresses."""


class PublicResolver(AbstractResolver):
    """Resolve host names to public addresses only, except for `trusted` hosts (the local test server)."""

    def __init__(self, trusted: frozenset[str] = frozenset(), inner: AbstractResolver | None = None) -> None:
        self.trusted = trusted
        self.inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The inner resolver's addresses, refusing private, loopback, link-local and reserved ones."""
        found = await self.inner.resolve(host, port, family)
        if host in self.trusted:
            return found
        public = [entry for entry in found if is_public(entry["host"])]
        if not public:
            raise PrivateAddressError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        """Close the inner resolver."""
        await self.inner.close()


def is_public(address: str) -> bool:
    """Whether an IP address is a public one (not private, loopback, link-local, reserved or unparseable)."""
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def public_session(trusted: frozenset[str], user_agent: str) -> aiohttp.ClientSession:
    """An HTTP session that connects to public addresses only, but for the `trusted` hosts."""
    connector = aiohttp.TCPConnector(resolver=PublicResolver(trusted))
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": user_agent})
