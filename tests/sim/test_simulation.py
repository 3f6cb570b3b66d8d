"""Scenario tests of the simulator: partitions, one-way cuts, clogs, crashes, routing."""

from __future__ import annotations

import pytest

from hybridsync.errors import ConfigError, GuaranteeViolation, SimulationError
from hybridsync.sim import (
    Fault,
    SimOptions,
    Simulation,
    check_causal_order,
    check_convergence,
    plan_faults,
    run,
)


def _assert_all_checks(sim: Simulation) -> None:
    check_convergence(sim.memories(), replay=sim.replay_command)
    assert sim.recorder is not None
    check_causal_order(sim.recorder, sim.memories(), replay=sim.replay_command)


def test_the_design_example() -> None:
    sim = Simulation(peers=8, seed=7, loss=0.1, duplicate=0.05, reorder=True)
    sim.memory("p0").fields["x"] = 1
    sim.partition([["p0", "p1"], ["p2", "p3", "p4", "p5", "p6", "p7"]])
    sim.memory("p5").fields["y"] = {"nested": [1, 2]}
    sim.run(ticks=200)
    assert sim.memory("p1").fields.get("x") == 1
    assert "x" not in sim.memory("p2").fields
    assert not sim.converged()
    sim.heal()
    used = sim.run_until_converged(max_ticks=500)
    assert 0 < used <= 500
    assert sim.converged()
    assert sim.memory("p7").fields.to_dict() == {"x": 1, "y": {"nested": [1, 2]}}
    stats = sim.stats
    assert stats.messages > 0 and stats.bytes > 0 and stats.rounds == stats.ticks
    assert stats.dropped_loss > 0 and stats.dropped_partition > 0 and stats.duplicated > 0
    assert set(stats.metadata_bytes) == set(sim.peers)
    assert all(v > 0 for v in stats.metadata_bytes.values())
    assert stats.as_dict()["peers"]["p0"]["up"] is True
    _assert_all_checks(sim)


def _scripted(seed: int, **kw: object) -> tuple[str, list[str], dict[str, int]]:
    sim = Simulation(4, seed, loss=0.2, duplicate=0.1, reorder=True, **kw)  # type: ignore[arg-type]
    for i, p in enumerate(sim.peers):
        sim.memory(p).fields[f"k{i % 2}"] = {"by": p, "i": i}
        sim.run(3)
    sim.run_until_converged(max_ticks=1000)
    st = sim.stats
    return (sim.memory("p0").fields_json(), [c.hex_id for c in sim.memory("p3").history()],
            {"messages": st.messages, "bytes": st.bytes, "lost": st.dropped_loss})


def test_the_same_seed_replays_the_same_run() -> None:
    assert _scripted(11) == _scripted(11)


def test_another_seed_draws_another_network() -> None:
    a, b = _scripted(11), _scripted(12)
    assert a[2] != b[2]


def test_a_partition_keeps_groups_apart_until_healed() -> None:
    sim = Simulation(4, 3, reorder=True)
    sim.partition([["p0", "p1"], ["p2", "p3"]])
    sim.memory("p0").fields["left"] = "L"
    sim.memory("p3").fields["right"] = "R"
    sim.run(40)
    assert sim.memory("p1").fields.to_dict() == {"left": "L"}
    assert sim.memory("p2").fields.to_dict() == {"right": "R"}
    assert sim.stats.dropped_partition > 0
    sim.heal()
    sim.run_until_converged(200)
    assert sim.memory("p2").fields.to_dict() == {"left": "L", "right": "R"}
    _assert_all_checks(sim)


def test_a_random_split_is_drawn_from_the_seed() -> None:
    groups = [Simulation(6, 5).partition_random() for _ in range(2)]
    assert groups[0] == groups[1]
    assert sorted(groups[0][0] + groups[0][1]) == [f"p{i}" for i in range(6)]
    assert all(groups[0])


def test_an_isolated_peer_diverges_then_catches_up() -> None:
    sim = Simulation(3, 4, loss=0.1)
    sim.isolate("p2")
    sim.memory("p2").fields["alone"] = True
    sim.memory("p0").fields["together"] = True
    sim.run(30)
    assert sim.memory("p1").fields.to_dict() == {"together": True}
    assert sim.memory("p2").fields.to_dict() == {"alone": True}
    sim.heal()
    sim.run_until_converged(300)
    assert sim.memory("p1").fields.to_dict() == {"alone": True, "together": True}
    _assert_all_checks(sim)


def test_a_one_way_cut_drops_one_direction_only() -> None:
    sim = Simulation(2, 5)
    sim.one_way("p0", "p1")
    sim.memory("p0").fields["from_p0"] = 0
    sim.memory("p1").fields["from_p1"] = 1
    sim.run(30)
    assert sim.memory("p0").fields.to_dict() == {"from_p0": 0, "from_p1": 1}
    assert sim.memory("p1").fields.to_dict() == {"from_p1": 1}
    sim.heal()
    sim.run_until_converged(300)
    assert sim.memory("p1").fields.to_dict() == {"from_p0": 0, "from_p1": 1}
    _assert_all_checks(sim)


