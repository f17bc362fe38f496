"""Trajectory replay buffer and future-state goal relabelling, as pure functions over a pytree.

Storage is a time-major ring: every leaf is [capacity, num_envs, ...] and each `add` writes the
same time rows for all envs (they step in lock-step), so the rows of one env column are its
trajectory in order. Each transition stores its `step` index inside its episode; since episodes
have a fixed length, the remaining steps of an episode are known without scanning for boundaries.

Relabelling draws, per sampled transition, an offset Δ ≥ 1 from a geometric(1 − γ) distribution
truncated to the future steps of the same episode that are in the buffer — directly by inverse
CDF, with no T×T matrix.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

# Transitions whose episode has no later step stored are redrawn; this many draws per sample
# make a fallback practically never needed (P ≤ (1/episode_length)^CANDIDATES).
CANDIDATES = 4


@struct.dataclass
class ReplayState:
    """data: pytree of [capacity, num_envs, ...]; it must hold an int32 'step' leaf.
    insert_position: next ring row to write; size: rows filled so far (≤ capacity)."""

    data: Any
    insert_position: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]

    @property
    def num_envs(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[1]


def init(example: Any, capacity: int) -> ReplayState:
    """Empty buffer shaped after `example`, a pytree of per-step arrays [num_envs, ...]."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity,) + x.shape, x.dtype), example)
    return ReplayState(
        data=data, insert_position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32)
    )


def add(state: ReplayState, chunk: Any) -> ReplayState:
    """Append `chunk` (pytree of [unroll, num_envs, ...]) at the ring head, overwriting the oldest
    rows once full."""
    length = jax.tree.leaves(chunk)[0].shape[0]
    rows = (state.insert_position + jnp.arange(length)) % state.capacity
    data = jax.tree.map(lambda buf, new: buf.at[rows].set(new), state.data, chunk)
    return state.replace(
        data=data,
        insert_position=(state.insert_position + length) % state.capacity,
        size=jnp.minimum(state.size + length, state.capacity),
    )


def truncated_geometric(rng: jax.Array, discount: float, max_offset: jax.Array) -> jax.Array:
    """Offsets Δ ∈ {1, …, max_offset} with P(Δ) ∝ discount^(Δ−1), by inverse CDF.
    `max_offset` ≥ 1 (any shape); returns int32 of the same shape."""
    u = jax.random.uniform(rng, jnp.shape(max_offset))
    mass = 1.0 - discount ** max_offset.astype(jnp.float32)
    offset = 1 + jnp.floor(jnp.log1p(-u * mass) / jnp.log(discount)).astype(jnp.int32)
    return jnp.clip(offset, 1, max_offset)


def sample_with_future(
    state: ReplayState,
    rng: jax.Array,
    batch_size: int,
    discount: float,
    episode_length: int,
) -> tuple[Any, Any, jax.Array]:
    """Uniformly sampled transitions and, for each, a future transition of the same episode.

    Returns (transitions, futures, offsets): pytrees of [batch_size, ...] and the int32 offsets
    Δ ≥ 1 in time steps. Requires at least 3 filled rows and episode_length ≥ 2.
    """
    row_rng, env_rng, offset_rng = jax.random.split(rng, 3)
    oldest = (state.insert_position - state.size) % state.capacity
    # Logical rows 0..size-2: the newest row has no stored future.
    rows = jax.random.randint(row_rng, (CANDIDATES, batch_size), 0, state.size - 1)
    envs = jax.random.randint(env_rng, (CANDIDATES, batch_size), 0, state.num_envs)
    steps = state.data["step"][(oldest + rows) % state.capacity, envs]
    has_future = steps < episode_length - 1
    first_valid = jnp.argmax(has_future, axis=0)
    pick = lambda a: jnp.take_along_axis(a, first_valid[None], axis=0)[0]
    row, env, step, valid = pick(rows), pick(envs), pick(steps), pick(has_future)
    # Fallback when no candidate had a future (last step of an episode): its predecessor in the
    # same episode does, or at the very oldest row, the first step of the next episode.
    step = jnp.where(valid, step, jnp.where(row > 0, episode_length - 2, 0))
    row = jnp.where(valid, row, jnp.where(row > 0, row - 1, row + 1))
    max_offset = jnp.minimum(episode_length - 1 - step, state.size - 1 - row)
    offsets = truncated_geometric(offset_rng, discount, max_offset)
    now = (oldest + row) % state.capacity
    later = (oldest + row + offsets) % state.capacity
    transitions = jax.tree.map(lambda x: x[now, env], state.data)
    futures = jax.tree.map(lambda x: x[later, env], state.data)
    return transitions, futures, offsets
