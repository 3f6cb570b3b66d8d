"""The exported surface: ``__all__`` of every public namespace, the error tree, the binding
names of DESIGN.md §2, and the doctests of the public modules."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import types
from pathlib import Path

import pytest

import hybridsync as hs
import hybridsync.errors as errors_module

PUBLIC_NAMESPACES = ["hybridsync", "hybridsync.testing", "hybridsync.sim"]


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
        and name not in {"annotations"}
    }


@pytest.mark.parametrize("name", PUBLIC_NAMESPACES)
def test_all_matches_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name is exported twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what does not exist: {missing}"
    assert _public_names(module) == set(exported) - {"__version__"}


def test_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", hs.__version__)


def test_every_subpackage_declares_all() -> None:
    for info in pkgutil.walk_packages(hs.__path__, "hybridsync."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if not info.name.rsplit(".", 1)[-1].startswith("_") and info.ispkg:
            assert hasattr(module, "__all__"), f"{info.name} has no __all__"
            assert all(hasattr(module, n) for n in module.__all__), info.name


def test_package_is_typed() -> None:
    assert (Path(hs.__file__).parent / "py.typed").is_file()


# ---- the error tree ----------------------------------------------------------------------

EXPECTED_PARENTS = {
    "ConfigError": ("HybridSyncError", "ValueError"),
    "RegionNotFound": ("ConfigError",),
    "FieldValueError": ("HybridSyncError", "TypeError"),
    "TransactionError": ("HybridSyncError",),
    "ProtocolError": ("HybridSyncError",),
    "FrameError": ("ProtocolError",),
    "IntegrityError": ("ProtocolError",),
    "PayloadError": ("ProtocolError",),
    "AuthenticationError": ("ProtocolError",),
    "TransportError": ("HybridSyncError",),
    "StoreError": ("HybridSyncError",),
    "DiscoveryError": ("HybridSyncError",),
    "SimulationError": ("HybridSyncError",),
    "GuaranteeViolation": ("SimulationError",),
    "YjsMessageError": ("FrameError",),
    "YjsUpdateError": ("PayloadError",),
    "YjsDependencyError": ("YjsUpdateError",),
}


def test_error_tree() -> None:
    assert issubclass(hs.HybridSyncError, Exception)
    for name, parents in EXPECTED_PARENTS.items():
        cls = getattr(hs, name)
        assert cls is getattr(errors_module, name)
        for parent in parents:
            base = {"ValueError": ValueError, "TypeError": TypeError}.get(parent)
            assert issubclass(cls, base or getattr(hs, parent)), f"{name} must derive from {parent}"
        assert issubclass(cls, hs.HybridSyncError)
    assert set(errors_module.__all__) == set(EXPECTED_PARENTS) | {"HybridSyncError"}


def test_error_tree_is_drawn_in_the_docstring() -> None:
    doc = errors_module.__doc__ or ""
    for name in errors_module.__all__:
        assert re.search(rf"\b{name}\b", doc), f"{name} is missing from the drawn tree"


def test_every_exception_class_in_the_package_derives_from_the_root() -> None:
    """Private control-flow exceptions (``_Abort``) never escape and are exempt."""
    strays = []
    for info in pkgutil.walk_packages(hs.__path__, "hybridsync."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj) and issubclass(obj, BaseException)
                and obj.__module__.startswith("hybridsync")
                and not obj.__name__.startswith("_")
                and not issubclass(obj, hs.HybridSyncError)
            ):
                strays.append(f"{obj.__module__}.{obj.__qualname__}")
    assert strays == []


def test_guarantee_violation_carries_the_replay_command() -> None:
    err = hs.GuaranteeViolation("G1 failed", replay="python -m hybridsync.sim --seed 7")
    assert err.replay.endswith("--seed 7") and "replay with" in str(err)
    assert str(hs.GuaranteeViolation("plain")) == "plain"


def test_errors_are_catchable_by_their_builtin_parents() -> None:
    with pytest.raises(ValueError):
        hs.Memory("", "p", clock=lambda: 0, incarnation=1)
    m = hs.Memory("s", "p", clock=lambda: 0, incarnation=1)
    with pytest.raises(TypeError):
        m.fields["k"] = {1, 2}


# ---- DESIGN.md §2 binding names ------------------------------------------------------------

MEMORY_API = [
    "fields", "text", "buffer", "transaction", "commit", "history", "heads", "conflicts",
    "observe", "delete_region", "stats", "sync_to", "receive",
]


@pytest.mark.parametrize("name", MEMORY_API)
def test_memory_has_the_binding_api(name: str) -> None:
    assert hasattr(hs.Memory, name)


def test_memory_keyword_only_options() -> None:
    params = inspect.signature(hs.Memory).parameters
    assert list(params)[:2] == ["space", "peer"]
    for name in ("store", "path", "clock", "incarnation", "batch_size"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY


# ---- wrong types from the API: a ConfigError, the replica unchanged -----------------------
_WRONG = [None, 1.5, "x", b"x", [], {}, object(), True, 2**70, -1]
_CALLS = {
    "collect(min_entries=)": lambda m, v: m.collect(min_entries=v),
    "sync_to(peer)": lambda m, v: m.sync_to(v),
    "sync_to(reliable=)": lambda m, v: m.sync_to("b", reliable=v),
    "resend(peer)": lambda m, v: m.resend(v),
    "buffer(shape=)": lambda m, v: m.buffer("buf", shape=v, dtype="float16"),
    "buffer(shape=(2, v))": lambda m, v: m.buffer("buf", shape=(2, v), dtype="float16"),
    "auto_collect =": lambda m, v: setattr(m, "auto_collect", v),
    "text.insert(index)": lambda m, v: m.text("t").insert(v, "x"),
    "text.delete(index)": lambda m, v: m.text("t").delete(v, 1),
    "text.delete(length)": lambda m, v: m.text("t").delete(0, v),
    "text.append(text)": lambda m, v: m.text("t").append(v),
    "text.insert(text)": lambda m, v: m.text("t").insert(0, v),
    "buffer.write(offset)": lambda m, v: m.buffer("w", shape=(64,), dtype="float16").write(
        v, [0.0, 1.0]),
}


@pytest.mark.parametrize("call", list(_CALLS))
def test_wrong_types_raise_config_error_and_change_nothing(call: str) -> None:
    m = hs.Memory("s", "a", clock=lambda: 0, incarnation=1)
    m.fields["k"] = 1
    before = (m.state_digest(), m.heads, m.stats())
    for value in _WRONG:
        if value is True and ("reliable" in call or "auto_collect" in call):
            continue  # valid
        if isinstance(value, str) and ("peer" in call or "(text)" in call):
            continue  # a valid peer name / text
        if type(value) is int and value > 0 and "text." in call:
            continue  # a valid position (past the end is clamped)
        with pytest.raises(hs.ConfigError):
            _CALLS[call](m, value)
    assert (m.state_digest(), m.heads, m.stats()) == before


@pytest.mark.parametrize("data", ["x", b"x", {"a": 1}, object(), [[1.0], [1.0, 2.0]]])
def test_a_buffer_write_of_non_numbers_is_a_config_error(data: object) -> None:
    m = hs.Memory("s", "a", clock=lambda: 0, incarnation=1)
    buf = m.buffer("w", shape=(64,), dtype="float16")
    with pytest.raises(hs.ConfigError):
        buf.write(0, data)
    assert not buf.read().any()


# ---- doctests ----------------------------------------------------------------------------

DOCTESTED = [
    "hybridsync",
    "hybridsync.causal._contribution",
    "hybridsync.causal._vv",
    "hybridsync.replica",
    "hybridsync.testing._sync",
    "hybridsync.testing._checks",
]


@pytest.mark.parametrize("name", DOCTESTED)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no doctest"
    assert result.failed == 0