def test_a_clog_delays_without_losing() -> None:
    sim = Simulation(2, 6, max_delay_ticks=1)
    sim.clog("p0", "p1", ticks=20)
    sim.memory("p0").fields["x"] = 1
    sim.run(10)
    assert "x" not in sim.memory("p1").fields
    sim.run(15)
    assert sim.memory("p1").fields.get("x") == 1
    assert sim.stats.clogged > 0
    assert sim.stats.dropped_partition == sim.stats.dropped_loss == 0


def test_a_crash_keeps_commits_and_loses_frames_in_flight() -> None:
    sim = Simulation(3, 8, max_delay_ticks=3)
    old = sim.memory("p1")
    old.fields["committed"] = "before the crash"
    sim.memory("p0").fields["to_p1"] = 1
    sim.tick()  # p0's frames to p1 are now in flight
    in_flight = sim.network.in_flight
    sim.crash("p1")
    assert sim.network.in_flight < in_flight
    assert sim.stats.dropped_down > 0 and sim.stats.crashes == 1
    assert not sim.is_up("p1") and not sim.converged()
    with pytest.raises(SimulationError):
        sim.memory("p1")
    with pytest.raises(SimulationError):
        sim.run_until_converged(10)
    sim.run(5)
    new = sim.restart("p1")
    assert new is not old and new.incarnation != old.incarnation
    assert new.fields.get("committed") == "before the crash"
    sim.run_until_converged(300)
    assert sim.memory("p1").fields.get("to_p1") == 1
    assert sim.memory("p2").fields.get("committed") == "before the crash"
    assert sim.stats.restarts == 1
    _assert_all_checks(sim)


def test_crash_and_restart_misuse_is_refused() -> None:
    sim = Simulation(2, 1)
    with pytest.raises(SimulationError):
        sim.restart("p0")
    sim.crash("p0")
    with pytest.raises(SimulationError):
        sim.crash("p0")
    assert sim.restart_all() == ["p0"]


def _links_used(sim: Simulation, ticks: int) -> set[tuple[str, str]]:
    used: set[tuple[str, str]] = set()
    send = sim.network.send

    def spy(now: int, src: str, dst: str, frame: bytes) -> None:
        used.add((src, dst))
        send(now, src, dst, frame)

    sim.network.send = spy  # type: ignore[method-assign]
    for p in sim.peers:
        sim.memory(p).fields[p] = p
    sim.run(ticks)
    return used


def test_star_routing_talks_only_through_the_hub() -> None:
    sim = Simulation(5, 2, routing="star", loss=0.1)
    used = _links_used(sim, 10)
    assert used and all("p0" in link for link in used)
    sim.run_until_converged(500)
    assert sim.memory("p4").fields.to_dict() == {p: p for p in sim.peers}
    _assert_all_checks(sim)


def test_gossip_routing_reaches_everyone() -> None:
    sim = Simulation(6, 2, routing="gossip", gossip_fanout=1, loss=0.1, reorder=True)
    used = _links_used(sim, 30)
    assert len(used) > 6
    sim.run_until_converged(1000)
    assert sim.memory("p5").fields.to_dict() == {p: p for p in sim.peers}
    _assert_all_checks(sim)


def test_batch_size_passes_through_to_the_replicas() -> None:
    counts = []
    for batch in (1, 512):
        sim = Simulation(2, 9, batch_size=batch)
        for i in range(20):
            sim.memory("p0").fields[f"k{i}"] = i
        sim.run_until_converged(100)
        counts.append(sim.stats.messages)
    assert counts[0] > counts[1] + 15


def test_not_converging_in_time_is_a_liveness_violation() -> None:
    sim = Simulation(2, 1)
    sim.partition([["p0"], ["p1"]])
    sim.memory("p0").fields["x"] = 1
    with pytest.raises(GuaranteeViolation, match="G1 liveness") as info:
        sim.run_until_converged(max_ticks=20)
    assert info.value.replay.startswith("python -m hybridsync.sim --seed 1")


def test_samples_record_each_tick() -> None:
    sim = Simulation(3, 2, sample=True)
    sim.partition([["p0"], ["p1", "p2"]])
    sim.memory("p0").fields["x"] = 1
    sim.run(5)
    assert sim.samples is not None and len(sim.samples) == 5
    last = sim.samples[-1]
    assert last.partitioned and last.distinct_states == 2 and last.max_divergence == 1
    assert last.time_ms == 50


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": 1.5}, "loss"),
        ({"loss": 0.1, "loss_probability": 0.1}, "not both"),
        ({"duplicate": -0.1}, "duplicate"),
        ({"routing": "ring"}, "routing"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_delay_ticks": 0}, "max_delay_ticks"),
        ({"peers": 0}, "peers"),
        ({"peers": ["a", "a"]}, "unique"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object], match: str) -> None:
    args = {"peers": 2, "seed": 1, **kwargs}
    with pytest.raises(ConfigError, match=match):
        Simulation(**args)  # type: ignore[arg-type]


