"""The training loop learns on the pure-JAX maze, and its pieces keep their contracts."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from crl import run_dir
from crl.config import TrainConfig
from crl.run import train
from crl.train import SEED_AXIS, make_trainer, over_seeds

TINY = TrainConfig(
    env="point_u",
    width=32,
    batch_size=32,
    num_envs=4,
    num_sgd_batches=2,
    unroll_length=10,
    min_replay_size=20,
    replay_size=100,
    total_env_steps=4 * 10 * (2 + 2),
    num_epochs=2,
    num_eval_envs=4,
    episode_length=20,
)


def test_epoch_advances_counters_and_fills_the_buffer():
    trainer = make_trainer(TINY)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    assert int(state.replay.size) == TINY.prefill_unrolls * TINY.unroll_length
    assert int(state.env_steps) == TINY.prefill_unrolls * TINY.env_steps_per_iteration
    before = state.agent.critic_params
    state, metrics = jax.jit(trainer.run_epoch)(state)
    assert int(state.iteration) == TINY.iterations_per_epoch
    assert int(state.replay.size) == (TINY.prefill_unrolls + TINY.iterations_per_epoch) * TINY.unroll_length
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, state.agent.critic_params)
    assert all(jax.tree.leaves(changed))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    # Stored steps count 0..episode_length-1 per env: the relabelling contract.
    steps = np.asarray(state.replay.data["step"][: int(state.replay.size)])
    assert steps.min() == 0 and steps.max() == TINY.episode_length - 1
    np.testing.assert_array_equal((steps[1:] - steps[:-1]) % TINY.episode_length, 1)


def test_evaluation_counts_steps_at_goal():
    trainer = make_trainer(TINY)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    metrics = jax.jit(trainer.evaluate, static_argnames="random_policy")(
        state.agent.actor_params, jax.random.PRNGKey(1), random_policy=True
    )
    assert 0 <= float(metrics["time_at_goal"]) <= TINY.episode_length
    assert 0 <= float(metrics["success"]) <= 1
    assert float(metrics["min_distance"]) <= float(metrics["final_distance"])


def test_one_seed_runs_unbatched_and_matches_the_seed_vmap():
    """over_seeds with one seed calls the function on the seed's arguments directly (no vmap to
    trace through) and gives what the seed vmap gives, seed axis included; with two it vmaps."""
    batched = []

    def fn(x, offset):
        batched.append(isinstance(x, jax.core.Tracer))
        return {"total": x.sum() + offset, "x": x}

    one, two = jnp.arange(6.0).reshape(1, 2, 3), jnp.arange(12.0).reshape(2, 2, 3)
    for seeds, traced in ((one, False), (two, True)):
        got = over_seeds(fn, in_axes=(0, None))(seeds, 1.0)
        assert batched.pop() is traced
        want = jax.vmap(fn, in_axes=(0, None), axis_name=SEED_AXIS)(seeds, 1.0)
        same = jax.tree.map(lambda a, b: a.shape == b.shape and bool(jnp.all(a == b)), got, want)
        assert all(jax.tree.leaves(same)), same
    # A real epoch: one seed unbatched against the same seed vmapped, to float rounding.
    trainer = make_trainer(TINY)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    results = []
    for wrap in (over_seeds, lambda f: jax.vmap(f, axis_name=SEED_AXIS)):
        state = jax.jit(wrap(trainer.init))(keys)
        results.append(jax.jit(wrap(trainer.run_epoch))(state))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *results)


@pytest.mark.slow
def test_short_run_learns_well_above_a_random_policy(tmp_path):
    config = TrainConfig(
        env="point_u",
        width=64,
        batch_size=128,
        num_envs=32,
        num_sgd_batches=16,
        unroll_length=50,
        min_replay_size=200,
        total_env_steps=192_000,
        num_epochs=8,
        num_eval_envs=32,
        out_dir=str(tmp_path),
        run_name="learn",
    )
    summary = train(config, quiet=True)
    random_tag = summary["random_time_at_goal"]  # same envs, uniformly random actions
    assert summary["time_at_goal"] > max(10.0, 5 * random_tag), summary
    metrics = run_dir.load_metrics(tmp_path / "learn")
    assert len(metrics) == config.num_epochs
    assert metrics["env_steps"].is_monotonic_increasing
    csv = pd.read_csv(tmp_path / "learn" / run_dir.METRICS_CSV)
    assert list(csv["epoch"]) == list(range(config.num_epochs))
