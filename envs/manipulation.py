"""Goal-conditioned robot-arm tasks (reach, push, bin-pick, grasp) simulated with MJX.

The arm is `envs.arm_model` (4 joints + a two-finger gripper, MuJoCo primitives); the tasks follow
the JaxGCRL manipulation suite (Bortkiewicz et al. 2024) in spirit, with their facts where they
carry over: absolute joint-angle servo targets as actions, 4 arm actions (+1 gripper), an agent
step of 0.05 s, a 0.1 m success radius for cube goals, and 1000-step episodes (the scaling-crl
training script's time limit for every env, so scores are out of 1000).

Actions, in [-1, 1]: a[0:4] → servo targets spanning each arm joint's range (`ARM_RANGES`);
a[4] (not in reach) → both fingers' targets, -1 fully open, +1 closed (squeezing, capped at
`FINGER_FORCE`). An agent step is `n_frames` (10) physics steps of 5 ms.

State (the observation without the goal), goal = state[goal_indices]. The default
(`observation='paper'`) is the authors' composition with 4 arm joints instead of the Panda's 7:
  reach (10): arm joint angles (4) ⊕ grip site xyz (3) ⊕ grip site velocity (3); goal = grip
    site xyz, indices 4..6 (paper: 13 = 7 angles ⊕ eef xyz ⊕ eef velocity, indices 7..9).
  cube tasks (14): cube xyz (3) ⊕ arm angles (4) ⊕ grip xyz (3) ⊕ grip velocity (3) ⊕ distance
    between the finger bodies (1); goal = cube xyz, indices 0..2 (paper: 17, 7 angles).
With `observation='full'` (crl's richer state):
  reach (11): grip site xyz (3) ⊕ arm joint angles (4) ⊕ arm joint velocities (4); goal = grip
    site xyz, indices 0..2.
  cube tasks (25): cube xyz (3) ⊕ grip site xyz (3) ⊕ arm angles (4) ⊕ finger slides (2) ⊕ cube
    quaternion with w >= 0 (4) ⊕ arm velocities (4) ⊕ finger velocities (2) ⊕ cube linear
    velocity (3); goal = cube xyz, indices 0..2.

Tasks (positions in metres, robot base at the origin, table at z = 0, cube centre at rest
z = CUBE_HALF = 0.025); start: arm at the 'ready' pose (grip 0.2 m above (0.42, 0)) ± 0.05 rad,
fingers open, cube at rest with its faces turned toward the robot:
  arm_reach: goal uniform in the box [0.25, 0.55] × [-0.25, 0.25] × [0.05, 0.4] (every point
    reachable with the hand pointing down); radius 0.05 (a 0.1 ball would fill ~8% of that box,
    which a random arm hits often).
  arm_push_easy: cube in (0.42, -0.1) ± 0.05, goal on the table in (0.42, 0.1) ± 0.05 (adjacent
    patches), at least 0.12 away; radius 0.1.
  arm_push_hard: cube and goal both anywhere in [0.3, 0.55] × [-0.25, 0.25], at least 0.15
    apart; radius 0.1.
  arm_binpick_easy / _hard: two bins (walls 7 cm high) side by side along y; the cube starts
    anywhere on the source bin's floor, the goal is on the target bin's floor, within ±0.02 of
    its centre (easy) or anywhere on it (hard, ±0.07); radius 0.1. The cube must be
    lifted over the divider.
  arm_grasp: cube in [0.32, 0.52] × [-0.15, 0.15]; goal above the same patch at z in [0.1, 0.3];
    radius 0.05, so a cube lying on the table (z = 0.025) is never at the goal: it must be
    picked up and held.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from mujoco import mjx

from envs import arm_model
from envs.base import GoalEnv
from envs.mjx_sim import MjxModel

_READY_GRIP = np.array([0.42, 0.0, 0.2])  # grip-site position of the start pose
_GOAL_CANDIDATES = 8  # goals drawn per reset to find one far enough from the cube


@dataclasses.dataclass(frozen=True)
class ArmTaskConfig:
    """Everything that defines an arm task; factories override fields by keyword.

    `cube_low/high` bound the cube's start (x, y); `goal_low/high` bound the goal (x, y, z);
    a goal closer than `min_goal_distance` to the cube's start is redrawn (up to 8 draws).
    """

    task: str  # 'reach' | 'push' | 'binpick' | 'grasp'
    episode_length: int = 1000
    goal_radius: float = 0.1
    n_frames: int = 10  # physics steps (of arm_model.TIMESTEP) per agent step
    cube_low: tuple[float, float] = (0.37, -0.15)
    cube_high: tuple[float, float] = (0.47, -0.05)
    goal_low: tuple[float, float, float] = (0.37, 0.05, arm_model.CUBE_HALF)
    goal_high: tuple[float, float, float] = (0.47, 0.15, arm_model.CUBE_HALF)
    min_goal_distance: float = 0.0
    start_noise: float = 0.05  # rad, uniform noise on the arm's start angles
    # 'paper': the authors' observation with this 4-joint arm (reach 10, cube tasks 14);
    # 'full': crl's richer state (reach 11, cube tasks 25). See the module docstring.
    observation: str = "paper"

    def validate(self) -> None:
        """Raise ValueError with a one-line reason if the config is unusable."""
        if self.task not in ("reach", "push", "binpick", "grasp"):
            raise ValueError(f"unknown arm task {self.task!r}; known: reach, push, binpick, grasp")
        if not (isinstance(self.episode_length, int) and self.episode_length >= 1):
            raise ValueError(f"episode_length must be an int >= 1, got {self.episode_length!r}")
        if not (isinstance(self.n_frames, int) and self.n_frames >= 1):
            raise ValueError(f"n_frames must be an int >= 1, got {self.n_frames!r}")
        if self.observation not in ("paper", "full"):
            raise ValueError(f"observation must be 'paper' or 'full', got {self.observation!r}")
        if not self.goal_radius > 0:
            raise ValueError(f"goal_radius must be > 0, got {self.goal_radius!r}")
        if not 0 <= self.start_noise <= 0.3:
            raise ValueError(f"start_noise must be in [0, 0.3] rad, got {self.start_noise!r}")
        if np.any(np.greater(self.cube_low, self.cube_high)) or np.any(
            np.greater(self.goal_low, self.goal_high)
        ):
            raise ValueError("every *_low bound must be <= its *_high bound")


class ArmEnv(GoalEnv):
    """One arm task on the MJX (JAX) MuJoCo backend; `physics` is an `mjx.Data`."""

    backend = "mjx"

    def __init__(self, config: ArmTaskConfig):
        config.validate()
        self.config = config
        self.name = f"arm_{config.task}"
        self.episode_length = config.episode_length
        self.goal_radius = config.goal_radius
        self.has_cube = config.task != "reach"
        bins = arm_model.Bins() if config.task == "binpick" else None
        self.sim = MjxModel(arm_model.arm_xml(self.has_cube, bins))
        sim = self.sim
        self._arm_q = np.array([sim.qpos_adr(n) for n in arm_model.ARM_JOINTS])
        self._arm_v = np.array([sim.dof_adr(n) for n in arm_model.ARM_JOINTS])
        self._finger_q = np.array([sim.qpos_adr("left_finger"), sim.qpos_adr("right_finger")])
        self._finger_v = np.array([sim.dof_adr("left_finger"), sim.dof_adr("right_finger")])
        self._grip_site = int(sim.mj.site("grip").id)
        self._grip_body = int(sim.mj.site_bodyid[self._grip_site])
        self._fingers = np.array([sim.mj.body(n).id for n in ("left_finger", "right_finger")])
        self.paper_obs = config.observation == "paper"
        self._ready_angles = arm_model.grip_down_ik(_READY_GRIP)
        if self.has_cube:
            self._cube_q = sim.qpos_adr("cube")
            self._cube_v = sim.dof_adr("cube")
            self.state_size = 14 if self.paper_obs else 25
            self.action_size = 5
        else:
            self.state_size = 10 if self.paper_obs else 11
            self.action_size = 4
        self.goal_size = 3
        # the paper's reach state starts with the joint angles; the grip position follows them
        self.goal_indices = (4, 5, 6) if self.paper_obs and not self.has_cube else (0, 1, 2)
        self._arm_low = jnp.asarray(arm_model.ARM_RANGES[:, 0], jnp.float32)
        self._arm_high = jnp.asarray(arm_model.ARM_RANGES[:, 1], jnp.float32)

    # ---- helpers ------------------------------------------------------------------------------
    def controls(self, action: jax.Array) -> jax.Array:
        """Servo targets [arm (4), left finger, right finger] for an action in [-1, 1]."""
        arm = self._arm_low + (action[:4] + 1.0) * 0.5 * (self._arm_high - self._arm_low)
        open_width = arm_model.FINGER_RANGE[1]
        if self.has_cube:
            finger = open_width * (1.0 - action[4]) * 0.5
        else:
            finger = jnp.asarray(open_width, jnp.float32)
        return jnp.concatenate([arm, jnp.stack([finger, finger])])

    def grip_position(self, physics: mjx.Data) -> jax.Array:
        """World position of the grip site (between the finger pads)."""
        return physics.site_xpos[self._grip_site]

    def grip_velocity(self, physics: mjx.Data) -> jax.Array:
        """World linear velocity of the grip site (its Jacobian times qvel; the Jacobian needs
        the com-based quantities, recomputed here since `step` refreshes positions only)."""
        data = mjx.com_pos(self.sim.mjx, physics)
        jacp, _ = mjx.jac(self.sim.mjx, data, self.grip_position(physics), self._grip_body)
        return jacp.T @ physics.qvel

    def cube_position(self, physics: mjx.Data) -> jax.Array:
        """World position of the cube's centre."""
        return physics.qpos[self._cube_q : self._cube_q + 3]

    # ---- GoalEnv ------------------------------------------------------------------------------
    def init_physics(self, rng: jax.Array) -> mjx.Data:
        """Ready pose (± start_noise), fingers open, cube at rest facing the robot."""
        cfg = self.config
        arm_rng, cube_rng = jax.random.split(rng)
        angles = self._ready_angles + jax.random.uniform(
            arm_rng, (4,), minval=-cfg.start_noise, maxval=cfg.start_noise
        )
        qpos = jnp.asarray(self.sim.mj.qpos0, jnp.float32)
        qpos = qpos.at[self._arm_q].set(angles)
        qpos = qpos.at[self._finger_q].set(arm_model.FINGER_RANGE[1])
        if self.has_cube:
            xy = jax.random.uniform(
                cube_rng, (2,), minval=jnp.asarray(cfg.cube_low), maxval=jnp.asarray(cfg.cube_high)
            )
            # Turn the cube so two faces are square to the approaching gripper's pads.
            half_yaw = 0.5 * jnp.arctan2(xy[1], xy[0])
            quat = jnp.stack([jnp.cos(half_yaw), 0.0, 0.0, jnp.sin(half_yaw)])
            cube = jnp.concatenate([xy, jnp.array([arm_model.CUBE_HALF]), quat])
            qpos = qpos.at[self._cube_q : self._cube_q + 7].set(cube)
        ctrl = self.controls(jnp.zeros(self.action_size)).at[:4].set(angles)
        return self.sim.start(qpos, jnp.zeros(self.sim.mj.nv), ctrl)

    def sample_goal(self, rng: jax.Array, physics: mjx.Data) -> jax.Array:
        """Uniform in the goal box; for cube tasks, the first of 8 draws that is at least
        `min_goal_distance` from the cube (the first draw if none is)."""
        cfg = self.config
        candidates = jax.random.uniform(
            rng,
            (_GOAL_CANDIDATES, 3),
            minval=jnp.asarray(cfg.goal_low),
            maxval=jnp.asarray(cfg.goal_high),
        )
        if not self.has_cube or cfg.min_goal_distance <= 0:
            return candidates[0]
        far = jnp.linalg.norm(candidates - self.cube_position(physics), axis=-1)
        far = far >= cfg.min_goal_distance
        return candidates[jnp.argmax(far)]  # argmax of all-False is 0: the first draw

    def physics_step(self, physics: mjx.Data, action: jax.Array, goal: jax.Array) -> mjx.Data:
        """Hold the servo targets of `action` for n_frames physics steps."""
        return self.sim.step(physics, self.controls(action), self.config.n_frames)

    def observe(self, physics: mjx.Data) -> jax.Array:
        """The state vector laid out in the module docstring."""
        grip = self.grip_position(physics)
        arm_q, arm_v = physics.qpos[self._arm_q], physics.qvel[self._arm_v]
        if self.paper_obs:
            parts = [arm_q, grip, self.grip_velocity(physics)]
            if self.has_cube:
                fingers = physics.xpos[self._fingers]
                gap = jnp.linalg.norm(fingers[0] - fingers[1])[None]
                parts = [self.cube_position(physics), *parts, gap]
            return jnp.concatenate(parts).astype(jnp.float32)
        if not self.has_cube:
            return jnp.concatenate([grip, arm_q, arm_v]).astype(jnp.float32)
        quat = physics.qpos[self._cube_q + 3 : self._cube_q + 7]
        quat = jnp.where(quat[0] < 0, -quat, quat)  # q and -q are one rotation
        parts = [
            self.cube_position(physics),
            grip,
            arm_q,
            physics.qpos[self._finger_q],
            quat,
            arm_v,
            physics.qvel[self._finger_v],
            physics.qvel[self._cube_v : self._cube_v + 3],
        ]
        return jnp.concatenate(parts).astype(jnp.float32)


