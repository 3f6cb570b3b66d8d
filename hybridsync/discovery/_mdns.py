"""mDNS/DNS-SD discovery of the peers of one space (RFC 6762, RFC 6763), with python-zeroconf.

Each peer registers one service of type ``_hybridsync._tcp.local.`` whose TXT record carries
the protocol version (``v``), the peer id (``id``) and the space tag (``tag``, a keyed hash of
the space: the space name never travels in clear). A browser resolves every service of that
type and reports those with our tag that are not ourselves as ``on_found("tcp://ip:port",
peer_id)``.

Measured on this kind of machine (DESIGN.md §5): mDNS works on loopback with
``interfaces=["127.0.0.1"]`` and IPv4 only; discovery on one host takes ~1.1 s unless the
questions ask for multicast answers (``DNSQuestionType.QM``, ~0.15 s: what we do); registration
takes ~1.6 s (probing); zeroconf stops querying ~14 s after it starts and keeps a silently
partitioned peer for ~20 min. So liveness is the session's business (heartbeats), and the
owner calls :meth:`MdnsDiscovery.requery` after a session drop or a heal.

Only explicit IPv4 addresses are accepted as interfaces: never ``InterfaceChoice.All`` or
``Default`` (in the root namespace those announce on the real network).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Sequence

from zeroconf import (
    DNSQuestionType,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from hybridsync.errors import ConfigError, DiscoveryError
from hybridsync.wire import VERSION

__all__ = ["SERVICE_TYPE", "MdnsDiscovery", "check_interfaces"]

SERVICE_TYPE = "_hybridsync._tcp.local."
_log = logging.getLogger("hybridsync.discovery")
_TAG_RE = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces: fits one TXT string
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def _instance_label(peer_id: str, space_tag: str) -> str:
    """A DNS label (<= 63 bytes) naming this peer's service: readable prefix + short hash."""
    h = hashlib.blake2b(f"{peer_id}\x00{space_tag}".encode(), digest_size=4).hexdigest()
    prefix = _LABEL_UNSAFE.sub("-", peer_id).strip("-")[:40] or "peer"
    return f"{prefix}-{h}"


def check_interfaces(interfaces: Sequence[str]) -> tuple[str, ...]:
    """The interfaces as normalised IPv4 host addresses, or :class:`ConfigError`.

    >>> check_interfaces(["127.0.0.1", "127.0.0.1"])
    ('127.0.0.1',)
    """
    if isinstance(interfaces, str) or not isinstance(interfaces, Sequence) or not interfaces:
        raise ConfigError("interfaces must be a non-empty sequence of IPv4 addresses")
    addrs: list[str] = []
    for item in interfaces:
        try:
            ip = ipaddress.IPv4Address(item)
        except (ipaddress.AddressValueError, ValueError, TypeError):
            raise ConfigError(
                f"interface {item!r} is not an IPv4 address (mDNS here is IPv4 only; "
                "give explicit addresses such as 127.0.0.1, never 'all')"
            ) from None
        if ip.is_unspecified or ip.is_multicast:
            raise ConfigError(f"interface {item} cannot carry mDNS; give a host address")
        addrs.append(str(ip))
    return tuple(dict.fromkeys(addrs))


