"""Goal-conditioned locomotion with real rigid-body physics: brax's ant and humanoid reaching position
goals in an open arena or in mazes, the ant moving a ball to a goal, and the ant pushing a block
out of its way.

Models: brax's own `ant.xml` / `humanoid.xml` (shipped inside the brax package), edited with
`envs.mjcf_tools`: maze walls are box geoms generated from `envs.maze_layouts` (one box per wall
cell), the ball is a free sphere body, the push block a box on a slide joint.

Physics: brax's pipelines (`spring` default, `positional`, `generalized`) or `mjx`, chosen with
`backend=`. Timesteps and frame skips follow brax's own ant/humanoid envs, so one agent step is
0.05 s (ant) or 0.015 s (humanoid) on every backend. All contacts (also the spring/positional/
generalized ones) come from mjx's collision functions, which support sphere/capsule vs box, so
maze walls block the robot on every backend. Robot geoms never touch each other (as in brax
and the references). The humanoid's geoms all touch the floor and the walls, as in the
references; for speed the ant's walls and floor see only its torso and 4 foot spheres (its leg
capsules cannot reach a wall first). Also for speed:
  * wall cells that touch no free cell are visual only (they cannot be reached);
  * a broadphase (`max_geom_pairs`, mjx's own) keeps only the closest robot-wall pairs per
    geom-type group, so the cost does not grow with the size of the maze.

Observation (state ⊕ goal), as the references (which keep the torso's x, y in the state):
  ant:       qpos (15: torso xyz, torso quaternion, 8 joint angles) ⊕ qvel (14)      → 29
  ant_ball:  ant 29 ⊕ ball xyz (3) ⊕ ball linear velocity (3)                        → 35
  ant_push:  ant 29 ⊕ block xy (2) ⊕ block x velocity (1)                            → 32
  humanoid:  the references' 268: q (26) ⊕ qd (25) ⊕ per link (12) inertia about the centre
             of mass (9) and mass ⊕ centre-of-mass velocity (6) ⊕ actuator forces (25); the
             q/qd/links include the goal marker (a non-colliding sphere on two slide joints,
             as in the references); `observation='qpos_qvel'`: robot qpos 24 ⊕ qvel 23 → 47
The ant's goal is an (x, y) position of the torso (state indices 0, 1), or of the ball for
ant_ball (indices 29, 30); the humanoid's is the torso's (x, y, z) with z = 1.25 (standing
height), indices 0, 1, 2. An episode ends at its time limit or, by default, when the torso's
height leaves [0.2, 1.0] (ant) / [1.0, 2.0] (humanoid) (`terminate_when_unhealthy=False` turns
that off); the base class auto-resets with a fresh goal. Maze walls are half a cell high.
See docs/environments.md for every fact against the authors' code.

Goals and starts (numbers from the public JaxGCRL envs where they exist):
  ant:        start at the origin, goal on the circle of radius 10 around it.
  humanoid:   start at the origin, goal at distance U(1, 5), uniform angle.
  *_maze:     start at the 'R' cell centre, goal at a 'G' cell centre (± `goal_noise` of a cell);
              cells are 4 m for the ant, 2 m for the humanoid.
  ant_ball:   ball at distance U(1, 2) from the ant, goal on the circle of radius 5.
  ant_push:   `PUSH_LAYOUT`: the block stands in the only gap towards the goal room and slides
              along x only, so the ant must push it sideways before it can pass.
Ant starts add the references' reset noise (q ± U(0.1), qd 0.1·N(0, 1)); the humanoid starts
without noise, as in the references.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import maze_layouts, mjcf_tools
from envs.base import GoalEnv

BACKENDS = ("spring", "positional", "generalized", "mjx")

# The push task's arena (same conventions as maze_layouts; 'B' is the block's start cell). The
# row under the block has one gap, right below the block; the block slides along its row only.
PUSH_LAYOUT = [
    "#######",
    "#..R..#",
    "#..B..#",
    "###.###",
    "#GGGGG#",
    "#######",
]


@dataclasses.dataclass(frozen=True)
class Robot:
    """What differs between the ant and the humanoid."""

    asset: str  # brax asset name
    contact_geoms: tuple[str, ...]  # robot geoms that touch the floor and objects
    wall_geoms: tuple[str, ...]  # the subset that maze walls also stop
    reset_noise: float
    healthy_z: tuple[float, float]  # torso height range outside which the robot has fallen
    timestep: dict[str, float]  # per backend
    n_frames: dict[str, int]
    gear: dict[str, tuple[float, ...]]  # per-backend actuator gear overrides (brax's tuning)


ANT = Robot(
    asset="ant",
    contact_geoms=(
        "torso_geom", "left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom",
    ),
    wall_geoms=(
        "torso_geom", "left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom",
    ),
    reset_noise=0.1,
    healthy_z=(0.2, 1.0),
    timestep={"spring": 0.005, "positional": 0.005, "generalized": 0.01, "mjx": 0.01},
    n_frames={"spring": 10, "positional": 10, "generalized": 5, "mjx": 5},
    gear={"positional": (200.0,) * 8},
)

HUMANOID_GEOMS = (
    "torso1", "head", "uwaist", "lwaist", "butt",
    "right_thigh1", "right_shin1", "right_foot", "left_thigh1", "left_shin1", "left_foot",
    "right_uarm1", "right_larm", "right_hand", "left_uarm1", "left_larm", "left_hand",
)

# The humanoid's goal height: its torso's height when standing (the references' TARGET_Z_COORD).
HUMANOID_GOAL_Z = 1.25

HUMANOID = Robot(
    asset="humanoid",
    # Every geom touches the floor and the walls, as in the references (their humanoid geoms have
    # contype 1, floor and walls conaffinity 1).
    contact_geoms=HUMANOID_GEOMS,
    wall_geoms=HUMANOID_GEOMS,
    reset_noise=0.0,  # the references' humanoid and humanoid mazes start without noise
    healthy_z=(1.0, 2.0),
    timestep={"spring": 0.0015, "positional": 0.0015, "generalized": 0.003, "mjx": 0.003},
    n_frames={"spring": 10, "positional": 10, "generalized": 5, "mjx": 5},
    gear={
        backend: (350.0,) * 11 + (100.0,) * 6 for backend in ("spring", "positional")
    },
)

ROBOTS = {"ant": ANT, "humanoid": HUMANOID}
TASKS = ("reach", "maze", "ball", "push")


@dataclasses.dataclass(frozen=True)
class LocomotionConfig:
    """Everything that defines a locomotion env; factories override fields by keyword."""

    robot: str = "ant"  # 'ant' | 'humanoid'
    task: str = "reach"  # 'reach' (open arena) | 'maze' | 'ball' (ant) | 'push' (ant)
    layout: str | None = None  # maze_layouts.LAYOUTS key, for task 'maze'
    backend: str = "spring"
    episode_length: int = 1000
    goal_radius: float = 0.5
    cell_size: float = 4.0  # maze / push arena cell, metres
    wall_height: float | None = None  # None: half a cell, as the references (MAZE_HEIGHT 0.5)
    # End the episode when the torso leaves the robot's healthy height range (the references do).
    terminate_when_unhealthy: bool = True
    # Humanoid only: 'full' is the references' 268-d observation, 'qpos_qvel' the 47-d one.
    observation: str = "full"
    goal_noise: float = 0.0  # maze goals: uniform jitter around 'G' centres, fraction of a cell
    goal_distance: tuple[float, float] = (10.0, 10.0)  # reach/ball: goal distance from origin
    wall_pairs: int = 12  # broadphase budget: robot-wall pairs kept per geom-type group

    def validate(self) -> None:
        """Raise ValueError with a one-line reason if the config is unusable."""
        if self.robot not in ROBOTS:
            raise ValueError(f"unknown robot {self.robot!r}; known: {', '.join(ROBOTS)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.task in ("ball", "push") and self.robot != "ant":
            raise ValueError(f"task {self.task!r} exists for the ant only")
        if self.task == "maze" and self.layout not in maze_layouts.LAYOUTS:
            raise ValueError(
                f"unknown maze layout {self.layout!r}; known: {', '.join(maze_layouts.LAYOUTS)}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        if not (isinstance(self.episode_length, int) and self.episode_length >= 1):
            raise ValueError(f"episode_length must be an int >= 1, got {self.episode_length!r}")
        if self.observation not in ("full", "qpos_qvel"):
            raise ValueError(
                f"observation must be 'full' or 'qpos_qvel', got {self.observation!r}"
            )
        for field in ("goal_radius", "cell_size", "wall_height"):
            if getattr(self, field) is not None and not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0, got {getattr(self, field)!r}")
        if not 0 <= self.goal_noise < 0.5:
            raise ValueError(f"goal_noise must be in [0, 0.5), got {self.goal_noise!r}")
        low, high = self.goal_distance
        if not 0 <= low <= high:
            raise ValueError(
                f"goal_distance must be (low, high), 0 <= low <= high, got {self.goal_distance!r}"
            )
        if not (isinstance(self.wall_pairs, int) and self.wall_pairs >= 1):
            raise ValueError(f"wall_pairs must be an int >= 1, got {self.wall_pairs!r}")


def _pipeline(backend: str):
    """The brax physics pipeline module of `backend` (imported lazily: each is slow to import)."""
    if backend == "spring":
        from brax.spring import pipeline
    elif backend == "positional":
        from brax.positional import pipeline
    elif backend == "generalized":
        from brax.generalized import pipeline
    else:
        from brax.mjx import pipeline
    return pipeline


def reachable_wall_cells(layout: list[str]) -> np.ndarray:
    """Boolean [rows, cols]: wall cells with a free cell among their 8 neighbours (the only walls
    a robot inside the maze can touch)."""
    walls = maze_layouts.wall_mask(layout)
    free = np.pad(~walls, 1)
    rows, cols = walls.shape
    near_free = np.zeros_like(walls)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            near_free |= free[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
    return walls & near_free


class LocomotionEnv(GoalEnv):
    """An ant or humanoid task on a brax pipeline; `physics` is the pipeline's state."""

    BALL_RADIUS = 0.4  # m
    BALL_MASS = 0.3  # kg, against the ant's 0.9 kg: a kick moves it
    BLOCK_MASS = 1.0  # kg

    def __init__(self, config: LocomotionConfig):
        config.validate()
        from brax.io import mjcf

        self.config = config
        self.robot = ROBOTS[config.robot]
        self.backend = config.backend
        self.episode_length = config.episode_length
        self.goal_radius = config.goal_radius
        self.terminate_when_unhealthy = config.terminate_when_unhealthy
        self.wall_height = (
            0.5 * config.cell_size if config.wall_height is None else config.wall_height
        )
        self.is_humanoid = config.robot == "humanoid"
        # The references' 268-d humanoid observation includes the actuator forces, so the
        # physics state then carries the last control (see `with_ctrl`).
        self.full_obs = self.is_humanoid and config.observation == "full"
        suffix = {"reach": "", "maze": f"_{config.layout}_maze"}.get(config.task, f"_{config.task}")
        self.name = config.robot + suffix

        self.layout = self._layout()
        root = mjcf_tools.brax_asset(self.robot.asset)
        mjcf_tools.set_collision(root, list(self.robot.contact_geoms), mjcf_tools.TOUCH, 0)
        mjcf_tools.set_collision(
            root, list(self.robot.wall_geoms), mjcf_tools.TOUCH | mjcf_tools.WALL, 0
        )
        robot_q0 = self._init_qpos(root)
        robot_nq = len(robot_q0)
        if self.is_humanoid:  # before walls/objects: its joints follow the robot's
            mjcf_tools.add_goal_marker(
                root, "target", height=HUMANOID_GOAL_Z, radius=self.goal_radius, mass=1.0,
                rgba="0.1 0.9 0.2 0.4",
            )
        if self.layout is not None:
            self._add_walls(root)
        if config.task == "ball":
            mjcf_tools.add_free_ball(
                root, "ball", radius=self.BALL_RADIUS, mass=self.BALL_MASS, damping=0.3,
                rgba="0.9 0.2 0.2 1",
            )
        if config.task == "push":
            self._add_block(root)
        extra_q = {"reach": [], "maze": [], "ball": [0, 0, self.BALL_RADIUS, 1, 0, 0, 0],
                   "push": [0.0]}[config.task]
        if self.is_humanoid:
            extra_q = [0.0, 0.0]  # the goal marker
        mjcf_tools.set_custom_numeric(
            root, "init_qpos", np.concatenate([robot_q0, extra_q])
        )
        self.xml = mjcf_tools.to_xml(root)

        sys = mjcf.loads(self.xml)
        sys = sys.tree_replace({"opt.timestep": self.robot.timestep[self.backend]})
        if self.backend in self.robot.gear:
            gear = jnp.asarray(self.robot.gear[self.backend], jnp.float32)
            sys = sys.replace(actuator=sys.actuator.replace(gear=gear))
        if self.backend == "mjx":
            import mujoco

            # brax's settings for its ant/humanoid on mjx: one Newton iteration is enough.
            sys = sys.tree_replace({
                "opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
                "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
                "opt.iterations": 1,
                "opt.ls_iterations": 4,
            })
        self.sys = sys
        self.mj_model = sys.mj_model
        self._pipeline = _pipeline(self.backend)
        self._n_frames = self.robot.n_frames[self.backend]
        self.dt = self.robot.timestep[self.backend] * self._n_frames

        self._robot_nq = robot_nq
        self._robot_nv = robot_nq - 1  # one free joint: 7 qpos, 6 qvel
        self.action_size = int(sys.act_size())
        ctrl_range = np.asarray(sys.actuator.ctrl_range, np.float32)
        self._ctrl_low = jnp.asarray(ctrl_range[:, 0])
        self._ctrl_high = jnp.asarray(ctrl_range[:, 1])
        extra_state = {"reach": 0, "maze": 0, "ball": 6, "push": 3}[config.task]
        self.state_size = self._robot_nq + self._robot_nv + extra_state
        self.goal_size = 2
        if self.full_obs:
            # q, qd (robot and marker), per link the com-frame inertia (9) and mass, the com
            # velocity (6), and the actuator forces per dof: 26 + 25 + 12·16 + 25 = 268.
            num_links = sys.num_links()
            self.state_size = sys.q_size() + 2 * sys.qd_size() + 16 * num_links
        if self.is_humanoid:  # torso (x, y, z), the goal at standing height
            self.goal_size = 3
            self.goal_indices = (0, 1, 2)
        elif config.task == "ball":
            ball_x = self._robot_nq + self._robot_nv
            self.goal_indices = (ball_x, ball_x + 1)
        else:
            self.goal_indices = (0, 1)

        if self.layout is not None:
            size = config.cell_size
            self.start_xy = jnp.asarray(
                maze_layouts.cell_center(maze_layouts.cells(self.layout, "R")[0], size),
                jnp.float32,
            )
            self._goal_centres = jnp.asarray(
                maze_layouts.cell_center(maze_layouts.cells(self.layout, "G"), size), jnp.float32
            )
        else:
            self.start_xy = jnp.zeros(2, jnp.float32)
            self._goal_centres = None

    # ---- model building -----------------------------------------------------------------------
    def maze_grid(self) -> tuple[np.ndarray, float] | None:
        """The maze tasks' wall grid: the goal space starts with the torso's (x, y)."""
        if self.config.task != "maze":
            return None
        return maze_layouts.wall_mask(self.layout), self.config.cell_size

    def _layout(self) -> list[str] | None:
        """The maze/arena layout of this task, or None for an open floor."""
        if self.config.task == "maze":
            return maze_layouts.LAYOUTS[self.config.layout]
        if self.config.task == "push":
            return PUSH_LAYOUT
        return None

    @staticmethod
    def _init_qpos(root) -> np.ndarray:
        """The robot's standing pose: brax's `init_qpos` if present, else all zeros but the
        free joint's height (body pos z) and unit quaternion."""
        values = mjcf_tools.get_custom_numeric(root, "init_qpos")
        if values is not None:
            return values
        import mujoco

        model = mujoco.MjModel.from_xml_string(mjcf_tools.to_xml(root))
        return np.asarray(model.qpos0, np.float64)

    def _add_walls(self, root) -> None:
        """Collidable boxes for reachable wall cells, visual-only boxes for the rest, and a
        broadphase budget so only the robot-wall pairs closest to the robot are solved."""
        cfg = self.config
        reachable = reachable_wall_cells(self.layout)
        hidden = maze_layouts.wall_mask(self.layout) & ~reachable
        height = self.wall_height
        mjcf_tools.add_wall_boxes(root, reachable, cfg.cell_size, height, True, "wall")
        mjcf_tools.add_wall_boxes(root, hidden, cfg.cell_size, height, False, "solid")
        mjcf_tools.set_max_geom_pairs(root, cfg.wall_pairs)

    def _add_block(self, root) -> None:
        """The push block: fills its cell but a small clearance, slides along its row."""
        size = self.config.cell_size
        (row, col), = np.argwhere(np.array([list(r) for r in PUSH_LAYOUT]) == "B")
        centre = maze_layouts.cell_center(np.array([row, col]), size)
        free_cols = [c for c, ch in enumerate(PUSH_LAYOUT[row]) if ch != "#"]
        half = 0.45 * size
        low = (min(free_cols) - col) * size - (0.5 * size - half)
        high = (max(free_cols) - col) * size + (0.5 * size - half)
        mjcf_tools.add_sliding_block(
            root, "block", pos=np.array([centre[0], centre[1], 0.5 * self.wall_height]),
            half_size=np.array([half, half, 0.5 * self.wall_height]), axis="x",
            slide_range=(low, high), mass=self.BLOCK_MASS, damping=2.0, rgba="0.9 0.5 0.1 1",
        )
        self.block_start = jnp.asarray(centre, jnp.float32)

    # ---- GoalEnv ------------------------------------------------------------------------------
    def init_physics(self, rng: jax.Array) -> Any:
        """Standing at the start with brax's reset noise; objects at their starts."""
        q_rng, qd_rng, object_rng = jax.random.split(rng, 3)
        noise = self.robot.reset_noise
        q = self.sys.init_q + jax.random.uniform(
            q_rng, (self.sys.q_size(),), minval=-noise, maxval=noise
        )
        qd = noise * jax.random.normal(qd_rng, (self.sys.qd_size(),))
        q = q.at[:2].add(self.start_xy)
        q, qd = self._place_objects(object_rng, q, qd)
        return self._init_pipeline(q, qd, jnp.zeros(self.action_size))

    def _init_pipeline(self, q: jax.Array, qd: jax.Array, ctrl: jax.Array) -> Any:
        state = self._pipeline.init(self.sys, q, qd)
        return with_ctrl(state, ctrl) if self.full_obs else state

    def _place_objects(self, rng: jax.Array, q: jax.Array, qd: jax.Array):
        """Object start states (ball at distance U(1, 2) from the ant, block at rest)."""
        nq, nv = self._robot_nq, self._robot_nv
        if self.is_humanoid:
            # The goal is drawn here so that the marker stands on it from the first observation
            # (the marker's q is part of the references' observation); `sample_goal` reads it.
            q = q.at[nq : nq + 2].set(self._sample_goal_xy(rng))
            qd = qd.at[nv : nv + 2].set(0.0)
        elif self.config.task == "ball":
            dist_rng, angle_rng = jax.random.split(rng)
            dist = jax.random.uniform(dist_rng, minval=1.0, maxval=2.0)
            angle = jax.random.uniform(angle_rng, minval=0.0, maxval=2 * jnp.pi)
            xy = self.start_xy + dist * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
            ball = jnp.concatenate([xy, jnp.array([self.BALL_RADIUS, 1.0, 0.0, 0.0, 0.0])])
            q = q.at[nq : nq + 7].set(ball)
            qd = qd.at[nv : nv + 6].set(0.0)
        elif self.config.task == "push":
            q = q.at[nq].set(0.0)
            qd = qd.at[nv].set(0.0)
        return q, qd

    def sample_goal(self, rng: jax.Array, physics: Any) -> jax.Array:
        """(x, y) for the ant; the humanoid's marker position at standing height."""
        if self.is_humanoid:
            xy = physics.q[self._robot_nq : self._robot_nq + 2]
            return jnp.concatenate([xy, jnp.array([HUMANOID_GOAL_Z])]).astype(jnp.float32)
        return self._sample_goal_xy(rng)

    def _sample_goal_xy(self, rng: jax.Array) -> jax.Array:
        """A goal cell centre (mazes) or a point at a random angle around the start."""
        if self._goal_centres is not None:
            cell_rng, noise_rng = jax.random.split(rng)
            centre = jax.random.choice(cell_rng, self._goal_centres)
            jitter = self.config.goal_noise * self.config.cell_size
            return centre + jax.random.uniform(noise_rng, (2,), minval=-jitter, maxval=jitter)
        dist_rng, angle_rng = jax.random.split(rng)
        low, high = self.config.goal_distance
        dist = jax.random.uniform(dist_rng, minval=low, maxval=high)
        angle = jax.random.uniform(angle_rng, minval=0.0, maxval=2 * jnp.pi)
        return self.start_xy + dist * jnp.stack([jnp.cos(angle), jnp.sin(angle)])

    def physics_step(self, physics: Any, action: jax.Array, goal: jax.Array) -> Any:
        """Map the action from [-1, 1] to the motors' control range and run `n_frames`
        simulator steps."""
        ctrl = self._ctrl_low + 0.5 * (action + 1.0) * (self._ctrl_high - self._ctrl_low)

        def substep(state, _):
            state = self._pipeline.step(self.sys, state, ctrl)
            return (with_ctrl(state, ctrl) if self.full_obs else state), None

        return jax.lax.scan(substep, physics, None, length=self._n_frames)[0]

    def is_unhealthy(self, physics: Any) -> jax.Array:
        """The torso's height is outside the robot's healthy range (fallen or flung)."""
        low, high = self.robot.healthy_z
        z = physics.x.pos[0, 2]
        return (z < low) | (z > high)

    def observe(self, physics: Any) -> jax.Array:
        """Robot qpos ⊕ qvel, then the object's state (see the module docstring)."""
        if self.full_obs:
            return self._humanoid_full_obs(physics)
        nq, nv = self._robot_nq, self._robot_nv
        parts = [physics.q[:nq], physics.qd[:nv]]
        if self.config.task == "ball":
            parts += [physics.q[nq : nq + 3], physics.qd[nv : nv + 3]]
        elif self.config.task == "push":
            block_x = self.block_start[0] + physics.q[nq]
            parts += [jnp.stack([block_x, self.block_start[1], physics.qd[nv]])]
        return jnp.concatenate(parts).astype(jnp.float32)

    def _humanoid_full_obs(self, physics: Any) -> jax.Array:
        """The references' humanoid observation (brax's humanoid, contact forces excluded): q, qd,
        per link its inertia about the system's centre of mass (9) and mass, its mass-weighted
        linear (3) and angular (3) velocity at its own centre of mass, and the actuator forces."""
        from brax import actuator
        from brax import base as brax_base

        inertia = self.sys.link.inertia
        if self.backend in ("spring", "positional"):  # those pipelines' scaled inertia
            diag = jax.vmap(jnp.diagonal)(inertia.i) ** (1 - self.sys.spring_inertia_scale)
            inertia = inertia.replace(
                i=jax.vmap(jnp.diag)(diag),
                mass=inertia.mass ** (1 - self.sys.spring_mass_scale),
            )
        total_mass = jnp.sum(inertia.mass)
        link_com = physics.x.vmap().do(inertia.transform)  # each link's centre of mass
        com = jnp.sum(inertia.mass[:, None] * link_com.pos, axis=0) / total_mass
        about_com = link_com.replace(pos=link_com.pos - com).vmap().do(inertia)
        com_inertia = jnp.concatenate(
            [about_com.i.reshape(-1, 9), inertia.mass[:, None]], axis=1
        )
        offset = brax_base.Transform.create(pos=link_com.pos - physics.x.pos)
        link_vel = offset.vmap().do(physics.xd)
        com_velocity = jnp.concatenate(
            [inertia.mass[:, None] * link_vel.vel / total_mass, link_vel.ang], axis=1
        )
        qfrc_actuator = actuator.to_tau(self.sys, physics.ctrl, physics.q, physics.qd)
        return jnp.concatenate([
            physics.q, physics.qd, com_inertia.ravel(), com_velocity.ravel(), qfrc_actuator,
        ]).astype(jnp.float32)

    # ---- helpers for tests and tools ---------------------------------------------------------
    def teleport(self, physics: Any, xy: jax.Array, velocity_xy: jax.Array | None = None) -> Any:
        """`physics` with the robot's torso moved to `xy` (and its linear xy velocity set), all
        derived quantities recomputed. For tests and demos."""
        q = physics.q.at[:2].set(xy[:2])
        qd = physics.qd
        if velocity_xy is not None:
            qd = qd.at[:2].set(velocity_xy)
        ctrl = physics.ctrl if self.full_obs else None
        return self._init_pipeline(q, qd, ctrl)

    def set_object(self, physics: Any, xy: jax.Array) -> Any:
        """`physics` with the ball (ant_ball) moved to `xy` at rest."""
        if self.config.task != "ball":
            raise ValueError(f"{self.name} has no free object to move")
        nq, nv = self._robot_nq, self._robot_nv
        q = physics.q.at[nq : nq + 2].set(xy)
        qd = physics.qd.at[nv : nv + 6].set(0.0)
        return self._init_pipeline(q, qd, None)


