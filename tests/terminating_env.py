"""A point maze whose episodes end early at pseudo-random places, for tests of early
termination (variable-length episodes in replay, first-episode evaluation, resume).

`is_unhealthy` is a deterministic function of the position that holds on ~14% of steps, so
episodes have lengths of 1 to episode_length and (nearly) geometric in between."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import jax
import jax.numpy as jnp

from envs import registry
from envs.point_maze import PointMaze, make_u

NAME = "point_u_terminating"


class TerminatingPointMaze(PointMaze):
    terminate_when_unhealthy = True

    def is_unhealthy(self, physics: jax.Array) -> jax.Array:
        # sin of a fast-varying function of (x, y): P(sin > 0.9) = 0.144 for a "random" phase.
        return jnp.sin(997.0 * physics[0] * physics[1] + 313.0 * physics[0]) > 0.9


def make(**overrides: Any) -> TerminatingPointMaze:
    env = make_u(**overrides)
    env.__class__ = TerminatingPointMaze  # same state, only the termination rule added
    return env


@contextlib.contextmanager
def registered(name: str = NAME, factory: str = f"{__name__}:make") -> Iterator[str]:
    """`name` registered for the duration (importable as `terminating_env`: pytest puts tests/
    on sys.path)."""
    registry.register(name, factory)
    try:
        yield name
    finally:
        registry.unregister(name)
