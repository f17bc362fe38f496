"""Zero-size leaves (MJX's `physics.act` for actuators without activation state) in
checkpoints: not written (orbax refuses them), rebuilt from the restore template."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import struct

from crl import checkpoint
from crl.config import TrainConfig
from crl.run import TIMING_COLUMNS, train
from crl.run_dir import load_metrics


@struct.dataclass
class Physics:
    qpos: jax.Array
    act: jax.Array  # zero-size, as in MJX


@struct.dataclass
class State:
    physics: Physics
    params: dict
    replay: jax.Array


def make_state(value: float) -> State:
    return State(
        physics=Physics(qpos=jnp.full((3, 2), value), act=jnp.zeros((3, 0), jnp.float32)),
        params={"w": jnp.full((4,), value), "empty": jnp.zeros((0,), jnp.int32)},
        replay=jnp.full((5,), value),
    )


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("abstract", [False, True])
def test_zero_size_leaves_round_trip(tmp_path, abstract):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state(1.5), {"wall_time": 0.0}, include_replay=True)
    template = make_state(0.0)
    if abstract:  # as crl.run restores: ShapeDtypeStructs with shardings
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), template)
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        fields, meta = ckpt.restore_latest(template)
    assert meta["epoch"] == 1
    assert_trees_equal(State(**fields), make_state(1.5))


def test_zero_size_leaves_in_a_partial_restore(tmp_path):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state(2.0), {"wall_time": 0.0}, include_replay=True)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    target = {"params": jax.tree.map(abstract, make_state(0.0).params)}
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        restored = ckpt.restore_subtree(1, target)
    assert_trees_equal(restored, {"params": make_state(2.0).params})


# A tiny MJX run: reacher's physics state has a zero-size `act` leaf.
REACHER = TrainConfig(
    env="reacher", num_seeds=1, total_env_steps=3 * 4 * 10 + 4 * 20, num_epochs=3, num_envs=4,
    unroll_length=10, episode_length=20, batch_size=8, num_sgd_batches=1, replay_size=40,
    min_replay_size=20, width=16, depth=4, num_eval_envs=2, checkpoint_every=1,
    keep_checkpoints=3,
)


def comparable(run_dir: Path) -> pd.DataFrame:
    frame = load_metrics(run_dir).drop(columns=list(TIMING_COLUMNS))
    return frame.sort_values(["epoch", "seed"]).reset_index(drop=True)


@pytest.mark.slow
def test_mjx_run_checkpoints_and_resumes_exactly(tmp_path):
    summary = train(dataclasses.replace(REACHER, out_dir=str(tmp_path), run_name="ref"), quiet=True)
    reference = Path(summary["run_dir"])
    # Resume from epoch 2's checkpoint: drop the last one, as if the run had been killed.
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    shutil.rmtree(resumed / "checkpoints" / "3")
    train(None, quiet=True, resume=resumed)
    frame = comparable(resumed)
    assert list(frame.epoch) == [0, 1, 2]
    pd.testing.assert_frame_equal(comparable(reference), frame, check_exact=True)