def test_named_peers_and_bad_peer_names() -> None:
    sim = Simulation(["alice", "bob"], 1, loss_probability=0.1)
    assert sim.peers == ("alice", "bob") and sim.network.loss == 0.1
    with pytest.raises(ConfigError, match="unknown peer"):
        sim.isolate("carol")
    with pytest.raises(ConfigError, match="more than one group"):
        sim.partition([["alice"], ["alice", "bob"]])


def test_options_are_validated_and_round_trip_through_the_replay_command() -> None:
    from hybridsync.sim.__main__ import build_parser

    options = SimOptions.draw(42)
    assert options == SimOptions.draw(42)
    argv = options.to_argv()
    args = build_parser().parse_args(argv)
    again = SimOptions.draw(args.seed, **{k: getattr(args, k) for k in options.as_dict()
                                          if k != "seed"})
    assert again == options
    with pytest.raises(ConfigError):
        SimOptions(seed=1, loss=0.99)
    with pytest.raises(ConfigError, match="unknown option"):
        SimOptions.draw(1, colour="blue")


def test_the_fault_plan_depends_on_the_seed_only() -> None:
    peers = ["p0", "p1", "p2", "p3"]
    plan = plan_faults(5, peers, 200, partitions=True, crashes=True)
    assert plan == plan_faults(5, peers, 200, partitions=True, crashes=True)
    assert plan != plan_faults(6, peers, 200, partitions=True, crashes=True)
    actions = {f.action for f in plan}
    assert {"crash", "restart"} <= actions or "crash" not in actions
    assert [f.tick for f in plan] == sorted(f.tick for f in plan)
    assert plan_faults(5, peers, 200, partitions=False, crashes=False) == []


@pytest.mark.parametrize("seed", [3, 5, 8])
def test_a_run_is_deterministic(seed: int) -> None:
    options = SimOptions(seed=seed, peers=3, ticks=40, loss=0.1, duplicate=0.1, crashes=True,
                         partitions=True, write_rate=0.5)
    a, b = run(options, raise_on_violation=False), run(options, raise_on_violation=False)
    assert a.fingerprint is not None and b.fingerprint is not None
    assert a.stats == b.stats
    assert a.ops == b.ops and a.writes == b.writes and a.rolled_back == b.rolled_back
    if a.fingerprint.history != b.fingerprint.history:
        first = next(i for i, (x, y) in enumerate(
            zip(a.fingerprint.history, b.fingerprint.history, strict=False)) if x != y)
        pytest.fail(f"same seed, different history at {first}: "
                    f"{a.fingerprint.described[first]} vs {b.fingerprint.described[first]}")
    assert a.fingerprint == b.fingerprint
    assert a.violation == b.violation


def test_an_aborted_transaction_leaves_nothing_in_the_history() -> None:
    """Why the determinism test above has no escape for aborted transactions any more: an
    aborted transaction commits nothing (``Memory.transaction`` rebuilds the fields document
    and reverts region edits), so its old non-deterministic Yjs bytes cannot reach a history
    (regression: ``test_regressions.py::test_a_rollback_commits_the_same_bytes_every_time``;
    seeds 0-299 of that configuration replay byte for byte)."""
    options = SimOptions(seed=3, peers=3, ticks=40, loss=0.1, duplicate=0.1, crashes=True,
                         partitions=True, write_rate=0.5)
    result = run(options, raise_on_violation=False)
    assert result.fingerprint is not None
    assert result.rolled_back >= 1
    notes = result.fingerprint.described
    assert any("'transaction by " in d for d in notes)  # notes are there to be seen
    assert not any("'rollback by " in d for d in notes)


def test_scripted_faults_replace_the_drawn_plan() -> None:
    options = SimOptions(seed=4, peers=4, ticks=40, write_rate=0.5, crashes=False)
    faults = [Fault(5, "split", ("p0", "p1")), Fault(30, "heal"), Fault(10, "crash", ("p3",)),
              Fault(20, "restart", ("p3",))]
    result = run(options, faults=faults, sample=True, raise_on_violation=False)
    assert result.faults == faults
    assert result.stats is not None and result.stats.crashes == 1
    assert any(s.partitioned for s in result.samples)
    assert any(s.down == 1 for s in result.samples)


def test_random_prints_the_seed_and_drawn_options_first() -> None:
    import io

    out = io.StringIO()
    sim = Simulation.random(12, scale="small", out=out)
    options = SimOptions.draw(12, scale="small")
    assert out.getvalue() == f"seed=12 options: {options.describe()}\n"
    assert len(sim.peers) == options.peers and sim.routing == options.routing
    assert sim.replay_command == options.replay_command()
