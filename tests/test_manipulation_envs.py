"""Tests of the MJX manipulation envs: the arm tasks (envs.manipulation) and the goal-conditioned
reacher/pusher (envs.classic).

MJX compiles are slow on CPU (tens of seconds per env), so every env is built once with a short
episode (SHORT steps) and its jitted, vmapped reset/step are compiled once (module-scoped cache)
and shared by all tests; those tests are marked slow. States are edited between calls
("teleports") by replacing qpos / qvel in the batched mjx.Data: the next step recomputes
everything from them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs import arm_model

ARM_ENVS = [
    "arm_reach",
    "arm_push_easy",
    "arm_push_hard",
    "arm_binpick_easy",
    "arm_binpick_hard",
    "arm_grasp",
]
CLASSIC_ENVS = ["reacher", "pusher"]
ALL_ENVS = ARM_ENVS + CLASSIC_ENVS
CUBE_ENVS = [n for n in ARM_ENVS if n != "arm_reach"]
SHORT = 5  # episode length of the test envs
N = 2  # envs per batch
# XLA's CPU fusion emitters compile MJX slowly and, for deep body chains (the pusher), emit code
# that runs ~50x slower; the classic emitters avoid both (measured with jax 0.10).
COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}

EXPECTED = {  # name: (state_size, goal_size, action_size, goal_radius, default episode_length)
    "arm_reach": (10, 3, 4, 0.05, 1000),
    "arm_push_easy": (14, 3, 5, 0.1, 1000),
    "arm_push_hard": (14, 3, 5, 0.1, 1000),
    "arm_binpick_easy": (14, 3, 5, 0.1, 1000),
    "arm_binpick_hard": (14, 3, 5, 0.1, 1000),
    "arm_grasp": (14, 3, 5, 0.05, 1000),
    "reacher": (8, 2, 2, 0.05, 1000),
    "pusher": (21, 2, 7, 0.1, 1000),
}


@dataclasses.dataclass
class Compiled:
    env: Any
    reset: Callable  # keys [N] -> batched EnvState (jit + vmap of env.reset)
    step: Callable  # (batched EnvState, float32 actions [N, A]) -> batched EnvState


@pytest.fixture(scope="module")
def compiled() -> Callable[[str], Compiled]:
    """name -> Compiled, building and jitting each env once for the whole module."""
    cache: dict[str, Compiled] = {}

    def get(name: str) -> Compiled:
        if name not in cache:
            env = envs.make(name, episode_length=SHORT)
            keys = jax.random.split(jax.random.key(0), N)
            reset = jax.jit(jax.vmap(env.reset)).lower(keys).compile(COMPILE_OPTIONS)
            actions = jnp.zeros((N, env.action_size), jnp.float32)
            step = jax.jit(jax.vmap(env.step)).lower(reset(keys), actions).compile(COMPILE_OPTIONS)
            cache[name] = Compiled(env, reset, step)
        return cache[name]

    return get


# ---- helpers -----------------------------------------------------------------------------------
def reset(c: Compiled, seed: int = 0):
    return c.reset(jax.random.split(jax.random.key(seed), N))


def set_qpos(state, qpos: np.ndarray, qvel: np.ndarray | None = None):
    """Teleport the batch to joint positions `qpos` [N, nq] (velocities `qvel`, default 0)."""
    physics = state.physics
    qvel = np.zeros(physics.qvel.shape) if qvel is None else qvel
    physics = physics.replace(
        qpos=jnp.asarray(qpos, physics.qpos.dtype), qvel=jnp.asarray(qvel, physics.qvel.dtype)
    )
    return state.replace(physics=physics)


def run(c: Compiled, state, actions: np.ndarray, steps: int):
    """`steps` steps with fixed actions [N, A], keeping the episode from timing out."""
    for _ in range(steps):
        state = c.step(state.replace(step=jnp.zeros_like(state.step)), jnp.asarray(actions))
    return state


def physical_goal(env, qpos: np.ndarray) -> np.ndarray:
    """What the env's goal measures, from MuJoCo's C kinematics (independent of the env code)."""
    m = env.sim.mj
    d = mujoco.MjData(m)
    d.qpos[:] = qpos
    mujoco.mj_kinematics(m, d)
    if env.name == "arm_reach":
        return d.site_xpos[m.site("grip").id].copy()
    if env.name in CUBE_ENVS:
        return d.xpos[m.body("cube").id].copy()
    if env.name == "reacher":
        return d.xpos[m.body("fingertip").id, :2].copy()
    if env.name == "pusher":
        return d.xpos[m.body("object").id, :2].copy()
    raise AssertionError(env.name)


def arm_angles(env, state) -> np.ndarray:
    return np.asarray(state.physics.qpos)[:, env._arm_q]


def hold_actions(env, state) -> np.ndarray:
    """Actions that keep the arm where it is (gripper open) / apply no torque (classic envs)."""
    if env.name not in ARM_ENVS:
        return np.zeros((N, env.action_size))
    arm = np.stack([arm_model.joint_action(q) for q in arm_angles(env, state)])
    if env.action_size == 5:
        arm = np.concatenate([arm, -np.ones((N, 1))], axis=1)
    return arm


def arm_pose_qpos(env, state, angles: np.ndarray, fingers: float) -> np.ndarray:
    """The batch's qpos with the arm at `angles` [4] and both finger slides at `fingers`."""
    qpos = np.array(state.physics.qpos)
    qpos[:, env._arm_q] = angles
    qpos[:, env._finger_q] = fingers
    return qpos


