"""Discovery: how a peer learns the addresses of the other peers of its space.

The seam is :class:`Discovery` (start, requery, stop; found peers are reported through the
``on_found(url, peer_id)`` callback given to the constructor). :class:`MdnsDiscovery` is the
mDNS/DNS-SD implementation; zeroconf is imported only here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from hybridsync.discovery._mdns import SERVICE_TYPE, MdnsDiscovery, check_interfaces

__all__ = ["SERVICE_TYPE", "Discovery", "MdnsDiscovery", "check_interfaces"]


@runtime_checkable
class Discovery(Protocol):
    """Finds peers of one space and reports each as ``on_found("tcp://host:port", peer_id)``."""

    async def start(self) -> None: ...
    async def requery(self) -> None: ...
    async def stop(self) -> None: ...
