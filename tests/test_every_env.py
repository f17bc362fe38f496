"""Every registered env (picked up from the registry, so new names are tested automatically)
trains, checkpoints and resumes. One env per physics backend (jax point maze, MJX, brax) runs
the full path — 3 epochs checkpointed each epoch, the last checkpoint dropped, then a resume
that recomputes epoch 2 exactly — since one compiled training program per env would cost far
too much CI time on CPU (MJX compiles slowly); every other env gets the cheap check: reset,
steps, and a checkpoint save + restore of its real batched env state (its physics pytree,
zero-size leaves included)."""

from __future__ import annotations

import dataclasses
import shutil

import jax
import numpy as np
import pandas as pd
import pytest

import envs
from crl import checkpoint
from crl.config import TrainConfig
from crl.run import TIMING_COLUMNS, train
from crl.run_dir import load_metrics

FULL = {"point_u": "jax", "reacher": "mjx", "ant": "spring"}  # one env per physics backend
EPISODE = 20


def tiny(name: str, epochs: int, run_dir) -> TrainConfig:
    return TrainConfig(
        env=name, num_seeds=1, num_epochs=epochs, num_envs=2, unroll_length=10,
        episode_length=EPISODE, batch_size=8, num_sgd_batches=1, replay_size=30,
        min_replay_size=20, total_env_steps=2 * 10 * (2 + epochs), width=16, depth=4,
        num_eval_envs=2, checkpoint_every=1, keep_checkpoints=3, out_dir=str(run_dir.parent),
        run_name=run_dir.name, eval_env=name,
    )


def comparable(run_dir) -> pd.DataFrame:
    """The metrics rows without wall-clock columns, in (epoch, seed) order."""
    frame = load_metrics(run_dir).drop(columns=list(TIMING_COLUMNS))
    return frame.sort_values(["epoch", "seed"]).reset_index(drop=True)


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
@pytest.mark.parametrize("name", envs.names())
def test_env_trains_checkpoints_and_resumes(name, tmp_path):
    if name in FULL:
        run_dir = tmp_path / "run"
        train(tiny(name, 3, run_dir), quiet=True)
        uninterrupted = comparable(run_dir)
        # A run killed after epoch 2 was checkpointed: drop the last checkpoint, resume with the
        # run's own config, and epoch 2 is recomputed (its metrics row replaced, not doubled)
        # bit for bit — MJX's zero-size `act` leaf included.
        shutil.rmtree(run_dir / checkpoint.CHECKPOINT_DIR / "3")
        summary = train(None, quiet=True, resume=run_dir)
        frame = load_metrics(run_dir)
        assert list(frame.epoch) == [0, 1, 2]
        pd.testing.assert_frame_equal(comparable(run_dir), uninterrupted, check_exact=True)
        numbers = frame.drop(columns=list(TIMING_COLUMNS)).select_dtypes("number")
        assert np.isfinite(numbers.to_numpy()).all()
        assert np.isfinite(summary["time_at_goal"])
        assert envs.make(name).backend == FULL[name]
        return

    env = envs.make(name, episode_length=EPISODE)

    @jax.jit  # reset and 3 random steps as one program: one compile per env
    def rollout(rng):
        reset_rng, action_rng = jax.random.split(rng)
        state = jax.vmap(env.reset)(jax.random.split(reset_rng, 2))
        actions = jax.random.uniform(action_rng, (3, 2, env.action_size), minval=-1, maxval=1)
        return jax.lax.scan(lambda s, a: (jax.vmap(env.step)(s, a), None), state, actions)[0]

    state = rollout(jax.random.PRNGKey(0))
    assert state.obs.shape == (2, env.observation_size)
    assert np.isfinite(np.asarray(state.obs)).all() and np.all(np.asarray(state.step) == 3)
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, _Holder(env_state=state), {"wall_time": 0.0}, include_replay=True)
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _Holder(env_state=state))
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        fields, _ = ckpt.restore_latest(template)
    assert_trees_equal(fields["env_state"], state)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Holder:
    """A one-field stand-in for TrainState (Checkpointer saves a dataclass's fields)."""

    env_state: envs.EnvState