def place_cube(env, qpos: np.ndarray, xyz) -> np.ndarray:
    qpos = qpos.copy()
    qpos[:, env._cube_q : env._cube_q + 3] = xyz
    qpos[:, env._cube_q + 3 : env._cube_q + 7] = (1.0, 0.0, 0.0, 0.0)
    return qpos


def cube_xyz(env, state) -> np.ndarray:
    return np.asarray(state.physics.qpos)[:, env._cube_q : env._cube_q + 3]


def grip_xyz(env, state) -> np.ndarray:
    return np.asarray(state.physics.site_xpos)[:, env._grip_site]


# ---- fast checks (no MJX compile) --------------------------------------------------------------
def test_all_registered():
    assert set(ALL_ENVS) <= set(envs.names())


@pytest.mark.parametrize("name", ALL_ENVS)
def test_dimensions_and_defaults(name):
    env = envs.make(name)
    state_size, goal_size, action_size, radius, length = EXPECTED[name]
    assert (env.state_size, env.goal_size, env.action_size) == (state_size, goal_size, action_size)
    assert env.observation_size == state_size + goal_size
    assert len(env.goal_indices) == goal_size and max(env.goal_indices) < state_size
    assert env.goal_radius == radius and env.episode_length == length
    assert env.backend == "mjx" and env.name == name
    assert envs.make(name, episode_length=7).episode_length == 7


@pytest.mark.parametrize("name", ["arm_push_easy", "reacher"])
def test_bad_options_fail_before_compiling(name):
    with pytest.raises(ValueError, match="unknown"):
        envs.make(name, episode_lenght=10)
    with pytest.raises(ValueError, match="episode_length"):
        envs.make(name, episode_length=0)


def test_ik_puts_grip_where_asked_and_every_sampled_point_is_reachable():
    """The closed-form IK agrees with MuJoCo's kinematics, and every corner of every start/goal
    box of the arm tasks is reachable with the hand pointing down inside the joint ranges."""
    env = envs.make("arm_reach")
    m, d = env.sim.mj, mujoco.MjData(env.sim.mj)
    corners = []
    for name in ARM_ENVS:
        cfg = envs.make(name).config
        lo, hi = np.array(cfg.goal_low), np.array(cfg.goal_high)
        corners += [np.where(np.array(bits), hi, lo) for bits in np.ndindex(2, 2, 2)]
        if name != "arm_reach":
            clo, chi = np.array(cfg.cube_low), np.array(cfg.cube_high)
            corners += [np.append(np.where(np.array(b), chi, clo), 0.03) for b in np.ndindex(2, 2)]
    for point in corners:
        angles = arm_model.grip_down_ik(point)
        arm_model.joint_action(angles)  # raises if outside the joint ranges
        d.qpos[env._arm_q] = angles
        mujoco.mj_kinematics(m, d)
        np.testing.assert_allclose(d.site_xpos[m.site("grip").id], point, atol=1e-9)
        hand_axis = d.site_xpos[m.site("grip").id] - d.xpos[m.body("hand").id]
        np.testing.assert_allclose(hand_axis / np.linalg.norm(hand_axis), [0, 0, -1], atol=1e-9)
    with pytest.raises(ValueError, match="reach"):
        arm_model.grip_down_ik(np.array([2.0, 0.0, 0.0]))


