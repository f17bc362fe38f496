"""The MJX (MuJoCo in JAX) plumbing shared by the arm tasks and the classic reacher/pusher: compile
an MJCF string once, start states, and one agent step of several physics steps.

On CPU, compile with XLA's classic fusion emitters (`XLA_FLAGS=--xla_cpu_use_fusion_emitters=false`
or `.lower(...).compile({"xla_cpu_use_fusion_emitters": False})`): with jax 0.10 this cuts MJX
compile time by about a third and, for the pusher's long body chain, runs a step ~50x faster.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx


class MjxModel:
    """A compiled MuJoCo model on both sides: `mj` (C, for names/addresses/tests) and `mjx` (JAX),
    plus a template `mjx.Data` that start states are built from."""

    def __init__(self, xml: str):
        self.mj = mujoco.MjModel.from_xml_string(xml)
        self.mjx = mjx.put_model(self.mj, impl="jax")
        self.data0 = mjx.make_data(self.mjx)

    def qpos_adr(self, joint: str) -> int:
        """Index of joint `joint`'s first coordinate in qpos."""
        return int(self.mj.joint(joint).qposadr[0])

    def dof_adr(self, joint: str) -> int:
        """Index of joint `joint`'s first degree of freedom in qvel."""
        return int(self.mj.joint(joint).dofadr[0])

    def start(self, qpos: jax.Array, qvel: jax.Array, ctrl: jax.Array) -> mjx.Data:
        """A state at `qpos`/`qvel` with servo/motor inputs `ctrl`; body and site positions are
        computed, the rest (contacts, forces) is left for the first step to compute."""
        data = self.data0.replace(
            qpos=qpos.astype(self.data0.qpos.dtype),
            qvel=qvel.astype(self.data0.qvel.dtype),
            ctrl=ctrl.astype(self.data0.ctrl.dtype),
        )
        return mjx.kinematics(self.mjx, data)

    def teleport(self, data: mjx.Data, qpos: jax.Array) -> mjx.Data:
        """`data` moved to joint positions `qpos` at rest (zero velocity), positions recomputed."""
        data = data.replace(qpos=qpos.astype(data.qpos.dtype), qvel=jnp.zeros_like(data.qvel))
        return mjx.kinematics(self.mjx, data)

    def step(self, data: mjx.Data, ctrl: jax.Array, n_frames: int) -> mjx.Data:
        """Hold `ctrl` for `n_frames` physics steps (a fori_loop: one compiled step body)."""
        data = data.replace(ctrl=ctrl.astype(data.ctrl.dtype))
        data = jax.lax.fori_loop(0, n_frames, lambda _, d: mjx.step(self.mjx, d), data)
        # mjx.step leaves body/site positions at the pose before its last integration; refresh
        # them so observations describe the state the agent is in.
        return mjx.kinematics(self.mjx, data)