class MdnsDiscovery:
    """Register this peer and report the other peers of the same space tag.

    ``on_found(url, peer_id)`` runs on the event loop, once per service found, again when a
    service changes address or port, and again for every known service after
    :meth:`requery`. It must not block; an exception in it is logged and swallowed.

    >>> d = MdnsDiscovery("3f2a", "agent-a", 7001, on_found=lambda url, peer: None)
    >>> d.service_name.split("-")[:2], d.service_name.endswith("._hybridsync._tcp.local.")
    (['agent', 'a'], True)
    """

    def __init__(
        self,
        space_tag: str,
        peer_id: str,
        port: int,
        *,
        interfaces: Sequence[str] = ("127.0.0.1",),
        on_found: Callable[[str, str], None],
        protocol_version: int = VERSION,
        resolve_timeout_ms: int = 3_000,
    ) -> None:
        if not isinstance(space_tag, str) or not _TAG_RE.match(space_tag):
            raise ConfigError("space_tag must be 1-128 printable ASCII characters, no spaces")
        if not isinstance(peer_id, str) or not peer_id or len(peer_id.encode()) > 200:
            raise ConfigError("peer_id must be a non-empty str of at most 200 bytes")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65_535:
            raise ConfigError(f"port must be an int in 1..65535, got {port!r}")
        if not callable(on_found):
            raise ConfigError("on_found must be a callable (url, peer_id) -> None")
        addrs = check_interfaces(interfaces)
        if (isinstance(protocol_version, bool) or not isinstance(protocol_version, int)
                or not 0 <= protocol_version < 1 << 16):
            raise ConfigError("protocol_version must be an int in 0..65535")
        if (isinstance(resolve_timeout_ms, bool) or not isinstance(resolve_timeout_ms, int)
                or not 10 <= resolve_timeout_ms <= 60_000):
            raise ConfigError("resolve_timeout_ms must be an int in 10..60000")
        self.space_tag = space_tag
        self.peer_id = peer_id
        self.port = port
        self.interfaces = addrs
        self.protocol_version = protocol_version
        self._on_found = on_found
        self._resolve_timeout_ms = resolve_timeout_ms
        label = _instance_label(peer_id, space_tag)
        self.service_name = f"{label}.{SERVICE_TYPE}"
        self._server = f"{label}.local."
        self._azc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported: dict[str, tuple[str, str]] = {}  # service name -> (url, peer id)
        self._state = "new"  # new -> started -> stopped
        self.found_count = 0  # how many times on_found was called (for logs and tests)

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Join the multicast group on the interfaces, browse, then register this peer.

        Returns once the registration has been probed (~1.6 s); browsing runs meanwhile.
        Raises :class:`~hybridsync.errors.DiscoveryError` if the sockets cannot be opened.
        """
        if self._state != "new":
            raise DiscoveryError(f"discovery already {self._state}; make a new one")
        self._state = "started"
        try:
            self._azc = AsyncZeroconf(interfaces=list(self.interfaces),
                                      ip_version=IPVersion.V4Only)
        except OSError as exc:
            self._state = "stopped"
            raise DiscoveryError(f"mDNS on {', '.join(self.interfaces)}: {exc}") from None
        self._start_browser()
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.service_name,
            port=self.port,
            properties={"v": str(self.protocol_version), "id": self.peer_id,
                        "tag": self.space_tag},
            server=self._server,
            addresses=[socket.inet_aton(a) for a in self.interfaces],
        )
        try:
            announced = await self._azc.async_register_service(self._info,
                                                               allow_name_change=True)
            await announced
        except Exception as exc:
            await self.stop()
            raise DiscoveryError(f"mDNS registration of {self.service_name}: {exc}") from None
        _log.info("mDNS: registered %s on %s port %d", self.service_name,
                  ",".join(self.interfaces), self.port)

    async def requery(self) -> None:
        """Ask the network again, and report every matching peer again (also known ones).

        Call after a session dropped or a partition healed: zeroconf stops asking ~14 s after
        it starts and would not notice a peer that changed while we were cut off.
        """
        if self._state != "started" or self._azc is None:
            return
        old, self._browser = self._browser, None
        if old is not None:
            await old.async_cancel()
        if self._state != "started" or self._browser is not None:
            return  # stopped meanwhile, or a concurrent requery already browses again
        self._reported.clear()
        self._start_browser()

    async def stop(self) -> None:
        """Say goodbye (unregister), stop browsing and close the sockets. Idempotent."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        azc, self._azc = self._azc, None
        if azc is None:
            return
        try:
            if self._info is not None and azc.zeroconf.registry.async_get_info_name(
                    self._info.name) is not None:
                goodbye = await azc.async_unregister_service(self._info)
                await goodbye
        finally:
            await azc.async_close()
        _log.info("mDNS: unregistered %s", self.service_name)

    @property
    def running(self) -> bool:
        return self._state == "started"

    def known(self) -> dict[str, str]:
        """Peers reported since the last :meth:`requery`: ``peer_id -> url``."""
        return {peer: url for url, peer in self._reported.values()}

    # ---- browsing ------------------------------------------------------------------------
    def _start_browser(self) -> None:
        assert self._azc is not None
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_change],
            question_type=DNSQuestionType.QM,
        )

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if self._state != "started" or name == self.service_name:
            return
        if state_change is ServiceStateChange.Removed:
            self._reported.pop(name, None)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str) -> None:
        azc = self._azc
        if azc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            ok = await info.async_request(azc.zeroconf, self._resolve_timeout_ms,
                                          question_type=DNSQuestionType.QM)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a hostile or broken responder must not hurt us
            _log.debug("mDNS: resolving %s failed: %s", name, exc)
            return
        if not ok or self._state != "started" or info.port is None:
            return
        props = info.properties
        tag, peer, version = props.get(b"tag"), props.get(b"id"), props.get(b"v")
        if tag is None or peer is None or version is None or tag.decode(errors="replace") != (
                self.space_tag):
            return  # another space (or not one of ours)
        peer_id = peer.decode(errors="replace")
        if peer_id == self.peer_id:
            return  # ourselves under another name (a restart of this peer)
        if version.decode(errors="replace") != str(self.protocol_version):
            _log.warning("mDNS: %s speaks protocol %r, we speak %d: ignored", peer_id,
                         version, self.protocol_version)
            return
        addrs = info.parsed_addresses(IPVersion.V4Only)
        if not addrs:
            return
        # Loopback answers only make sense when we listen on loopback ourselves.
        on_loopback = any(ipaddress.IPv4Address(a).is_loopback for a in self.interfaces)
        ours = [a for a in addrs if ipaddress.IPv4Address(a).is_loopback == on_loopback]
        url = f"tcp://{(ours or addrs)[0]}:{info.port}"
        if self._reported.get(name) == (url, peer_id):
            return
        self._reported[name] = (url, peer_id)
        self.found_count += 1
        _log.info("mDNS: found %s at %s", peer_id, url)
        try:
            self._on_found(url, peer_id)
        except Exception:
            _log.exception("mDNS: on_found(%s, %s) raised", url, peer_id)