# ---- factories ---------------------------------------------------------------------------------
_Z = arm_model.CUBE_HALF
_BINS = arm_model.Bins()
# Cube centres stay this far inside a bin's floor: half the cube plus a little clearance.
_BIN_SPREAD = _BINS.inner_half - arm_model.CUBE_HALF - 0.025


def _bin_box(center: tuple[float, float], spread: float) -> tuple[tuple, tuple]:
    return (center[0] - spread, center[1] - spread), (center[0] + spread, center[1] + spread)


def _task_defaults() -> dict[str, dict[str, Any]]:
    src_lo, src_hi = _bin_box(_BINS.source_center, _BIN_SPREAD)
    easy_lo, easy_hi = _bin_box(_BINS.target_center, 0.02)
    hard_lo, hard_hi = _bin_box(_BINS.target_center, _BIN_SPREAD)
    return {
        "reach": dict(
            task="reach", episode_length=1000, goal_radius=0.05,
            goal_low=(0.25, -0.25, 0.05), goal_high=(0.55, 0.25, 0.4),
        ),
        "push_easy": dict(
            task="push", episode_length=1000, goal_radius=0.1,
            cube_low=(0.37, -0.15), cube_high=(0.47, -0.05),
            goal_low=(0.37, 0.05, _Z), goal_high=(0.47, 0.15, _Z), min_goal_distance=0.12,
        ),
        "push_hard": dict(
            task="push", episode_length=1000, goal_radius=0.1,
            cube_low=(0.3, -0.25), cube_high=(0.55, 0.25),
            goal_low=(0.3, -0.25, _Z), goal_high=(0.55, 0.25, _Z), min_goal_distance=0.15,
        ),
        "binpick_easy": dict(
            task="binpick", episode_length=1000, goal_radius=0.1,
            cube_low=src_lo, cube_high=src_hi,
            goal_low=(*easy_lo, _Z), goal_high=(*easy_hi, _Z),
        ),
        "binpick_hard": dict(
            task="binpick", episode_length=1000, goal_radius=0.1,
            cube_low=src_lo, cube_high=src_hi,
            goal_low=(*hard_lo, _Z), goal_high=(*hard_hi, _Z),
        ),
        "grasp": dict(
            task="grasp", episode_length=1000, goal_radius=0.05,
            cube_low=(0.32, -0.15), cube_high=(0.52, 0.15),
            goal_low=(0.32, -0.15, 0.1), goal_high=(0.52, 0.15, 0.3),
        ),
    }


