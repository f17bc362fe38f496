"""Goal-conditioned versions of the classic Reacher and Pusher, simulated with MJX.

The robots are brax's shipped models (`brax/envs/assets/reacher.xml`, `pusher.xml`), loaded from
the installed brax package and edited with `xml.etree`: the target/goal marker bodies (and their
slide joints) are removed, since here the goal lives in the observation, not in the simulator.
Physics settings (timestep, integrator, agent step) are brax's own for these models.

reacher: a 2-link planar arm; actions are the two joint torques (motors, gear 200).
  state (8) = fingertip xy (2) ⊕ cos q (2) ⊕ sin q (2) ⊕ q̇ (2); goal = fingertip xy, indices
  (0, 1). Start: joint angles uniform in ±0.1, velocities in ±0.005 (brax's). Goal: uniform in
  the disc of radius 0.2 around the base (brax's target disc; the fingertip reaches 0.21).
  goal_radius 0.05 (JaxGCRL's reacher threshold). Agent step 0.02 s (2 × 0.01 s).
pusher: a 7-joint arm pushes a cylinder that slides on the table (x, y joints); actions are the
  7 joint torques, [-1, 1] scaled to the motors' ±2 range.
  state (21) = object xy (2) ⊕ arm tip xyz (3, brax's 'tips_arm' point) ⊕ arm q (7) ⊕ arm q̇ (7)
  ⊕ object velocity (2);
  goal = object xy, indices (0, 1). Start: arm at 0 with velocities in ±0.005, object uniform in
  x ∈ [0.15, 0.45], y ∈ [-0.25, 0.15]; goal uniform in x ∈ [-0.1, 0.2], y ∈ [-0.25, 0.15] and at
  least 0.17 from the object (JaxGCRL's 'easy' pusher ranges). goal_radius 0.1 (JaxGCRL's).
  Agent step 0.05 s (5 × 0.01 s).
Both: episode_length 1000 by default (brax's time limit for these envs).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from importlib import resources
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from mujoco import mjx

from envs.base import GoalEnv
from envs.mjx_sim import MjxModel

_GOAL_CANDIDATES = 8  # goals drawn per reset to find one far enough from the object


def _brax_model_without(asset: str, body: str, fuse_static: bool = False) -> str:
    """brax's `asset`.xml with the body named `body` (a goal marker) removed; `fuse_static`
    merges bodies without joints into their parents (MuJoCo's compiler `fusestatic`)."""
    path = resources.files("brax") / "envs" / "assets" / f"{asset}.xml"
    root = ET.fromstring(path.read_text())
    if fuse_static:
        compiler = root.find("compiler")
        if compiler is None:
            compiler = ET.SubElement(root, "compiler")
        compiler.set("fusestatic", "true")
    for parent in root.iter():
        for child in list(parent):
            if child.tag == "body" and child.get("name") == body:
                parent.remove(child)
                return ET.tostring(root, encoding="unicode")
    raise ValueError(f"brax's {asset}.xml has no body {body!r}")


@dataclasses.dataclass(frozen=True)
class ClassicConfig:
    """Knobs shared by reacher and pusher; factories override fields by keyword."""

    episode_length: int = 1000
    goal_radius: float = 0.05
    n_frames: int = 2  # physics steps per agent step

    def validate(self) -> None:
        """Raise ValueError with a one-line reason if the config is unusable."""
        if not (isinstance(self.episode_length, int) and self.episode_length >= 1):
            raise ValueError(f"episode_length must be an int >= 1, got {self.episode_length!r}")
        if not (isinstance(self.n_frames, int) and self.n_frames >= 1):
            raise ValueError(f"n_frames must be an int >= 1, got {self.n_frames!r}")
        if not self.goal_radius > 0:
            raise ValueError(f"goal_radius must be > 0, got {self.goal_radius!r}")


class Reacher(GoalEnv):
    """Goal-conditioned 2-link reacher; `physics` is an `mjx.Data`."""

    state_size = 8
    goal_size = 2
    action_size = 2
    goal_indices = (0, 1)
    backend = "mjx"
    target_disc = 0.2  # goals are uniform in this disc around the base

    def __init__(self, config: ClassicConfig):
        config.validate()
        self.config = config
        self.name = "reacher"
        self.episode_length = config.episode_length
        self.goal_radius = config.goal_radius
        self.sim = MjxModel(_brax_model_without("reacher", "target"))
        self._tip = int(self.sim.mj.body("fingertip").id)

    def init_physics(self, rng: jax.Array) -> mjx.Data:
        """Joint angles uniform in ±0.1 rad, velocities in ±0.005 rad/s, motors off."""
        q_rng, v_rng = jax.random.split(rng)
        qpos = jax.random.uniform(q_rng, (2,), minval=-0.1, maxval=0.1)
        qvel = jax.random.uniform(v_rng, (2,), minval=-0.005, maxval=0.005)
        return self.sim.start(qpos, qvel, jnp.zeros(2))

    def sample_goal(self, rng: jax.Array, physics: mjx.Data) -> jax.Array:
        """Uniform (by area) in the disc of radius `target_disc`."""
        r_rng, a_rng = jax.random.split(rng)
        radius = self.target_disc * jnp.sqrt(jax.random.uniform(r_rng))
        angle = jax.random.uniform(a_rng, minval=0.0, maxval=2 * jnp.pi)
        return radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])

    def physics_step(self, physics: mjx.Data, action: jax.Array, goal: jax.Array) -> mjx.Data:
        """Apply the torques (ctrlrange is already [-1, 1]) for n_frames physics steps."""
        return self.sim.step(physics, action, self.config.n_frames)

    def observe(self, physics: mjx.Data) -> jax.Array:
        """[fingertip xy, cos q, sin q, q̇]."""
        q = physics.qpos
        parts = [physics.xpos[self._tip, :2], jnp.cos(q), jnp.sin(q), physics.qvel]
        return jnp.concatenate(parts).astype(jnp.float32)


