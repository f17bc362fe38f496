"""Zero-size leaves (MJX's `physics.act` for actuators without activation state) in
checkpoints: not written (orbax refuses them), rebuilt from the restore template."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from crl import checkpoint


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


# The end-to-end MJX run (reacher: zero-size `act`) that checkpoints and resumes bit for bit is
# tests/test_every_env.py's reacher case.
