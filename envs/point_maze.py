"""A point mass in a 2-D maze: the fast pure-JAX goal-conditioned env used for all CPU work.

Layouts come from `envs.maze_layouts` (one maze cell = `cell_size` world units, x grows with
the column, y grows upward, row 0 at the top, see `maze_layouts.cell_center`).

State / goal / action:
  state = [x, y, vx, vy] (state_size 4), goal = (x, y) (goal_size 2, goal_indices (0, 1)),
  action in [-1, 1]^2 is a *velocity target* (scaled by `max_speed`, its norm clipped to
  `max_speed`). The velocity follows the target with a first-order lag,
  `v ← v + velocity_gain · (target − v)`, i.e. a damped point mass with inertia: the velocity
  is part of the state and matters, yet the controls stay well conditioned (letting go of the
  stick brakes), which learns more reliably than raw accelerations.

Walls: the position moves by `v · dt`, first along x then along y. An axis move whose end point
lies in a wall cell (or off the grid) is clamped to the edge of the current cell and that
velocity component is zeroed. `max_speed · dt < cell_size` (checked at construction) so one move
changes the cell index by at most one along each axis: the point cannot tunnel through a wall
cell, and after every step it lies in a free cell.

Episodes: the start is a uniformly chosen 'R' cell centre plus a small uniform jitter
(±`start_noise` of a cell) at rest; the goal is uniform inside a uniformly chosen 'G' cell.

Defaults, and why:
  cell_size 1.0, dt 0.1, max_speed 2.0 → at most 0.2 cells per step.
  goal_radius 0.25 (a quarter cell). The paper's 0.5 is for ~4-unit ant-maze cells (1/8 of a
  cell) around a body with a size; for a zero-size point a quarter cell keeps the target area
  small (≈0.2 cell², random policies rarely sit in it) while the agent can stop inside it in
  one or two steps (its diameter, 0.5, exceeds the 0.2 max step).
  episode_length per maze (open 100, u 100, big 150, hardest 200): the longest shortest path
  from the start to a goal cell is 6 / 6 / 11 / 15 cells, i.e. 30 / 30 / 55 / 75 steps at full
  speed, so every goal fits well inside an episode while episodes stay short for CPU training.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from envs import maze_layouts
from envs.base import GoalEnv

# Keep clamped points this far (in cells) inside their cell so `floor` never rounds them out.
_EDGE_MARGIN = 1e-3


@dataclasses.dataclass(frozen=True)
class PointMazeConfig:
    """Everything that defines a point-maze env; factories override fields by keyword."""

    layout: str = "open"  # a key of maze_layouts.LAYOUTS
    episode_length: int = 100
    goal_radius: float = 0.25
    cell_size: float = 1.0
    dt: float = 0.1
    max_speed: float = 2.0  # world units per second
    velocity_gain: float = 0.5  # fraction of the gap to the target velocity closed per step
    start_noise: float = 0.1  # start jitter, in cells, uniform in ±start_noise around the centre

    def validate(self) -> None:
        """Raise ValueError with a one-line reason if the config is unusable."""
        if self.layout not in maze_layouts.LAYOUTS:
            raise ValueError(
                f"unknown maze layout {self.layout!r}; known: {', '.join(maze_layouts.LAYOUTS)}"
            )
        if not (isinstance(self.episode_length, int) and self.episode_length >= 1):
            raise ValueError(f"episode_length must be an int >= 1, got {self.episode_length!r}")
        for field in ("goal_radius", "cell_size", "dt", "max_speed"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0, got {getattr(self, field)!r}")
        if not 0 < self.velocity_gain <= 1:
            raise ValueError(f"velocity_gain must be in (0, 1], got {self.velocity_gain!r}")
        if not 0 <= self.start_noise < 0.5:
            raise ValueError(f"start_noise must be in [0, 0.5), got {self.start_noise!r}")
        if self.max_speed * self.dt >= self.cell_size * (1 - 2 * _EDGE_MARGIN):
            raise ValueError(
                f"max_speed*dt ({self.max_speed * self.dt}) must be below cell_size "
                f"({self.cell_size}) or the point could tunnel through a wall"
            )


class PointMaze(GoalEnv):
    """Point mass with inertia in a walled maze; physics is the float32 array [x, y, vx, vy]."""

    state_size = 4
    goal_size = 2
    action_size = 2
    goal_indices = (0, 1)
    backend = "jax"

    def __init__(self, config: PointMazeConfig):
        config.validate()
        self.config = config
        self.name = f"point_{config.layout}"
        self.episode_length = config.episode_length
        self.goal_radius = config.goal_radius
        layout = maze_layouts.LAYOUTS[config.layout]
        walls = maze_layouts.wall_mask(layout)
        self.rows, self.cols = walls.shape
        # Flattened so a wall lookup is one 1-D gather (row * cols + col).
        self._walls_flat = jnp.asarray(walls.reshape(-1))
        start_cells = maze_layouts.cells(layout, "R")
        goal_cells = maze_layouts.cells(layout, "G")
        self._start_centers = jnp.asarray(
            maze_layouts.cell_center(start_cells, config.cell_size), jnp.float32
        )
        self._goal_centers = jnp.asarray(
            maze_layouts.cell_center(goal_cells, config.cell_size), jnp.float32
        )
        self._wall_mask = walls  # numpy copy for tests and plotting

    # ---- helpers ------------------------------------------------------------------------------
    def is_wall(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """True where world point (x, y) lies in a wall cell or off the grid."""
        col = jnp.floor(x / self.config.cell_size).astype(jnp.int32)
        row = jnp.floor(-y / self.config.cell_size).astype(jnp.int32)
        inside = (row >= 0) & (row < self.rows) & (col >= 0) & (col < self.cols)
        flat = jnp.clip(row, 0, self.rows - 1) * self.cols + jnp.clip(col, 0, self.cols - 1)
        return ~inside | self._walls_flat[flat]

    def wall_mask(self) -> np.ndarray:
        """Boolean [rows, cols] wall grid of this maze (True = wall)."""
        return self._wall_mask.copy()

    def maze_grid(self) -> tuple[np.ndarray, float]:
        return self.wall_mask(), self.config.cell_size

    # ---- GoalEnv ------------------------------------------------------------------------------
    def init_physics(self, rng: jax.Array) -> jax.Array:
        """At rest near the centre of a uniformly chosen start cell."""
        cell_rng, noise_rng = jax.random.split(rng)
        center = jax.random.choice(cell_rng, self._start_centers)
        noise = self.config.start_noise * self.config.cell_size
        position = center + jax.random.uniform(noise_rng, (2,), minval=-noise, maxval=noise)
        return jnp.concatenate([position, jnp.zeros(2)]).astype(jnp.float32)

    def sample_goal(self, rng: jax.Array, physics: Any) -> jax.Array:
        """Uniform inside a uniformly chosen goal cell."""
        cell_rng, offset_rng = jax.random.split(rng)
        center = jax.random.choice(cell_rng, self._goal_centers)
        half = 0.5 * self.config.cell_size
        return center + jax.random.uniform(offset_rng, (2,), minval=-half, maxval=half)

    def physics_step(self, physics: jax.Array, action: jax.Array, goal: jax.Array) -> jax.Array:
        """Lag the velocity toward the action's target, then move x, then y, stopping at walls."""
        cfg = self.config
        x, y, velocity = physics[0], physics[1], physics[2:]
        target = cfg.max_speed * action
        target_norm = jnp.linalg.norm(target)
        target = target * jnp.minimum(1.0, cfg.max_speed / jnp.maximum(target_norm, 1e-8))
        velocity = velocity + cfg.velocity_gain * (target - velocity)
        vx, vy = velocity[0], velocity[1]
        margin = _EDGE_MARGIN * cfg.cell_size

        # x first: a blocked move ends at the near edge of the current column.
        new_x = x + vx * cfg.dt
        blocked_x = self.is_wall(new_x, y)
        col_left = jnp.floor(x / cfg.cell_size) * cfg.cell_size
        edge_x = jnp.where(vx > 0, col_left + cfg.cell_size - margin, col_left + margin)
        x = jnp.where(blocked_x, edge_x, new_x)
        vx = jnp.where(blocked_x, 0.0, vx)

        # then y at the resolved x; rows grow downward, so the row's top edge is -row*size.
        new_y = y + vy * cfg.dt
        blocked_y = self.is_wall(x, new_y)
        row_bottom = -(jnp.floor(-y / cfg.cell_size) + 1.0) * cfg.cell_size
        edge_y = jnp.where(vy > 0, row_bottom + cfg.cell_size - margin, row_bottom + margin)
        y = jnp.where(blocked_y, edge_y, new_y)
        vy = jnp.where(blocked_y, 0.0, vy)
        return jnp.stack([x, y, vx, vy]).astype(jnp.float32)

    def observe(self, physics: jax.Array) -> jax.Array:
        """The state is the physics itself: [x, y, vx, vy]."""
        return physics