class Pusher(GoalEnv):
    """Goal-conditioned pusher: bring the sliding object to a goal on the table."""

    state_size = 21
    goal_size = 2
    action_size = 7
    goal_indices = (0, 1)
    backend = "mjx"
    # World-frame (x, y) boxes of the object's start and of goals (see the module docstring).
    object_low, object_high = (0.15, -0.25), (0.45, 0.15)
    goal_low, goal_high = (-0.1, -0.25), (0.2, 0.15)
    min_goal_distance = 0.17

    def __init__(self, config: ClassicConfig):
        config.validate()
        self.config = config
        self.name = "pusher"
        self.episode_length = config.episode_length
        self.goal_radius = config.goal_radius
        # Fusing the 3 jointless links shortens the body chain from 11 to 8 bodies, which made a
        # CPU physics step ~20x faster (94 → 5 ms): XLA's CPU fusion of the chained forward
        # kinematics grows steeply with the chain's depth (see envs.mjx_sim on CPU flags).
        self.sim = MjxModel(_brax_model_without("pusher", "goal", fuse_static=True))
        mj = self.sim.mj
        # 'tips_arm' sits at the origin of the wrist-roll link and is fused into it.
        self._tip = int(mj.body("r_wrist_roll_link").id)
        self._obj_q = np.array([self.sim.qpos_adr("obj_slidex"), self.sim.qpos_adr("obj_slidey")])
        self._obj_v = np.array([self.sim.dof_adr("obj_slidex"), self.sim.dof_adr("obj_slidey")])
        self._arm_q = np.arange(7)  # the 7 arm hinges come first in the model
        # The slide joints measure offsets from the object body's rest position.
        self._obj_origin = jnp.asarray(mj.body("object").pos[:2], jnp.float32)
        self._ctrl_scale = jnp.asarray(mj.actuator_ctrlrange[:, 1], jnp.float32)

    def object_position(self, physics: mjx.Data) -> jax.Array:
        """World (x, y) of the object."""
        return self._obj_origin + physics.qpos[self._obj_q]

    def init_physics(self, rng: jax.Array) -> mjx.Data:
        """Arm at 0 with velocities in ±0.005, object uniform in its start box, at rest."""
        o_rng, v_rng = jax.random.split(rng)
        obj = jax.random.uniform(
            o_rng, (2,), minval=jnp.asarray(self.object_low), maxval=jnp.asarray(self.object_high)
        )
        qpos = jnp.zeros(self.sim.mj.nq).at[self._obj_q].set(obj - self._obj_origin)
        qvel = jnp.zeros(self.sim.mj.nv).at[self._arm_q].set(
            jax.random.uniform(v_rng, (7,), minval=-0.005, maxval=0.005)
        )
        return self.sim.start(qpos, qvel, jnp.zeros(self.sim.mj.nu))

    def sample_goal(self, rng: jax.Array, physics: mjx.Data) -> jax.Array:
        """Uniform in the goal box: the first of 8 draws at least min_goal_distance from the
        object (the first draw if none is)."""
        candidates = jax.random.uniform(
            rng,
            (_GOAL_CANDIDATES, 2),
            minval=jnp.asarray(self.goal_low),
            maxval=jnp.asarray(self.goal_high),
        )
        distance = jnp.linalg.norm(candidates - self.object_position(physics), axis=-1)
        return candidates[jnp.argmax(distance >= self.min_goal_distance)]

    def physics_step(self, physics: mjx.Data, action: jax.Array, goal: jax.Array) -> mjx.Data:
        """Apply the torques (action scaled to the motors' ±2) for n_frames physics steps."""
        return self.sim.step(physics, action * self._ctrl_scale, self.config.n_frames)

    def observe(self, physics: mjx.Data) -> jax.Array:
        """[object xy, tip xyz, arm q, arm q̇, object velocity]."""
        parts = [
            self.object_position(physics),
            physics.xpos[self._tip],
            physics.qpos[self._arm_q],
            physics.qvel[self._arm_q],
            physics.qvel[self._obj_v],
        ]
        return jnp.concatenate(parts).astype(jnp.float32)


# ---- factories ---------------------------------------------------------------------------------
def _config(defaults: dict[str, Any], overrides: dict[str, Any], env: str) -> ClassicConfig:
    known = {f.name for f in dataclasses.fields(ClassicConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown {env} option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return ClassicConfig(**{**defaults, **overrides})


def make_reacher(**overrides: Any) -> Reacher:
    """Goal-conditioned reacher (fingertip to a point); overrides replace ClassicConfig fields."""
    return Reacher(_config({"goal_radius": 0.05, "n_frames": 2}, overrides, "reacher"))


def make_pusher(**overrides: Any) -> Pusher:
    """Goal-conditioned pusher (object to a point); overrides replace ClassicConfig fields."""
    return Pusher(_config({"goal_radius": 0.1, "n_frames": 5}, overrides, "pusher"))
