"""Who a client is, and how much of the server one client may use.

- ``TrustedProxies.client``: the real client address behind a reverse proxy (Spaces, a load
  balancer), taken from ``X-Forwarded-For`` / ``Forwarded`` only when the peer is a trusted proxy.
- ``RateLimiter``: requests per minute per client (token bucket).
- ``ClientSlots``: requests in flight or waiting per client, so one client cannot fill the queue.

The web UI and the HTTP API both use these, with the same client address.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Mapping

from .errors import Busy, ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_FORWARDED_FOR = re.compile(r'for\s*=\s*"?\[?([^\]";,\s]+)', re.IGNORECASE)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def header_dict(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-cased header names; a header sent several times is joined with commas (RFC 9110 5.3), so
    every ``X-Forwarded-For`` line counts, the proxy's last one included."""
    out: dict[str, str] = {}
    for k, v in raw:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out



def bucket(client: str) -> str:
    """The key limits count a client under: its address, or for IPv6 its /64 network (one host usually
    holds a whole /64, so counting single addresses would let it pick a new one per request)."""
    address = _address(client)
    if address is not None and address.version == 6 and not address.ipv4_mapped:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return client


class TrustedProxies:
    """Addresses or networks whose forwarding headers are believed.

    ``spec`` is a comma-separated list of addresses and CIDR networks, or ``*``. With ``*`` every
    peer is taken to be the proxy (right only when the app can be reached through the proxy alone,
    as on Spaces), and private, loopback and link-local addresses inside the chain count as further
    proxy hops. The client is the rightmost address of the chain that is not a trusted hop: entries
    to its left were written by the client itself and are never believed.
    """

    def __init__(self, spec: str = ""):
        self.spec = spec.strip()
        self.any_peer = False
        self.networks: list[Network] = []
        for part in filter(None, (p.strip() for p in self.spec.split(","))):
            if part == "*":
                self.any_peer = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ConfigError(f"ASSISTANTS_TRUSTED_PROXIES: {part[:60]!r} is not an address, a network (10.0.0.0/8) "
                                  "or *") from None

    def _trusted_hop(self, address) -> bool:
        if any(address in net for net in self.networks if net.version == address.version):
            return True
        return self.any_peer and (address.is_private or address.is_loopback or address.is_link_local)

    def trusts(self, peer: str | None) -> bool:
        if not self.spec or peer is None:
            return False
        address = _address(peer)
        return address is not None and (self.any_peer or self._trusted_hop(address))

    def client(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The client address for a request from ``peer`` carrying ``headers``."""
        peer = peer or "unknown"
        if not self.trusts(peer):
            return peer
        chain = [h.strip() for h in (headers.get("x-forwarded-for") or "").split(",") if h.strip()]
        if not chain:
            chain = _FORWARDED_FOR.findall(headers.get("forwarded") or "")
        for hop in reversed(chain):
            address = _address(hop)
            if address is None:  # garbage the proxy passed on from the client: stop at the last good hop
                return peer
            if not self._trusted_hop(address):
                return str(address)
            peer = str(address)
        return peer  # every hop is a proxy: the leftmost one is the client


class RateLimiter:
    """``per_minute`` requests per client, with bursts up to the same number; 0 disables it."""

    def __init__(self, per_minute: int, max_clients: int = 10_000):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take one token for ``client`` or raise Busy (HTTP 429) saying when to retry."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        client = bucket(client)
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                wait = (1 - tokens) / self.rate
                raise Busy(f"too many requests from your address; try again in {wait:.0f} s")
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self.max_clients:  # forget the idlest clients: memory stays bounded
                for key, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: self.max_clients // 10]:
                    self._buckets.pop(key, None)


class ClientSlots:
    """At most ``per_client`` requests of one client running or waiting at once; 0 disables it.

    ``extra`` adds requests counted elsewhere (the Gradio queue's events of the same client).
    """

    def __init__(self, per_client: int):
        self.per_client = per_client
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def held(self, client: str) -> int:
        with self._lock:
            return self._held.get(bucket(client), 0)

    def _busy(self) -> Busy:
        return Busy(f"you already have {self.per_client} requests running or waiting; wait for one to finish, then try again")

    def full(self, client: str, extra: int = 0) -> Busy | None:
        """The error to raise when ``client`` has no slot left (``extra`` more counted elsewhere), else None."""
        return self._busy() if self.per_client and self.held(client) + extra >= self.per_client else None

    @contextmanager
    def hold(self, client: str, extra: int = 0) -> Iterator[None]:
        """Hold one slot of ``client`` for the duration of the block, or raise Busy (HTTP 429)."""
        client = bucket(client)
        with self._lock:
            if self.per_client and self._held.get(client, 0) + extra >= self.per_client:
                raise self._busy()
            self._held[client] = self._held.get(client, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._held.get(client, 1) - 1
                if left:
                    self._held[client] = left
                else:
                    self._held.pop(client, None)
