"""The memory inspector: a live web page of one replica (``hybridsync peer --http H:P``).

It shows the fields as a tree, the regions (kind, size, last change), the causal history
(who changed what, when by the HLC, from which parents, with the note), the conflicts, the
connected peers and how far behind each one is known to be, updated live over Server-Sent
Events. Plain asyncio and the standard library: no new dependency. There is no
authentication, so it listens on loopback unless told otherwise (``docs/inspector.md``).

>>> import asyncio, hybridsync as hs
>>> from hybridsync.inspector import Inspector
>>> async def main() -> str:
...     mem = hs.Memory("demo", "a", clock=lambda: 0, incarnation=1)
...     inspector = await Inspector.start(mem)        # http://127.0.0.1:<free port>/
...     try:
...         return inspector.url.split(":")[1]
...     finally:
...         await inspector.stop()
...         mem.close()
>>> asyncio.run(main())
'//127.0.0.1'
"""

from hybridsync.inspector._server import Inspector
from hybridsync.inspector._views import MemoryViews

__all__ = ["Inspector", "MemoryViews"]