def test_action_scaling_inverts_joint_action():
    env = envs.make("arm_grasp")
    angles = arm_model.grip_down_ik(np.array([0.4, 0.1, 0.1]))
    action = np.append(arm_model.joint_action(angles), 1.0)
    ctrl = np.asarray(env.controls(jnp.asarray(action, jnp.float32)))
    np.testing.assert_allclose(ctrl[:4], angles, atol=1e-5)
    np.testing.assert_allclose(ctrl[4:], arm_model.FINGER_RANGE[0])  # +1 closes
    ctrl_open = np.asarray(env.controls(jnp.asarray(np.append(action[:4], -1.0), jnp.float32)))
    np.testing.assert_allclose(ctrl_open[4:], arm_model.FINGER_RANGE[1])


def test_bin_regions_lie_inside_the_bins():
    bins = arm_model.Bins()
    walls = bins.wall_boxes()
    for name, center in (("cube", bins.source_center), ("goal", bins.target_center)):
        for variant in ("arm_binpick_easy", "arm_binpick_hard"):
            cfg = envs.make(variant).config
            if name == "cube":
                lo, hi = cfg.cube_low, cfg.cube_high
            else:
                lo, hi = cfg.goal_low, cfg.goal_high
            for x in (lo[0], hi[0]):
                for y in (lo[1], hi[1]):
                    # the whole cube footprint stays off every wall
                    for c, h in walls:
                        gap = np.abs(np.array([x, y]) - c[:2]) - h[:2] - arm_model.CUBE_HALF
                        assert gap.max() > 0, (variant, name, x, y)
                    assert abs(x - center[0]) < bins.inner_half
                    assert abs(y - center[1]) < bins.inner_half


# ---- compiled checks ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_ENVS)
def test_reset_and_step_shapes_dtypes_and_finite(compiled, name):
    c = compiled(name)
    env = c.env
    state = reset(c)
    assert state.obs.shape == (N, env.observation_size) and state.obs.dtype == jnp.float32
    assert state.goal.shape == (N, env.goal_size)
    assert state.step.dtype == jnp.int32 and state.done.dtype == jnp.bool_
    np.testing.assert_array_equal(state.obs[:, env.state_size :], state.goal)
    assert not np.allclose(state.goal[0], state.goal[1])  # independent goals per env
    actions = jax.random.uniform(jax.random.key(1), (N, env.action_size), minval=-1, maxval=1)
    for i in range(SHORT - 1):
        state = c.step(state, actions)
        assert state.obs.shape == (N, env.observation_size) and state.obs.dtype == jnp.float32
        np.testing.assert_array_equal(state.step, i + 1)
        assert not state.done.any()
        for key in ("distance", "at_goal"):
            assert state.metrics[key].shape == (N,) and state.metrics[key].dtype == jnp.float32
        assert np.isfinite(np.asarray(state.obs)).all()
        np.testing.assert_array_equal(state.obs[:, env.state_size :], state.goal)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_ENVS)
def test_goal_slice_is_the_goal(compiled, name):
    """obs[goal_indices] is the physical quantity (checked against MuJoCo's C kinematics), and
    putting that quantity on the goal makes the step report at_goal = 1."""
    c = compiled(name)
    env = c.env
    state = reset(c)
    for i in range(N):
        np.testing.assert_allclose(
            env.achieved_goal(state.obs[i]),
            physical_goal(env, np.asarray(state.physics.qpos[i])),
            atol=1e-5,
        )
    start_distance = np.linalg.norm(env.achieved_goal(state.obs) - state.goal, axis=-1)
    np.testing.assert_allclose(state.metrics["distance"], start_distance, atol=1e-5)
    if name in CUBE_ENVS + ["pusher"]:
        # The tasks start the object away from its goal.
        assert (start_distance > env.goal_radius).all()

    goal = np.asarray(state.goal)
    if name in CUBE_ENVS:
        # Swing the arm aside (yaw at its limit) so it cannot touch the cube, then put the cube
        # on the goal.
        angles = env._ready_angles.copy()
        angles[0] = arm_model.ARM_RANGES[0, 0]
        qpos = arm_pose_qpos(env, state, angles, arm_model.FINGER_RANGE[1])
        qpos[:, env._cube_q : env._cube_q + 3] = goal
        state = set_qpos(state, qpos)
    elif name == "pusher":
        qpos = np.array(state.physics.qpos)
        qpos[:, env._obj_q] = goal - np.asarray(env._obj_origin)
        state = set_qpos(state, qpos)
    else:  # reach / reacher: the goal moves onto the (nearly still) effector instead
        achieved = np.asarray(env.achieved_goal(state.obs))
        state = state.replace(
            goal=jnp.asarray(achieved),
            obs=state.obs.at[:, env.state_size :].set(achieved),
        )
    state = c.step(state, jnp.asarray(hold_actions(env, state), jnp.float32))
    np.testing.assert_array_equal(state.metrics["at_goal"], 1.0)
    assert (np.asarray(state.metrics["distance"]) < env.goal_radius / 2).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_ENVS)
