"""Trajectory replay buffer and future-state goal relabelling, as pure functions over a pytree.

Storage is a time-major ring: every leaf is [capacity, num_envs, ...] and each `add` writes the
same time rows for all envs (they step in lock-step), so the rows of one env column are its
trajectory in order. Each transition stores its `step` index inside its episode; episodes end at
the time limit or earlier (termination), and where one ends is found from these indices by a
binary search (`episode_end`), without scanning for boundaries.

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
# make a fallback practically never needed (P = (fraction of rows that end an episode)^CANDIDATES).
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


def episode_end(state: ReplayState, rows: jax.Array, envs: jax.Array) -> jax.Array:
    """The last stored logical row of the episode that holds logical row `rows` of env column
    `envs` (int32, same shape), by binary search: along a column, logical row − step is the
    row where the episode started, constant within an episode and strictly increasing from one
    episode to the next, so the episode's rows are those with a start ≤ this one's at or after
    `rows`. ⌈log2(capacity)⌉ + 1 gathers per row, whatever the episode lengths."""
    oldest = (state.insert_position - state.size) % state.capacity

    def start_of(r):
        return r - state.data["step"][(oldest + r) % state.capacity, envs]

    start = start_of(rows)

    def halve(_, bounds):
        lo, hi = bounds  # invariant: row lo is in the episode; the last row is in [lo, hi]
        mid = (lo + hi + 1) // 2
        inside = start_of(mid) <= start
        return jnp.where(inside, mid, lo), jnp.where(inside, hi, mid - 1)

    iterations = max(1, state.capacity - 1).bit_length() + 1
    last, _ = jax.lax.fori_loop(
        0, iterations, halve, (rows, jnp.broadcast_to(state.size - 1, rows.shape))
    )
    return last


def sample_with_future(
    state: ReplayState,
    rng: jax.Array,
    batch_size: int,
    discount: float,
) -> tuple[Any, Any, jax.Array]:
    """Uniformly sampled transitions and, for each, a future transition of the same episode.

    Episodes may have any length (time limit or early termination): each transition's episode
    end is found from the stored `step` indices (`episode_end`). Returns (transitions, futures,
    offsets): pytrees of [batch_size, ...] and the int32 offsets Δ ≥ 1 in time steps. Requires
    at least 3 filled rows.
    """
    row_rng, env_rng, offset_rng = jax.random.split(rng, 3)
    oldest = (state.insert_position - state.size) % state.capacity
    step_at = lambda r, e: state.data["step"][(oldest + r) % state.capacity, e]
    # Logical rows 0..size-2: the newest row has no stored future. A row has a future in its
    # episode iff the next row continues the count (a new episode restarts at step 0).
    rows = jax.random.randint(row_rng, (CANDIDATES, batch_size), 0, state.size - 1)
    envs = jax.random.randint(env_rng, (CANDIDATES, batch_size), 0, state.num_envs)
    steps = step_at(rows, envs)
    has_future = step_at(rows + 1, envs) == steps + 1
    first_valid = jnp.argmax(has_future, axis=0)
    pick = lambda a: jnp.take_along_axis(a, first_valid[None], axis=0)[0]
    row, env, step, valid = pick(rows), pick(envs), pick(steps), pick(has_future)
    # Fallback when no candidate had a future (the last step of an episode): its predecessor
    # in the same episode has one; where there is none stored (a one-step episode, or the
    # oldest row), the next row — which may start another episode: practically never needed.
    row = jnp.where(valid, row, jnp.where((step > 0) & (row > 0), row - 1, row + 1))
    max_offset = jnp.clip(episode_end(state, row, env) - row, 1, state.size - 1 - row)
    offsets = truncated_geometric(offset_rng, discount, max_offset)
    now = (oldest + row) % state.capacity
    later = (oldest + row + offsets) % state.capacity
    transitions = jax.tree.map(lambda x: x[now, env], state.data)
    futures = jax.tree.map(lambda x: x[later, env], state.data)
    return transitions, futures, offsets
