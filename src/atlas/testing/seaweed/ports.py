"""Free loopback ports for SeaweedFS servers, each with its gRPC companion (port + 10000)."""

from __future__ import annotations

import secrets
import socket
import threading
from pathlib import Path

from atlas.errors import InvalidInput, StoreUnavailable

__all__ = ["GRPC_PORT_OFFSET", "free_port_block"]

#: SeaweedFS opens a gRPC port at every HTTP port + this offset.
GRPC_PORT_OFFSET = 10000

_MAX_BASE_PORT = 55000  # so that port + GRPC_PORT_OFFSET stays a valid port
_MIN_BASE_PORT = 10000  # stay clear of well-known service ports

_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux), or a usual default."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(port: int, *, reuse: bool = False) -> bool:
    """True if a TCP socket can bind 127.0.0.1:``port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block(n: int) -> list[int]:
    """Pick ``n`` distinct ports on 127.0.0.1 whose gRPC companions (port + 10000) are free too.

    Ports are drawn at random below 55000, preferring ports that, together with their gRPC
    companion, lie outside the kernel's ephemeral range (so that outgoing connections cannot
    take them between this call and the server's bind). A port is never handed out twice
    within one process.

    Raises
    ------
    InvalidInput
        ``n`` is not positive.
    StoreUnavailable
        not enough free ports were found.
    """
    if n <= 0:
        raise InvalidInput(f"free_port_block needs a positive count, got {n}")
    eph_low, eph_high = _ephemeral_range()

    def outside_ephemeral(port: int) -> bool:
        return all(not eph_low <= p <= eph_high for p in (port, port + GRPC_PORT_OFFSET))

    rng = secrets.SystemRandom()
    everything = range(_MIN_BASE_PORT, _MAX_BASE_PORT)
    preferred = [p for p in everything if outside_ephemeral(p)]
    fallback = [p for p in everything if not outside_ephemeral(p)]
    rng.shuffle(preferred)
    rng.shuffle(fallback)
    chosen: list[int] = []
    with _ports_lock:
        for port in [*preferred, *fallback]:
            if len(chosen) == n:
                break
            if port in _ports_handed_out or port + GRPC_PORT_OFFSET in _ports_handed_out:
                continue
            if any(abs(port - c) == GRPC_PORT_OFFSET for c in chosen):
                continue
            if _port_is_free(port) and _port_is_free(port + GRPC_PORT_OFFSET):
                chosen.append(port)
        if len(chosen) < n:
            raise StoreUnavailable(f"could not find {n} free port pairs on 127.0.0.1")
        _ports_handed_out.update(chosen)
        _ports_handed_out.update(p + GRPC_PORT_OFFSET for p in chosen)
    return chosen