def test_auto_reset_resamples_the_goal(compiled, name):
    c = compiled(name)
    env = c.env
    state = reset(c, seed=3)
    rng = jax.random.key(4)
    goals = [np.asarray(state.goal)]
    for episode in range(2):
        first_goal = np.asarray(state.goal)
        for i in range(SHORT):
            rng, key = jax.random.split(rng)
            actions = jax.random.uniform(key, (N, env.action_size), minval=-1, maxval=1)
            state = c.step(state, actions)
            last = i == SHORT - 1
            np.testing.assert_array_equal(state.done, last)
            np.testing.assert_array_equal(state.step, 0 if last else i + 1)
            if not last:
                np.testing.assert_array_equal(state.goal, first_goal)
        goals.append(np.asarray(state.goal))
        np.testing.assert_array_equal(state.obs[:, env.state_size :], state.goal)
        assert np.isfinite(np.asarray(state.obs)).all()
    for before, after in zip(goals, goals[1:]):
        # a fresh goal in every env slot at every episode boundary
        assert (np.linalg.norm(after - before, axis=-1) > 1e-4).all()
    if name in ARM_ENVS:
        # the arm is back near its ready pose after the reset
        np.testing.assert_allclose(
            arm_angles(env, state), np.broadcast_to(env._ready_angles, (N, 4)),
            atol=env.config.start_noise + 1e-4,
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", ARM_ENVS)
def test_arm_moves_the_grip_toward_commanded_pose(compiled, name):
    c = compiled(name)
    env = c.env
    state = reset(c)
    target = np.array([0.5, 0.12, 0.12])
    arm = arm_model.joint_action(arm_model.grip_down_ik(target))
    actions = np.tile(arm, (N, 1))
    if env.action_size == 5:
        actions = np.concatenate([actions, -np.ones((N, 1))], axis=1)
    actions[1] = hold_actions(env, state)[1]  # env 1 holds still: the control
    before = grip_xyz(env, state)
    state = run(c, state, actions, 4)
    after = grip_xyz(env, state)
    # the observed grip position and velocity are MuJoCo's (C) for the reached state
    grip_at = 4 if name == "arm_reach" else 7
    m, d = env.sim.mj, mujoco.MjData(env.sim.mj)
    d.qpos[:], d.qvel[:] = np.asarray(state.physics.qpos[0]), np.asarray(state.physics.qvel[0])
    mujoco.mj_forward(m, d)
    velocity = np.zeros(6)
    mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_SITE, env._grip_site, velocity, 0)
    obs = np.asarray(state.obs[0])
    np.testing.assert_allclose(obs[grip_at : grip_at + 3], after[0], atol=1e-5)
    np.testing.assert_allclose(obs[grip_at + 3 : grip_at + 6], velocity[3:], atol=1e-3)
    d_before, d_after = (np.linalg.norm(x[0] - target) for x in (before, after))
    assert d_after < 0.6 * d_before, (d_before, d_after)
    assert np.linalg.norm(after[1] - before[1]) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("name", ["arm_push_easy", "arm_push_hard"])
def test_arm_pushes_the_cube(compiled, name):
    """Closed fingers swept along +y through the cube push it; a still arm leaves it alone."""
    c = compiled(name)
    env = c.env
    state = reset(c)
    cube = np.array([0.42, -0.05, arm_model.CUBE_HALF])
    start = arm_model.grip_down_ik(cube + [0.0, -0.065, 0.01])
    qpos = place_cube(env, arm_pose_qpos(env, state, start, 0.0), cube)
    state = set_qpos(state, qpos)
    sweep = np.append(arm_model.joint_action(arm_model.grip_down_ik(cube + [0, 0.12, 0.01])), 1)
    hold = np.append(arm_model.joint_action(start), 1.0)
    state = run(c, state, np.stack([sweep, hold]), 4)
    moved = cube_xyz(env, state) - cube
    assert moved[0, 1] > 0.02, moved
    assert np.linalg.norm(moved[1]) < 0.005, moved


