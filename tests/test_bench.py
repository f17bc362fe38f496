"""Benchmark module: the loop-of-blocks reference computes the scan network's function, the
analytic FLOP count matches a hand count, and the benchmark runs end to end at tiny sizes and
writes JSON with the expected keys. No timing assertions."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.networks import Actor, Critic, NetworkConfig, ResidualMLP
from experiments import bench

TINY = dict(width=16, batch_size=16, unroll_length=10, sgd_steps=2, repeats=1)


@pytest.mark.parametrize("remat", [False, True])
@pytest.mark.parametrize("residual", [True, False])
def test_loop_network_equals_scan_network(remat, residual):
    config = NetworkConfig(width=16, depth=12, remat=remat, residual=residual)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
    params = ResidualMLP(config, 3).init(jax.random.PRNGKey(1), x)
    loop_params = bench.loop_params_from_scan(params)
    assert sorted(loop_params["params"]) == ["block_0", "block_1", "block_2", "input", "output"]
    expected = ResidualMLP(config, 3).apply(params, x)
    got = bench.LoopResidualMLP(config, 3).apply(loop_params, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_loop_critic_and_actor_equal_scan_ones():
    config = NetworkConfig(width=16, depth=8)
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    state, action, goal = (jax.random.normal(k, (6, n)) for k, n in zip(keys[:3], (4, 2, 3)))
    critic_params = Critic(config, 8).init(keys[3], state, action, goal)
    expected = Critic(config, 8).apply(critic_params, state, action, goal)
    got = bench.LoopCritic(config, 8).apply(
        bench.loop_params_from_scan(critic_params), state, action, goal
    )
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    actor_params = Actor(config, 2).init(keys[4], state, goal)
    expected = Actor(config, 2).apply(actor_params, state, goal)
    got = bench.LoopActor(config, 2).apply(bench.loop_params_from_scan(actor_params), state, goal)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_loop_agent_update_matches_scan_agent():
    """One full update (critic, actor, α) of the loop agent equals the scan agent's."""
    cfg = bench.BenchConfig(**TINY)
    scan = bench.make_bench_trainer(bench.learner_config(cfg, 8)).agent
    loop = bench.make_bench_trainer(bench.learner_config(cfg, 8), "loop").agent
    assert isinstance(loop, bench.LoopAgent)
    state = scan.init(jax.random.PRNGKey(0))
    loop_state = state.replace(
        actor_params=bench.loop_params_from_scan(state.actor_params),
        critic_params=bench.loop_params_from_scan(state.critic_params),
        actor_opt=loop.init(jax.random.PRNGKey(0)).actor_opt,
        critic_opt=loop.init(jax.random.PRNGKey(0)).critic_opt,
    )
    batch = bench.random_batch(scan, 16, jax.random.PRNGKey(1))
    new_scan, metrics_scan = jax.jit(scan.update)(state, batch, jax.random.PRNGKey(2))
    new_loop, metrics_loop = jax.jit(loop.update)(loop_state, batch, jax.random.PRNGKey(2))
    for name in ("critic_loss", "actor_loss", "alpha"):
        np.testing.assert_allclose(metrics_loop[name], metrics_scan[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        bench.loop_params_from_scan(new_scan.critic_params)["params"]["sa_encoder"]["block_1"]
        ["DenseNormAct_0"]["Dense_0"]["kernel"],
        new_loop.critic_params["params"]["sa_encoder"]["block_1"]["DenseNormAct_0"]["Dense_0"]["kernel"],
        rtol=1e-4, atol=1e-6,
    )


def test_analytic_flops_match_hand_count():
    agent = bench.CRLAgent(
        state_size=3, goal_size=2, action_size=2,
        actor_network=NetworkConfig(width=8, depth=4),
        critic_network=NetworkConfig(width=8, depth=4),
        repr_size=4,
    )
    # Forward, batch 5, 2 FLOPs per multiply-add:
    #   φ(s,a): in 5 → 8, four 8×8 blocks layers, 8 → 4: 2·5·(40 + 256 + 32) = 3280
    #   ψ(g):   in 2 → 8, …, 8 → 4:                      2·5·(16 + 256 + 32) = 3040
    #   actor:  in 5 → 8, …, 8 → 2·2:                    2·5·(40 + 256 + 32) = 3280
    assert bench.mlp_matmul_flops(5, 5, 8, 4, 4) == 3280
    flops = bench.update_matmul_flops(agent, batch_size=5)
    assert flops["critic_step"] == 3 * (3280 + 3040)
    assert flops["actor_step"] == 3 * 3280 + 2 * 3280 + 3040
    # The update's actor step reuses the critic step's ψ(g): one goal-encoder forward fewer.
    assert flops["total"] == 18960 + 19440 - 3040


def test_bench_config_rejects_bad_input():
    with pytest.raises(ValueError, match="compile_depths"):
        bench.check_bench_config(bench.BenchConfig(compile_depths=(6,)))
    with pytest.raises(ValueError, match="unknown env"):
        bench.check_bench_config(bench.BenchConfig(env_names=("nope",)))


def test_bench_smoke_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    cfg = bench.BenchConfig(
        **TINY,
        sections=("throughput",),
        throughput_depths=(4,),
        out=str(out),
        markdown=str(tmp_path / "bench.md"),
    )
    bench.run(cfg)
    results = json.loads(out.read_text())
    assert set(results) >= {"command", "config", "machine", "sections", "section_seconds"}
    assert set(results["sections"]) == {"throughput"}
    row = results["sections"]["throughput"]["rows"][0]
    assert row["sgd_steps_per_s"] > 0 and row["matmul_flops_per_s"] > 0 and row["finite"]
    assert row["matmul_flops_per_step"] == bench.update_matmul_flops(
        bench.make_bench_trainer(bench.learner_config(bench.BenchConfig(**TINY), 4)).agent, 16
    )["total"]
    assert "| depth |" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_bench_smoke_env_and_seeds_sections(tmp_path):
    out = tmp_path / "bench.json"
    cfg = bench.BenchConfig(
        **TINY,
        sections=("env", "seeds"),
        num_envs=(4,),
        e2e_num_sgd_batches=2,
        num_seeds=2,
        seeds_epochs=1,
        out=str(out),
        markdown=str(tmp_path / "bench.md"),
    )
    bench.run(cfg)
    results = json.loads(out.read_text())
    assert set(results["sections"]) == {"env", "seeds"}
    env_row = results["sections"]["env"][0]
    assert {"env_only", "collection", "end_to_end"} <= set(env_row)
    assert min(env_row["env_only"], env_row["collection"], env_row["end_to_end"]) > 0
    seeds = results["sections"]["seeds"]
    assert seeds["speedup_run"] > 0 and seeds["num_seeds"] == 2
    assert seeds["vmapped"]["run_s"] > 0 and seeds["sequential_run_s"] > 0
    assert "| env |" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_bench_smoke_subprocess_and_precision_sections(tmp_path):
    out = tmp_path / "bench.json"
    cfg = bench.BenchConfig(
        **TINY,
        sections=("compile", "memory", "precision"),
        compile_depths=(4,),
        loop_max_depth=4,
        memory_depths=(4,),
        memory_batch_sizes=(16,),
        fit_batch_size=16,
        fit_width=16,
        fit_depths=(4, 8),
        memory_cap_gib=8.0,
        precision_depth=4,
        learning_env_steps=2_000,
        learning_epochs=1,
        learning_num_envs=4,
        learning_min_replay_size=100,
        out=str(out),
    )
    bench.run(cfg)
    results = json.loads(out.read_text())["sections"]
    compile_rows = {row["network"]: row for row in results["compile"]}
    for network in ("scan", "loop"):
        for program in ("step", "epoch"):
            assert compile_rows[network][program]["total_s"] > 0
    grid = results["memory"]["grid"]
    assert len(grid) == 2 and all(r["ran"] and r["peak_bytes"] > 0 and r["finite"] for r in grid)
    assert results["memory"]["fit"][0]["largest_depth"] == 8
    precision = results["precision"]
    assert set(precision["learning"]) == {"float32", "bfloat16"}
    assert precision["speed"]["bfloat16"]["finite"]
