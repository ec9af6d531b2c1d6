"""A loopback TCP proxy that delays every request, to stand for a store in another country.

:class:`LatencyProxy` listens on ``127.0.0.1`` and forwards each connection to a target (e.g. a
SeaweedFS S3 gateway), holding every byte sent towards the target for ``delay`` seconds before
passing it on. Bytes are forwarded unchanged, so every client sees it — s3fs, zarr-python,
tensorstore, boto3 — and S3 signatures stay valid (they sign the ``Host`` the client names,
the proxy's). Each byte is delayed from its own arrival, so a large upload is delayed once, not
once per packet, and bandwidth is not limited; each HTTP request on a kept-alive connection
therefore costs ``delay`` more than it would on loopback, the time a request takes to cross an
ocean. Responses are not delayed (``delay`` is the whole round trip), nor are TCP handshakes
(a real far site adds about one round trip per new connection on top).

The proxy runs in its own process (``multiprocessing`` spawn), so its work competes with the
client's Python for neither the GIL nor its measured CPU time, and it is stopped with the
handle (or at interpreter exit). :class:`ProxyServer` is the same proxy as an asyncio object,
for use inside an event loop.

Example::

    with SeaweedS3(tmp, buckets=["atlas"]) as s3, LatencyProxy(s3.endpoint_url, 0.02) as far:
        fs = s3fs.S3FileSystem(**s3.s3fs_kwargs(), client_kwargs={"endpoint_url": far.endpoint_url})
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from atlas.errors import InvalidInput, StoreUnavailable

__all__ = ["LatencyProxy", "ProxyServer", "ProxyStats"]

_READ_SIZE = 1 << 16
_START_TIMEOUT_S = 30.0


@dataclass
class ProxyStats:
    """What a proxy forwarded.

    Attributes
    ----------
    connections
        client connections accepted.
    requests
        bursts of bytes towards the target that followed a reply (or opened the connection):
        one per HTTP request on a kept-alive connection.
    bytes_up, bytes_down
        bytes forwarded towards the target and back to the clients.
    """

    connections: int = 0
    requests: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


def _parse_target(target: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(target, tuple):
        host, port = target
    else:
        parts = urlsplit(target if "://" in target else f"tcp://{target}")
        if parts.hostname is None or parts.port is None:
            raise InvalidInput(f"proxy target needs a host and a port, got {target!r}")
        host, port = parts.hostname, parts.port
    if not 0 < int(port) < 65536:
        raise InvalidInput(f"proxy target port out of range: {port!r}")
    return str(host), int(port)


class ProxyServer:
    """The proxy as an asyncio server (see the module docstring); run it in an event loop.

    Parameters
    ----------
    target
        ``"host:port"``, a URL such as ``"http://127.0.0.1:8333"``, or ``(host, port)``.
    delay
        seconds each byte towards the target is held (>= 0).
    host, port
        where to listen; port 0 picks a free one (see :attr:`port` after :meth:`start`).
    """

    def __init__(
        self,
        target: str | tuple[str, int],
        delay: float,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not delay >= 0:
            raise InvalidInput(f"proxy delay must be >= 0 seconds, got {delay!r}")
        self.target = _parse_target(target)
        self.delay = float(delay)
        self.host = host
        self.stats = ProxyStats()
        self._listen_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port it listens on (after :meth:`start`)."""
        if self._server is None:
            raise InvalidInput("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, self.host, self._listen_port)

    async def close(self) -> None:
        """Stop listening and wait for the server to close."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        replied = [True]  # a reply went back since the last burst towards the target

        async def receive() -> None:  # client -> queue, stamped with when it may leave
            try:
                while data := await reader.read(_READ_SIZE):
                    if replied[0]:
                        self.stats.requests += 1
                        replied[0] = False
                    queue.put_nowait((loop.time() + self.delay, data))
            except OSError:
                pass
            queue.put_nowait((loop.time() + self.delay, b""))

        async def send_up() -> None:  # queue -> target, each byte ``delay`` after its arrival
            try:
                while True:
                    due, data = await queue.get()
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if not data:
                        if up_writer.can_write_eof():
                            up_writer.write_eof()
                        return
                    up_writer.write(data)
                    self.stats.bytes_up += len(data)
                    await up_writer.drain()
            except OSError:
                return

        async def send_down() -> None:  # target -> client, at once
            try:
                while data := await up_reader.read(_READ_SIZE):
                    replied[0] = True
                    writer.write(data)
                    self.stats.bytes_down += len(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        tasks = [asyncio.create_task(t()) for t in (receive, send_up, send_down)]
        try:
            await tasks[2]  # the target closed (or the client went away)
        except asyncio.CancelledError:
            pass  # the proxy is shutting down
        finally:
            for task in tasks:
                task.cancel()
            up_writer.close()
            writer.close()


def _serve(conn: Any, target: tuple[str, int], delay: float, host: str, port: int) -> None:
    """Child process: run the proxy until SIGTERM, then send its stats back."""

    async def main() -> None:
        server = ProxyServer(target, delay, host=host, port=port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await server.start()
        conn.send(("ready", server.port))
        await stop.wait()
        await server.close()
        conn.send(("stats", asdict(server.stats)))

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopped by its handle, not by Ctrl-C
    asyncio.run(main())


class LatencyProxy:
    """:class:`ProxyServer` in a child process, with a blocking start/stop and a context manager.

    Parameters
    ----------
    target
        ``"host:port"``, a URL such as ``"http://127.0.0.1:8333"``, or ``(host, port)``.
    delay
        seconds added to every request (default 20 ms: a site in another country).
    host, port
        where to listen; port 0 picks a free one.

    Attributes
    ----------
    stats
        what it forwarded, filled in by :meth:`stop` (``None`` before).
    """

    def __init__(
        self,
        target: str | tuple[str, int],
        delay: float = 0.020,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not delay >= 0:
            raise InvalidInput(f"proxy delay must be >= 0 seconds, got {delay!r}")
        self.target = _parse_target(target)
        self.delay = float(delay)
        self.host = host
        self.stats: ProxyStats | None = None
        self._requested_port = port
        self._port: int | None = None
        self._proc: Any = None
        self._conn: Any = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._port is None:
            raise InvalidInput("the proxy is not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the proxy: give it to clients instead of the target's."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The proxy process id while it runs (to leave it out of measurements)."""
        return None if self._proc is None else int(self._proc.pid)

    def start(self) -> Self:
        """Start the proxy process and wait until it listens.

        Raises
        ------
        StoreUnavailable
            it did not start within 30 s.
        """
        if self._proc is not None:
            return self
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve,
            args=(child, self.target, self.delay, self.host, self._requested_port),
            daemon=True,
            name="atlas-latency-proxy",
        )
        proc.start()
        child.close()
        if not parent.poll(_START_TIMEOUT_S):
            proc.kill()
            raise StoreUnavailable(
                f"latency proxy for {self.target[0]}:{self.target[1]} did not start "
                f"within {_START_TIMEOUT_S:.0f} s"
            )
        _kind, port = parent.recv()
        self._proc, self._conn, self._port = proc, parent, int(port)
        return self

    def stop(self) -> ProxyStats | None:
        """Stop the proxy process; returns (and keeps in :attr:`stats`) what it forwarded."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return self.stats
        self._proc = self._conn = None
        proc.terminate()
        try:
            if conn.poll(5.0):
                kind, values = conn.recv()
                if kind == "stats":
                    self.stats = ProxyStats(**values)
        except (EOFError, OSError):
            pass
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
        conn.close()
        return self.stats

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f" on {self.endpoint_url}" if self._port is not None else ""
        return (
            f"LatencyProxy({self.target[0]}:{self.target[1]}, delay={self.delay * 1e3:.0f} ms"
            f"{where})"
        )