@functools.cache
def _with_ctrl_type(state_type: type) -> type:
    """`state_type` (a brax pipeline's State) with one more field, `ctrl`."""
    namespace = {"__annotations__": {"ctrl": jax.Array}, "__module__": __name__}
    return struct.dataclass(type(f"{state_type.__name__}WithCtrl", (state_type,), namespace))


def with_ctrl(state: Any, ctrl: jax.Array) -> Any:
    """A pipeline state that also carries the control applied to reach it (still a subclass of
    the pipeline's State, so brax's `step`, which only `replace`s fields, keeps it)."""
    if hasattr(state, "ctrl"):
        return state.replace(ctrl=ctrl)
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return _with_ctrl_type(type(state))(**fields, ctrl=ctrl)


# ---- factories ---------------------------------------------------------------------------------
_ROBOT_DEFAULTS: dict[str, dict[str, Any]] = {
    "ant": {"cell_size": 4.0, "goal_distance": (10.0, 10.0)},
    "humanoid": {"cell_size": 2.0, "goal_distance": (1.0, 5.0)},
}


def make_locomotion(robot: str, task: str, layout: str | None = None, **overrides: Any):
    """A LocomotionEnv with the robot's defaults; keyword overrides replace config fields."""
    known = {f.name for f in dataclasses.fields(LocomotionConfig)} - {"robot", "task", "layout"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown locomotion option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    defaults = dict(_ROBOT_DEFAULTS.get(robot, {}))
    if task == "ball":
        defaults["goal_distance"] = (5.0, 5.0)

    return LocomotionEnv(
        LocomotionConfig(robot=robot, task=task, layout=layout, **{**defaults, **overrides})
    )


def make_ant(**overrides: Any) -> LocomotionEnv:
    """Ant, open floor: reach a goal 10 m away in a random direction."""
    return make_locomotion("ant", "reach", **overrides)


def make_ant_ball(**overrides: Any) -> LocomotionEnv:
    """Ant, open floor: move a ball to a goal 5 m from the start."""
    return make_locomotion("ant", "ball", **overrides)


def make_ant_push(**overrides: Any) -> LocomotionEnv:
    """Ant: push the block out of the gap, then reach a goal in the room behind it."""
    return make_locomotion("ant", "push", **overrides)


def make_ant_u_maze(**overrides: Any) -> LocomotionEnv:
    """Ant in the U maze (4 m cells)."""
    return make_locomotion("ant", "maze", "u", **overrides)


def make_ant_u4_maze(**overrides: Any) -> LocomotionEnv:
    """Ant in the U maze with 4-cell arms."""
    return make_locomotion("ant", "maze", "u4", **overrides)


def make_ant_u5_maze(**overrides: Any) -> LocomotionEnv:
    """Ant in the U maze with 5-cell arms."""
    return make_locomotion("ant", "maze", "u5", **overrides)


def make_ant_big_maze(**overrides: Any) -> LocomotionEnv:
    """Ant in the big (D4RL medium-style) maze."""
    return make_locomotion("ant", "maze", "big", **overrides)


def make_ant_hardest_maze(**overrides: Any) -> LocomotionEnv:
    """Ant in the hardest (D4RL large-style) maze."""
    return make_locomotion("ant", "maze", "hardest", **overrides)


def make_humanoid(**overrides: Any) -> LocomotionEnv:
    """Humanoid, open floor: reach a goal 1-5 m away."""
    return make_locomotion("humanoid", "reach", **overrides)


def make_humanoid_u_maze(**overrides: Any) -> LocomotionEnv:
    """Humanoid in the U maze (2 m cells)."""
    return make_locomotion("humanoid", "maze", "u", **overrides)


def make_humanoid_big_maze(**overrides: Any) -> LocomotionEnv:
    """Humanoid in the big maze."""
    return make_locomotion("humanoid", "maze", "big", **overrides)


def make_humanoid_hardest_maze(**overrides: Any) -> LocomotionEnv:
    """Humanoid in the hardest maze."""
    return make_locomotion("humanoid", "maze", "hardest", **overrides)


# Evaluation mazes: the same walls, goals in the far part only (the references' `*_eval`).
def make_ant_u_maze_eval(**overrides: Any) -> LocomotionEnv:
    """Ant U maze, goals in the far arm only."""
    return make_locomotion("ant", "maze", "u_eval", **overrides)


def make_ant_u4_maze_eval(**overrides: Any) -> LocomotionEnv:
    """Ant U4 maze, goals in the far part only."""
    return make_locomotion("ant", "maze", "u4_eval", **overrides)


def make_ant_u5_maze_eval(**overrides: Any) -> LocomotionEnv:
    """Ant U5 maze, goals in the far part only."""
    return make_locomotion("ant", "maze", "u5_eval", **overrides)


def make_ant_big_maze_eval(**overrides: Any) -> LocomotionEnv:
    """Ant big maze, goals far from the start only."""
    return make_locomotion("ant", "maze", "big_eval", **overrides)


def make_humanoid_u_maze_eval(**overrides: Any) -> LocomotionEnv:
    """Humanoid U maze, goals in the far arm only."""
    return make_locomotion("humanoid", "maze", "u_eval", **overrides)


def make_humanoid_big_maze_eval(**overrides: Any) -> LocomotionEnv:
    """Humanoid big maze, goals far from the start only (the humanoid's own eval layout)."""
    return make_locomotion("humanoid", "maze", "humanoid_big_eval", **overrides)