def make_arm(variant: str, **overrides: Any) -> ArmEnv:
    """The arm task `variant` (a key of the defaults, e.g. 'push_easy'); keyword overrides
    replace ArmTaskConfig fields (e.g. episode_length=50)."""
    defaults = _task_defaults()
    if variant not in defaults:
        raise ValueError(f"unknown arm variant {variant!r}; known: {', '.join(defaults)}")
    known = {f.name for f in dataclasses.fields(ArmTaskConfig)} - {"task"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown arm option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    env = ArmEnv(ArmTaskConfig(**{**defaults[variant], **overrides}))
    env.name = f"arm_{variant}"
    return env


def make_reach(**overrides: Any) -> ArmEnv:
    """Move the grip site to a 3-D point in front of the robot."""
    return make_arm("reach", **overrides)


def make_push_easy(**overrides: Any) -> ArmEnv:
    """Push the cube to a goal on an adjacent patch of the table."""
    return make_arm("push_easy", **overrides)


def make_push_hard(**overrides: Any) -> ArmEnv:
    """Push the cube to a goal anywhere in the work area."""
    return make_arm("push_hard", **overrides)


def make_binpick_easy(**overrides: Any) -> ArmEnv:
    """Carry the cube from one bin to the centre of the other."""
    return make_arm("binpick_easy", **overrides)


def make_binpick_hard(**overrides: Any) -> ArmEnv:
    """Carry the cube from one bin to anywhere in the other."""
    return make_arm("binpick_hard", **overrides)


def make_grasp(**overrides: Any) -> ArmEnv:
    """Pick the cube up and hold it at a point in the air."""
    return make_arm("grasp", **overrides)
