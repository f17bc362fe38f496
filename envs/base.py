"""The goal-conditioned environment interface shared by every env in the registry.

An env is a set of pure functions over a single environment's `EnvState`; callers `jax.vmap`
them over a batch of envs. An episode ends at the time limit (`episode_length`) or, where the
env has `terminate_when_unhealthy` set, as soon as `is_unhealthy` holds for the state reached
(e.g. a fallen ant or humanoid, as in the references). When an episode ends, `step` auto-resets
inside the same call to a fresh start *and a freshly sampled goal* (the public CRL code kept
the first goal forever); `envs.vector.step` does the same for a batch without computing a reset
for every env on every step.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class EnvState:
    """State of one environment.

    Attributes:
      obs: the observation the agent acts on, `state ⊕ goal`, shape [state_size + goal_size].
      goal: the goal of the current episode, shape [goal_size].
      physics: env-specific simulator state (any pytree).
      step: int32 index of `obs` inside its episode, in [0, episode_length).
      done: bool, True when the last `step` call ended an episode, at the time limit or by
        termination (so `obs` is a fresh start).
      rng: key consumed by the next auto-reset.
      metrics: per-step quantities of the state reached by the last action, before any
        auto-reset: 'distance' to the goal and 'at_goal' (distance < goal_radius, float32).
    """

    obs: jax.Array
    goal: jax.Array
    physics: Any
    step: jax.Array
    done: jax.Array
    rng: jax.Array
    metrics: dict[str, jax.Array]


class GoalEnv(abc.ABC):
    """Base class: subclasses describe their physics, the base class does goals, time limit and
    auto-reset so every env behaves identically there.

    Subclasses set the class/instance attributes below and implement `init_physics`,
    `sample_goal`, `physics_step` and `observe`.
    """

    name: str
    state_size: int  # size of the state part of the observation
    goal_size: int
    action_size: int  # actions live in [-1, 1]^action_size
    goal_indices: tuple[int, ...]  # indices of the state that a goal is compared with
    goal_radius: float = 0.5
    episode_length: int = 1000
    backend: str = "jax"
    # End the episode as soon as `is_unhealthy` holds (the references do for ant and humanoid).
    terminate_when_unhealthy: bool = False

    # ---- to implement -------------------------------------------------------------------------
    @abc.abstractmethod
    def init_physics(self, rng: jax.Array) -> Any:
        """A random start state of the simulator."""

    @abc.abstractmethod
    def sample_goal(self, rng: jax.Array, physics: Any) -> jax.Array:
        """A goal, shape [goal_size], for an episode starting from `physics`."""

    @abc.abstractmethod
    def physics_step(self, physics: Any, action: jax.Array, goal: jax.Array) -> Any:
        """Advance the simulator by one agent step (the goal is given for envs that show it)."""

    @abc.abstractmethod
    def observe(self, physics: Any) -> jax.Array:
        """The state part of the observation, shape [state_size]."""

    def is_unhealthy(self, physics: Any) -> jax.Array:
        """Whether `physics` is a failed state that ends the episode when
        `terminate_when_unhealthy` is set (bool scalar). Default: never."""
        del physics
        return jnp.zeros((), bool)

    # ---- provided -----------------------------------------------------------------------------
    @property
    def has_health_check(self) -> bool:
        """Whether this env defines a failed state (`is_unhealthy`), so early termination can
        be switched on or off."""
        return type(self).is_unhealthy is not GoalEnv.is_unhealthy

    def maze_grid(self) -> tuple[np.ndarray, float] | None:
        """(wall mask [rows, cols], cell size) for envs whose goal space starts with a position
        in a grid maze (`envs.maze_layouts` conventions), else None. Used to measure how much
        of the maze a collector visits (`crl.diagnostics`)."""
        return None

    @property
    def observation_size(self) -> int:
        return self.state_size + self.goal_size

    def achieved_goal(self, state: jax.Array) -> jax.Array:
        """The goal-space part of a state vector (works on any leading batch shape)."""
        return state[..., jnp.asarray(self.goal_indices)]

    def goal_distance(self, state: jax.Array, goal: jax.Array) -> jax.Array:
        return jnp.linalg.norm(self.achieved_goal(state) - goal, axis=-1)

    def reset(self, rng: jax.Array) -> EnvState:
        """Start a new episode with a fresh start state and a fresh goal."""
        physics_rng, goal_rng, next_rng = jax.random.split(rng, 3)
        physics = self.init_physics(physics_rng)
        goal = self.sample_goal(goal_rng, physics)
        state = self.observe(physics)
        distance = self.goal_distance(state, goal)
        return EnvState(
            obs=jnp.concatenate([state, goal]),
            goal=goal,
            physics=physics,
            step=jnp.zeros((), jnp.int32),
            done=jnp.zeros((), bool),
            rng=next_rng,
            metrics={
                "distance": distance,
                "at_goal": (distance < self.goal_radius).astype(jnp.float32),
            },
        )

    def step_without_reset(self, env_state: EnvState, action: jax.Array) -> EnvState:
        """One agent step that never resets: when it ends the episode (`done`), the returned
        state is the episode's last state. `rng` is left for the caller's auto-reset."""
        action = jnp.clip(action, -1.0, 1.0)
        physics = self.physics_step(env_state.physics, action, env_state.goal)
        state = self.observe(physics)
        distance = self.goal_distance(state, env_state.goal)
        next_step = env_state.step + 1
        done = next_step >= self.episode_length
        if self.terminate_when_unhealthy:
            done = done | self.is_unhealthy(physics)
        return EnvState(
            obs=jnp.concatenate([state, env_state.goal]),
            goal=env_state.goal,
            physics=physics,
            step=next_step,
            done=done,
            rng=env_state.rng,
            metrics={
                "distance": distance,
                "at_goal": (distance < self.goal_radius).astype(jnp.float32),
            },
        )

    def step(self, env_state: EnvState, action: jax.Array) -> EnvState:
        """One agent step; when it ends the episode the returned state is a fresh episode (with
        the last state's `done` and `metrics`). Under `jax.vmap` this computes a reset for every
        env on every step; `envs.vector.step` is the batched equivalent that does not."""
        reset_rng, next_rng = jax.random.split(env_state.rng)
        stepped = self.step_without_reset(env_state, action).replace(rng=next_rng)
        fresh = self.reset(reset_rng).replace(done=stepped.done, metrics=stepped.metrics)
        return jax.tree.map(lambda a, b: jnp.where(stepped.done, a, b), fresh, stepped)
