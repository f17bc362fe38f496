"""Tests for the brax ant/humanoid locomotion envs (envs/locomotion.py), `python -m envs` and
`envs.render`.

Physics compiles are slow on CPU, so each env is compiled exactly once, into one jitted function
(`_Runner`) that resets 2 envs, optionally places the robot / ball somewhere with a velocity
("teleports"), then scans `STEPS` steps with given actions; every physics test reuses it with
different inputs. Episodes are `EPISODE` steps long so the scan crosses two auto-resets.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import locomotion, maze_layouts, mjcf_tools

ANT_MAZES = ["ant_u_maze", "ant_u4_maze", "ant_u5_maze", "ant_big_maze", "ant_hardest_maze"]
HUMANOID_MAZES = ["humanoid_u_maze", "humanoid_big_maze", "humanoid_hardest_maze"]
MAZES = ANT_MAZES + HUMANOID_MAZES
LOCOMOTION_ENVS = ["ant", "ant_ball", "ant_push", "humanoid"] + MAZES
EPISODE = 12
STEPS = 2 * EPISODE + 2
NUM_ENVS = 2
GOAL_NOISE = 0.1

# Keep/teleport modes for the robot's torso and the ball.
KEEP, AT_XY, AT_GOAL = 0, 1, 2


class _Runner:
    """One compiled function per env: reset → place → `STEPS` steps, vmapped over 2 envs."""

    def __init__(self, name: str, **overrides):
        # Fixed-length episodes (the robots may fall under random actions): the fall
        # termination is tested in tests/test_env_fidelity.py.
        overrides.setdefault("terminate_when_unhealthy", False)
        self.env = env = envs.make(name, episode_length=EPISODE, **overrides)
        has_ball = env.config.task == "ball"

        def run(key, actions, mode, xy, velocity, ball_mode, ball_xy):
            state = env.reset(key)
            physics = state.physics
            target = jnp.where(mode == AT_GOAL, state.goal[:2], xy)
            moved = env.teleport(physics, target, velocity)
            physics = jax.tree.map(lambda a, b: jnp.where(mode > KEEP, a, b), moved, physics)
            if has_ball:
                ball_target = jnp.where(ball_mode == AT_GOAL, state.goal, ball_xy)
                moved = env.set_object(physics, ball_target)
                physics = jax.tree.map(
                    lambda a, b: jnp.where(ball_mode > KEEP, a, b), moved, physics
                )
            state = state.replace(
                physics=physics, obs=jnp.concatenate([env.observe(physics), state.goal])
            )

            def body(state, action):
                state = env.step(state, action)
                record = {
                    "obs": state.obs, "goal": state.goal, "done": state.done,
                    "step": state.step, **state.metrics,
                }
                return state, record

            return state, jax.lax.scan(body, state, actions)[1]

        self._run = jax.jit(jax.vmap(run))

    def __call__(self, actions=None, mode=(KEEP, KEEP), xy=None, velocity=None,
                 ball_mode=(KEEP, KEEP), ball_xy=None, seed=0):
        """Run with per-env placement; defaults: no placement, uniform random actions."""
        env = self.env
        rng = jax.random.PRNGKey(seed)
        if actions is None:
            actions = jax.random.uniform(
                rng, (NUM_ENVS, STEPS, env.action_size), minval=-1.0, maxval=1.0
            )
        zeros = np.zeros((NUM_ENVS, 2), np.float32)
        start, traj = self._run(
            jax.random.split(rng, NUM_ENVS),
            jnp.asarray(actions, jnp.float32),
            jnp.asarray(mode, jnp.int32),
            jnp.asarray(zeros if xy is None else xy, jnp.float32),
            jnp.asarray(zeros if velocity is None else velocity, jnp.float32),
            jnp.asarray(ball_mode, jnp.int32),
            jnp.asarray(zeros if ball_xy is None else ball_xy, jnp.float32),
        )
        # vmap puts the env axis first; tests index [step, env]
        return start, jax.tree.map(lambda a: np.swapaxes(np.asarray(a), 0, 1), traj)


@pytest.fixture(scope="module")
def runners():
    """Compiled runners, built on first use and shared by every test of this module."""
    cache: dict[str, _Runner] = {}

    def get(name: str, **overrides) -> _Runner:
        if name in MAZES or name == "ant_push":
            # Jittered goals are continuous, so a resampled goal always differs from the last
            # (the exact-centre default is checked without physics below).
            overrides.setdefault("goal_noise", GOAL_NOISE)
        key = name + repr(sorted(overrides.items()))
        if key not in cache:
            cache[key] = _Runner(name, **overrides)
        return cache[key]

    return get


def _zero_actions(env):
    return np.zeros((NUM_ENVS, STEPS, env.action_size), np.float32)


# ---- cheap checks (no physics compile) ---------------------------------------------------------
@pytest.mark.parametrize("name", LOCOMOTION_ENVS)
def test_registered_with_documented_sizes(name):
    env = envs.make(name)
    robot = "humanoid" if name.startswith("humanoid") else "ant"
    state_size = {"ant": 29, "humanoid": 268}[robot] + {"ant_ball": 6, "ant_push": 3}.get(name, 0)
    goal_size = {"ant": 2, "humanoid": 3}[robot]
    assert env.name == name and env.backend == "spring" and env.episode_length == 1000
    assert env.state_size == state_size and env.goal_size == goal_size
    assert env.goal_radius == 0.5 and env.terminate_when_unhealthy
    assert env.action_size == {"ant": 8, "humanoid": 17}[robot]
    assert env.observation_size == state_size + goal_size
    expected = {"ant": (0, 1), "humanoid": (0, 1, 2)}[robot]
    assert env.goal_indices == ((29, 30) if name == "ant_ball" else expected)


def test_bad_options_fail_before_compiling():
    with pytest.raises(ValueError, match="unknown backend"):
        envs.make("ant", backend="bullet")
    with pytest.raises(ValueError, match="unknown locomotion option"):
        envs.make("ant_u_maze", cell_sise=3.0)
    with pytest.raises(ValueError, match="episode_length"):
        envs.make("humanoid", episode_length=0)
    with pytest.raises(ValueError, match="ant only"):
        locomotion.make_locomotion("humanoid", "ball")
    with pytest.raises(ValueError, match="unknown maze layout"):
        locomotion.make_locomotion("ant", "maze", "spiral")
    with pytest.raises(ValueError, match="goal_noise"):
        envs.make("ant_big_maze", goal_noise=0.7)


@pytest.mark.parametrize("name", ["ant_u_maze", "ant_hardest_maze", "humanoid_big_maze"])
def test_maze_walls_are_generated_from_the_layout(name):
    env = envs.make(name)
    layout, size = env.layout, env.config.cell_size
    root = ET.fromstring(env.xml)
    walls = {
        g.get("name"): g for g in root.iter("geom")
        if g.get("name", "").startswith(("wall_", "solid_"))
    }
    wall_cells = maze_layouts.wall_mask(layout)
    assert len(walls) == wall_cells.sum()
    reachable = locomotion.reachable_wall_cells(layout)
    for row, col in np.argwhere(wall_cells):
        collide = reachable[row, col]
        geom = walls[f"{'wall' if collide else 'solid'}_{row}_{col}"]
        assert geom.get("type") == "box"
        pos = np.array([float(v) for v in geom.get("pos").split()])
        np.testing.assert_allclose(pos[:2], maze_layouts.cell_center(np.array([row, col]), size))
        assert np.allclose([float(v) for v in geom.get("size").split()][:2], size / 2)
        assert geom.get("conaffinity") == str(mjcf_tools.WALL if collide else 0)
    # Every wall cell next to a free cell collides; the start is the 'R' cell centre.
    free = ~wall_cells
    for row, col in np.argwhere(free):
        for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            if wall_cells[row + dr, col + dc]:
                assert reachable[row + dr, col + dc]
    # the robot geoms meant to be stopped by walls carry the WALL bit, the others do not
    for geom in root.iter("geom"):
        if geom.get("name") in env.robot.contact_geoms:
            stopped = geom.get("name") in env.robot.wall_geoms
            assert bool(int(geom.get("contype")) & mjcf_tools.WALL) == stopped
    start = maze_layouts.cell_center(maze_layouts.cells(layout, "R")[0], size)
    np.testing.assert_allclose(np.asarray(env.start_xy), start)


@pytest.mark.parametrize("name", ["ant_u4_maze", "humanoid_hardest_maze"])
def test_default_maze_goals_are_goal_cell_centres(name):
    env = envs.make(name)
    keys = jax.random.split(jax.random.PRNGKey(0), 1000)
    goals = np.asarray(jax.vmap(env._sample_goal_xy)(keys))
    centres = maze_layouts.cell_center(maze_layouts.cells(env.layout, "G"), env.config.cell_size)
    distances = np.linalg.norm(goals[:, None] - centres[None], axis=-1)
    assert distances.min(1).max() < 1e-5
    assert len(np.unique(distances.argmin(1))) == len(centres)  # every goal cell is drawn


def test_max_geom_pairs_is_read_back_by_mujoco():
    root = mjcf_tools.brax_asset("ant")
    mjcf_tools.set_max_geom_pairs(root, 7)
    import mujoco

    model = mujoco.MjModel.from_xml_string(mjcf_tools.to_xml(root))
    assert model.numeric_data[0] == 7  # mjx reads numeric_data[id]: it must be the first numeric
    # brax's own numerics survive the edit
    assert mjcf_tools.get_custom_numeric(root, "init_qpos").shape == (15,)


# ---- physics (one compile per env) -------------------------------------------------------------
def _marks(name):
    # The plain ant stays in the quick suite; every other env's compile is slow.
    return [] if name == "ant" else [pytest.mark.slow]


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in LOCOMOTION_ENVS])
def test_reset_step_shapes_finite_and_goal_resampled_on_auto_reset(runners, name):
    runner = runners(name)
    env = runner.env
    start, traj = runner()
    assert start.obs.shape == (NUM_ENVS, env.observation_size) and start.obs.dtype == jnp.float32
    assert start.goal.shape == (NUM_ENVS, env.goal_size) and start.goal.dtype == jnp.float32
    assert traj["obs"].shape == (STEPS, NUM_ENVS, env.observation_size)
    assert traj["obs"].dtype == np.float32 and traj["done"].dtype == np.bool_
    assert traj["step"].dtype == np.int32
    assert np.isfinite(traj["obs"]).all() and np.isfinite(traj["distance"]).all()
    np.testing.assert_array_equal(traj["obs"][..., env.state_size :], traj["goal"])
    # obs = state ⊕ goal and the metric is the distance of the goal slice to the goal
    achieved = traj["obs"][..., np.asarray(env.goal_indices)]
    continuing = ~traj["done"]
    np.testing.assert_allclose(
        traj["distance"][continuing],
        np.linalg.norm(achieved - traj["goal"], axis=-1)[continuing], rtol=1e-4, atol=1e-4,
    )
    # Fixed-length episodes: done exactly every EPISODE steps, then a fresh start and goal.
    done_steps = np.flatnonzero(traj["done"][:, 0]) + 1
    np.testing.assert_array_equal(done_steps, [EPISODE, 2 * EPISODE])
    assert (traj["done"][:, 0] == traj["done"][:, 1]).all()
    np.testing.assert_array_equal(traj["step"][EPISODE - 1], 0)
    goals = [start.goal, traj["goal"][EPISODE - 1], traj["goal"][2 * EPISODE - 1]]
    for slot in range(NUM_ENVS):
        episode_goals = np.array([np.asarray(g[slot]) for g in goals])
        # within an episode the goal is constant ...
        assert (traj["goal"][: EPISODE - 1, slot] == episode_goals[0]).all()
        # ... and each auto-reset draws a new one
        assert not np.allclose(episode_goals[0], episode_goals[1]), episode_goals
        assert not np.allclose(episode_goals[1], episode_goals[2]), episode_goals
    if env.layout is not None:  # goals lie in 'G' cells, within the jitter of the centre
        size = env.config.cell_size
        centres = maze_layouts.cell_center(maze_layouts.cells(env.layout, "G"), size)
        all_goals = np.concatenate([np.asarray(start.goal)[None], traj["goal"]])
        for goal in all_goals.reshape(-1, env.goal_size)[:, :2]:
            offset = np.abs(centres - goal).max(-1).min()
            assert offset <= GOAL_NOISE * size + 1e-4, goal
    # the robot starts at the start after an auto-reset
    start_xy = np.asarray(env.start_xy)
    torso_after_reset = traj["obs"][EPISODE - 1, :, :2]
    assert np.abs(torso_after_reset - start_xy).max() < 0.5


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in LOCOMOTION_ENVS])
def test_goal_slice_is_the_goal(runners, name):
    """Teleport the robot (or the ball) onto the goal: the env reports being at the goal; a
    robot left where it started is not (the goal is far away in every env)."""
    runner = runners(name)
    env = runner.env
    if env.config.task == "ball":
        start, traj = runner(_zero_actions(env), ball_mode=(AT_GOAL, KEEP))
    else:
        start, traj = runner(_zero_actions(env), mode=(AT_GOAL, KEEP))
    achieved = start.obs[0, np.asarray(env.goal_indices)]
    np.testing.assert_allclose(achieved[:2], start.goal[0, :2], atol=1e-5)  # teleported in x, y
    assert np.abs(achieved[2:] - start.goal[0, 2:]).max(initial=0.0) < 0.2  # humanoid's z
    # (the humanoid's torso stands 0.15 m above its goal height when teleported)
    assert traj["at_goal"][0, 0] == 1.0 and traj["distance"][0, 0] < 0.3
    assert traj["at_goal"][0, 1] == 0.0 and traj["distance"][0, 1] > env.goal_radius


def _wall_shot(env, speed, gap):
    """Two envs at the start cell: slot 0 `gap` metres from the wall on its left and shot at it,
    slot 1 at the same place shot to the right, into the free corridor."""
    size = env.config.cell_size
    start = np.asarray(env.start_xy)
    wall_face = start[0] - size / 2
    assert maze_layouts.wall_mask(env.layout)[1, 0] and not maze_layouts.wall_mask(env.layout)[1, 2]
    xy = np.array([[wall_face + gap, start[1]]] * 2)
    velocity = np.array([[-speed, 0.0], [speed, 0.0]])
    return wall_face, xy, velocity


# (speed m/s, gap to the wall m, clearance the torso centre keeps from the wall face m); the
# torso sphere of the ant has radius 0.25. The humanoid's walls are 1 m high (half a cell, as
# the references) and its torso at 1.4 m: the wall stops the hips, the trunk may lean over it.
_SHOTS = {"ant": (8.0, 1.0, 0.1), "humanoid": (5.0, 0.35, -0.1)}


def _assert_blocked(traj, wall_face, xy, gap, clearance):
    """Slot 0 (shot at the wall) keeps its clearance; slot 1 (same shot, free corridor) travels
    further than slot 0 could have without the wall: the wall did the stopping."""
    torso_x = traj["obs"][: EPISODE - 1, :, 0]
    assert torso_x[:, 0].min() > wall_face + clearance, torso_x[:, 0]
    assert torso_x[:, 1].max() - xy[1, 0] > gap - clearance + 0.05, torso_x[:, 1]


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in MAZES])
def test_maze_walls_block_the_robot(runners, name):
    runner = runners(name)
    env = runner.env
    speed, gap, clearance = _SHOTS[env.config.robot]
    wall_face, xy, velocity = _wall_shot(env, speed, gap)
    _, traj = runner(_zero_actions(env), mode=(AT_XY, AT_XY), xy=xy, velocity=velocity)
    _assert_blocked(traj, wall_face, xy, gap, clearance)


@pytest.mark.slow
def test_ant_push_block_blocks_from_above_and_slides_when_pushed(runners):
    runner = runners("ant_push")
    env = runner.env
    size = env.config.cell_size
    block = np.asarray(env.block_start)
    # slot 0: above the block, shot down at it; slot 1: left of the block, shot right at it.
    xy = np.array([[block[0], block[1] + size / 2 + 1.0], [block[0] - size / 2 - 1.0, block[1]]])
    velocity = np.array([[0.0, -8.0], [8.0, 0.0]])
    start, traj = runner(_zero_actions(env), mode=(AT_XY, AT_XY), xy=xy, velocity=velocity)
    first = slice(0, EPISODE - 1)
    torso_y, block_x = traj["obs"][first, 0, 1], traj["obs"][first, :, 29]
    assert torso_y.min() > block[1] + 0.45 * size + 0.1, torso_y  # never through the block
    assert np.abs(block_x[:, 0] - block[0]).max() < 0.5, block_x[:, 0]  # not pushed out of the gap
    assert block_x[:, 1].max() > block[0] + 0.3, block_x[:, 1]  # pushed along x
    np.testing.assert_allclose(start.obs[:, 29:31], np.repeat(block[None], 2, 0), atol=1e-5)


@pytest.mark.slow
def test_ant_kicks_the_ball(runners):
    runner = runners("ant_ball")
    env = runner.env
    start_xy = np.asarray(env.start_xy)
    ball_xy = np.array([[start_xy[0] + 1.5, start_xy[1]]] * 2)
    # slot 0 runs into the ball, slot 1 runs away from it
    velocity = np.array([[6.0, 0.0], [-6.0, 0.0]])
    xy = np.repeat(start_xy[None], 2, 0)
    _, traj = runner(_zero_actions(env), mode=(AT_XY, AT_XY), xy=xy, velocity=velocity,
                     ball_mode=(AT_XY, AT_XY), ball_xy=ball_xy)
    ball = traj["obs"][: EPISODE - 1, :, 29:31]
    moved = np.linalg.norm(ball - ball_xy[None], axis=-1).max(0)
    assert moved[0] > 0.2 and moved[1] < 0.02, moved


@pytest.mark.slow
def test_mjx_backend_override_blocks_walls_too(runners):
    runner = runners("ant_u_maze", backend="mjx")
    env = runner.env
    assert env.backend == "mjx"
    speed, gap, clearance = _SHOTS["ant"]
    wall_face, xy, velocity = _wall_shot(env, speed, gap)
    _, traj = runner(_zero_actions(env), mode=(AT_XY, AT_XY), xy=xy, velocity=velocity)
    assert np.isfinite(traj["obs"]).all()
    _assert_blocked(traj, wall_face, xy, gap, clearance)


# ---- `python -m envs` and rendering ------------------------------------------------------------
def test_env_table_lists_every_env(capsys):
    from envs.__main__ import main

    main(["ant", "humanoid_u_maze", "point_u"])
    out = capsys.readouterr().out
    for name in ("ant", "humanoid_u_maze", "point_u", "spring", "1000"):
        assert name in out


def test_render_point_maze_gif(tmp_path):
    from PIL import Image

    from envs.render import render

    out = tmp_path / "point_u.gif"
    used = render("point_u", out, num_steps=6, frame_every=2, method="topdown", width=96, height=80)
    assert used == "topdown"
    with Image.open(out) as gif:
        assert gif.n_frames == 4 and gif.size == (96, 80)


def test_render_with_a_policy_and_bad_arguments(tmp_path):
    from envs.render import render

    calls = []

    def policy(obs):
        calls.append(obs.shape)
        return np.zeros(2)

    render("point_open", tmp_path / "p.gif", policy=policy, num_steps=3, width=64, height=64)
    assert calls == [(6,)] * 3
    with pytest.raises(ValueError, match=".gif or .mp4"):
        render("point_u", tmp_path / "video.avi")
    with pytest.raises(envs.UnknownEnvError):
        render("ant_maze", tmp_path / "v.gif")
    with pytest.raises(ValueError, match="num_steps"):
        render("point_u", tmp_path / "v.gif", num_steps=0)


def test_topdown_draws_mjcf_geoms_without_compiling():
    """The top-down renderer draws the walls and the robot of an MJCF env from qpos alone."""
    from envs.render import topdown_frames

    env = envs.make("ant_u_maze")
    qpos = np.asarray(env.sys.init_q)[None].repeat(2, 0)
    qpos[:, :2] = np.asarray(env.start_xy)
    frames = {"qpos": qpos, "achieved": qpos[:, :2], "goal": np.array([[14.0, -14.0]] * 2),
              "t": np.arange(2)}
    images = topdown_frames(env, frames, 120, 100)
    assert len(images) == 2 and images[0].shape == (100, 120, 3)
    # walls (grey) and the robot's brownish geoms are both on the picture
    pixels = images[0].reshape(-1, 3).astype(int)
    grey = (np.abs(pixels - [115, 115, 128]).max(-1) < 12).mean()
    assert grey > 0.05


def test_mujoco_renderer_when_opengl_is_available(tmp_path):
    from envs.render import mujoco_frames

    env = envs.make("ant")
    qpos = np.asarray(env.sys.init_q)[None]
    frames = {"qpos": qpos, "achieved": qpos[:, :2], "goal": np.array([[1.0, 0.0]]),
              "t": np.arange(1)}
    try:
        images = mujoco_frames(env, frames, 64, 48)
    except Exception as error:  # no EGL/OSMesa on this machine
        pytest.skip(f"no OpenGL for MuJoCo here: {error}")
    assert images[0].shape == (48, 64, 3) and images[0].std() > 1.0
