"""The partitionable loopback proxy (``_proxy.py``), alone and between two real peers.

This is the partition tool of the network benchmark where namespaces are impossible (not
root); it needs nothing but loopback, so these tests run everywhere.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from _cluster import PeerProcess, runner_argv
from _proxy import PartitionProxy


def test_proxy_holds_bytes_during_a_cut_and_delivers_them_at_heal() -> None:
    async def scenario() -> list[bytes | str]:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(100):
                w.write(data)
                await w.drain()
            w.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        out: list[bytes | str] = []
        with PartitionProxy(port) as proxy:
            r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
            w.write(b"a")
            out.append(await asyncio.wait_for(r.read(10), 5))
            proxy.partition()
            assert proxy.partitioned
            w.write(b"b")
            try:
                out.append(await asyncio.wait_for(r.read(10), 0.5))
            except TimeoutError:
                out.append("held")
            proxy.heal()
            out.append(await asyncio.wait_for(r.read(10), 5))
            w.write_eof()
            out.append(await asyncio.wait_for(r.read(10), 5))  # the close crossed too
            w.close()
            assert proxy.connections == 1 and proxy.bytes_relayed >= 4
        server.close()
        await server.wait_closed()
        return out

    assert asyncio.run(scenario()) == [b"a", "held", b"b", b""]


def test_peers_through_the_proxy_notice_the_cut_and_converge_after_heal() -> None:
    space, secret = f"px-{secrets.token_hex(4)}", secrets.token_bytes(32)
    a = PeerProcess(runner_argv(space, secret, "a"), "a")
    proxy = PartitionProxy(int(a.url.rsplit(":", 1)[1]))
    b = PeerProcess(runner_argv(space, secret, "b", peers=[f"tcp://127.0.0.1:{proxy.port}"]), "b")
    try:

        def wait_sessions(expected: list[list[str]], within_s: float) -> bool:
            for _ in range(int(within_s / 0.25)):
                if [a.ask("state")["sessions"], b.ask("state")["sessions"]] == expected:
                    return True
                time.sleep(0.25)
            return False

        assert wait_sessions([["b"], ["a"]], 30)
        proxy.partition()
        a.ask("write", key="from-a", value=1)
        b.ask("write", key="from-b", value=2)
        assert wait_sessions([[], []], 30)  # heartbeats, not closes: the proxy holds those
        proxy.heal()
        assert wait_sessions([["b"], ["a"]], 30)
        for _ in range(120):
            sa, sb = a.ask("state"), b.ask("state")
            if sa["digest"] == sb["digest"] and sa["keys"] == 2:
                break
            time.sleep(0.25)
        assert sa["digest"] == sb["digest"]
        assert {"from-a", "from-b"} <= set(a.ask("keys")["keys"])
    finally:
        b.close()
        a.close()
        proxy.close()
