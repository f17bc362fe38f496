"""Stepping a batch of envs with auto-reset that costs a reset only when an episode ends.

`jax.vmap(env.step)` computes a full reset (physics init, observation, goal) for every env on
every step and then selects, because a vmapped branch evaluates both sides. Here the batch is
stepped without resets, and resets are computed under a batch-level `lax.cond` — a real branch —
only on steps where some env finished:

- Envs whose episodes end only at the time limit finish together (they all start at step 0 and
  step in lock-step), so the reset is paid once per episode instead of once per step. The fresh
  states are exactly those of `env.step` (same keys), so results are bit-identical to
  `jax.vmap(env.step)`.
- Envs that terminate early finish at any step, so any step may need a reset somewhere in a large
  batch. For them `prepare_spares` computes one fresh start per env at the start of an unroll
  (one batched reset per unroll instead of per step); an env that finishes takes its spare, and
  only an env that finishes a second time in the same unroll makes the step fall back to a
  batched reset. Every new episode still gets its own freshly sampled start and goal.

Under an outer `jax.vmap` (crl vmaps the whole program over seeds) a `lax.cond` whose predicate
differs per vmapped element becomes a select that evaluates both branches. Pass that vmap's
`axis_name`: the "did any env finish" test is then reduced over it too, and stays a real branch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.base import EnvState, GoalEnv


@struct.dataclass
class Spares:
    """Fresh starts prepared for a batch of envs: `state` is batched like the envs' state and
    `available[i]` says whether env i's spare is still unused."""

    state: EnvState
    available: jax.Array


def _where(mask: jax.Array, a, b):
    """Per-env select over batched pytrees (mask has shape [num_envs])."""
    def select(x, y):
        return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, y)

    return jax.tree.map(select, a, b)


def prepare_spares(env: GoalEnv, env_state: EnvState) -> tuple[EnvState, Spares]:
    """One fresh start per env, from keys split off each env's rng (which advances)."""
    keys = jax.vmap(jax.random.split)(env_state.rng)  # [num_envs, 2, ...]
    spares = Spares(state=jax.vmap(env.reset)(keys[:, 0]), available=jnp.ones(keys.shape[:1], bool))
    return env_state.replace(rng=keys[:, 1]), spares


def any_finished(flags: jax.Array, axis_name: str | None) -> jax.Array:
    """`jnp.any(flags)`, also reduced over the vmapped axis `axis_name` when a vmap binds it (a
    predicate equal across that axis keeps `lax.cond` a branch instead of a select)."""
    found = jnp.any(flags)
    if axis_name is None:
        return found
    try:
        return jax.lax.psum(found.astype(jnp.int32), axis_name) > 0
    except NameError:  # not traced under a vmap that names the axis: one program, one batch
        return found


def uses_spares(env: GoalEnv) -> bool:
    """Spares pay off only where episodes end at different steps (early termination)."""
    return bool(env.terminate_when_unhealthy)


def step(
    env: GoalEnv, env_state: EnvState, action: jax.Array, spares: Spares | None = None,
    axis_name: str | None = None,
) -> tuple[EnvState, Spares | None]:
    """Step a batch of envs ([num_envs, ...]) with auto-reset; same semantics as
    `jax.vmap(env.step)`: a finished env's returned state is a fresh episode carrying the last
    state's `done` and `metrics`. Returns the new states and the spares left. `axis_name`: the
    outer vmap's axis (seeds), if any (see the module docstring)."""
    keys = jax.vmap(jax.random.split)(env_state.rng)
    reset_rngs = keys[:, 0]
    stepped = jax.vmap(env.step_without_reset)(env_state, action).replace(rng=keys[:, 1])
    finished = stepped.done
    available = jnp.zeros_like(finished) if spares is None else spares.available

    def reset_finished(stepped: EnvState) -> EnvState:
        def fresh_batch():
            fresh = jax.vmap(env.reset)(reset_rngs)
            return fresh if spares is None else _where(available, spares.state, fresh)

        # Spares cover every finished env unless one finished twice in this unroll.
        fresh = (
            fresh_batch()
            if spares is None
            else jax.lax.cond(
                any_finished(finished & ~available, axis_name), fresh_batch, lambda: spares.state)
        )
        fresh = fresh.replace(done=stepped.done, metrics=stepped.metrics)
        return _where(finished, fresh, stepped)

    new_state = jax.lax.cond(
        any_finished(finished, axis_name), reset_finished, lambda s: s, stepped)
    if spares is not None:
        spares = spares.replace(available=available & ~finished)
    return new_state, spares