@pytest.mark.slow
@pytest.mark.parametrize("name", ["arm_grasp", "arm_binpick_easy", "arm_binpick_hard"])
def test_gripper_picks_up_the_cube(compiled, name):
    """Fingers closed around the cube lift it with the hand; open fingers leave it on the table."""
    c = compiled(name)
    env = c.env
    state = reset(c)
    xy = arm_model.Bins().source_center if "binpick" in name else (0.42, 0.0)
    cube = np.array([*xy, arm_model.CUBE_HALF])
    low = arm_model.grip_down_ik(cube + [0, 0, 0.005])
    high = arm_model.grip_down_ik(cube + [0, 0, 0.2])
    state = set_qpos(state, place_cube(env, arm_pose_qpos(env, state, low, 0.045), cube))
    close = np.append(arm_model.joint_action(low), 1.0)
    state = run(c, state, np.stack([close, hold_actions(env, state)[1]]), 2)
    lift_closed = np.append(arm_model.joint_action(high), 1.0)
    lift_open = np.append(arm_model.joint_action(high), -1.0)
    state = run(c, state, np.stack([lift_closed, lift_open]), 4)
    cube_now, grip_now = cube_xyz(env, state), grip_xyz(env, state)
    assert cube_now[0, 2] > cube[2] + 0.04, cube_now  # lifted by the closed hand
    assert np.linalg.norm(cube_now[0] - grip_now[0]) < 0.04  # and held between the pads
    assert grip_now[1, 2] > cube[2] + 0.05 and abs(cube_now[1, 2] - cube[2]) < 0.005


@pytest.mark.slow
def test_bin_divider_stops_a_pushed_cube(compiled):
    c = compiled("arm_binpick_hard")
    env = c.env
    state = reset(c)
    cube = np.array([0.42, -0.07, arm_model.CUBE_HALF])
    start = arm_model.grip_down_ik(cube + [0, -0.065, 0.01])
    state = set_qpos(state, place_cube(env, arm_pose_qpos(env, state, start, 0.0), cube))
    sweep = np.append(arm_model.joint_action(arm_model.grip_down_ik(cube + [0, 0.2, 0.01])), 1)
    state = run(c, state, np.stack([sweep, sweep]), 6)
    divider_face = arm_model.Bins().wall_boxes()[-1]
    face_y = divider_face[0][1] - divider_face[1][1]
    y = cube_xyz(env, state)[:, 1]
    assert (y > cube[1] + 0.01).all(), y  # it was pushed ...
    assert (y < face_y - arm_model.CUBE_HALF + 0.01).all(), y  # ... and stopped at the divider


@pytest.mark.slow
def test_reacher_torques_move_the_fingertip(compiled):
    c = compiled("reacher")
    state = reset(c)
    before = np.asarray(state.obs)[:, :2]
    state = run(c, state, np.array([[1.0, 1.0], [-1.0, -1.0]]), 4)
    moved = np.asarray(state.obs)[:, :2] - before
    assert (np.linalg.norm(moved, axis=-1) > 0.01).all(), moved
    assert np.dot(moved[0], moved[1]) < 0  # opposite torques, opposite ways


@pytest.mark.slow
def test_pusher_sweep_pushes_the_object(compiled):
    """The lowered arm swinging (pan) into the object moves it; a still arm does not."""
    c = compiled("pusher")
    env = c.env
    state = reset(c)
    m, d = env.sim.mj, mujoco.MjData(env.sim.mj)
    arm = np.zeros(7)
    arm[1] = 0.35  # shoulder lift: the scoop at the object's height
    d.qpos[:7], d.qpos[0] = arm, 0.3
    mujoco.mj_kinematics(m, d)
    target = d.xpos[env._tip, :2]  # where the tip will be at pan 0.3
    qpos = np.zeros((N, m.nq))
    qpos[:, :7] = arm
    qpos[:, env._obj_q] = target - np.asarray(env._obj_origin)
    qvel = np.zeros((N, m.nv))
    qvel[0, 0] = 1.5  # env 0 swings toward the object
    state = set_qpos(state, qpos, qvel)
    actions = np.zeros((N, 7))
    actions[0, 0] = 1.0
    state = run(c, state, actions, 4)
    moved = np.asarray(state.obs)[:, :2] - target
    assert np.linalg.norm(moved[0]) > 0.01, moved
    assert np.linalg.norm(moved[1]) < 1e-4, moved