# ---- factories ---------------------------------------------------------------------------------
_DEFAULT_EPISODE_LENGTH = {
    "open": 100, "u": 100, "big": 150, "hardest": 200,
    # Snakes: the far end is 20 / 34 cells away (100 / 170 steps at full speed).
    "snake3": 200, "snake3_eval": 200, "snake5": 300, "snake5_eval": 300,
}


def make_point_maze(layout: str, **overrides: Any) -> PointMaze:
    """A PointMaze on `layout` with per-maze defaults; keyword overrides replace config fields."""
    known = {f.name for f in dataclasses.fields(PointMazeConfig)} - {"layout"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown point-maze option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    defaults = {"episode_length": _DEFAULT_EPISODE_LENGTH.get(layout, 200)}
    return PointMaze(PointMazeConfig(layout=layout, **{**defaults, **overrides}))


def make_open(**overrides: Any) -> PointMaze:
    """Open room: start in a corner, goals in the central 3x3 cells."""
    return make_point_maze("open", **overrides)


def make_u(**overrides: Any) -> PointMaze:
    """U maze: goals along the U, the far ones behind a wall from the start."""
    return make_point_maze("u", **overrides)


def make_big(**overrides: Any) -> PointMaze:
    """D4RL-style medium ('big') maze."""
    return make_point_maze("big", **overrides)


def make_hardest(**overrides: Any) -> PointMaze:
    """D4RL-style large ('hardest') maze."""
    return make_point_maze("hardest", **overrides)


def make_snake3(**overrides: Any) -> PointMaze:
    """Serpentine maze, 3 corridors of 6 cells (crl's CPU depth-study task, see
    `maze_layouts.snake`); goals in every free cell."""
    return make_point_maze("snake3", **overrides)


def make_snake3_eval(**overrides: Any) -> PointMaze:
    """snake3 evaluated on the far corridor only."""
    return make_point_maze("snake3_eval", **overrides)


def make_snake5(**overrides: Any) -> PointMaze:
    """Serpentine maze, 5 corridors of 6 cells; goals in every free cell."""
    return make_point_maze("snake5", **overrides)


def make_snake5_eval(**overrides: Any) -> PointMaze:
    """snake5 evaluated on the far corridor only."""
    return make_point_maze("snake5_eval", **overrides)
