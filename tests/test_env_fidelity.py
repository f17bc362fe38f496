"""Pins every fact that docs/environments.md says crl shares with the authors' code (scaling-crl,
JaxGCRL): maze layouts, eval envs, wall height, collision flags, observation sizes, goal indices,
goal radius, episode length and the fall termination. Most checks build models without
compiling any physics; two compile one reset/step."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs import locomotion, maze_layouts, mjcf_tools

# The authors' layouts (scaling-crl envs/ant_maze.py, envs/humanoid_maze.py), 1 → '#', 0 → '.',
# r → 'R', g → 'G', rows top to bottom.
REFERENCE_LAYOUTS = {
    "u": ["#####", "#RGG#", "###G#", "#GGG#", "#####"],
    "u_eval": ["#####", "#R..#", "###.#", "#GGG#", "#####"],
    "u4": ["#####", "#GGG#", "#R#G#", "###G#", "#G#G#", "#GGG#", "#####"],
    "u4_eval": ["#####", "#...#", "#R#.#", "###.#", "#G#.#", "#GGG#", "#####"],
    "u5": ["########", "#GGGGGG#", "#R####G#", "######G#", "#G####G#", "#GGGGGG#", "########"],
    "u5_eval": [
        "########", "#......#", "#R####.#", "######.#", "#G####G#", "#GGGGGG#", "########",
    ],
    "big": [
        "########", "#RG##GG#", "#GG#GGG#", "##GGG###", "#GG#GGG#", "#G#GG#G#", "#GGG#GG#",
        "########",
    ],
    "big_eval": [
        "########", "#R.##GG#", "#..#..G#", "##...###", "#..#...#", "#.#G.#G#", "#.GG#GG#",
        "########",
    ],
    "humanoid_big_eval": [
        "########", "#R.##GG#", "#..#.GG#", "##...###", "#..#...#", "#.#G.#G#", "#.GG#GG#",
        "########",
    ],
    "hardest": [
        "############", "#RGGG#GGGGG#", "#G##G#G#G#G#", "#GGGGGG#GGG#", "#G####G###G#",
        "#GG#G#GGGGG#", "##G#G#G#G###", "#GG#GGG#GGG#", "############",
    ],
}

# env name -> (layout key, eval layout key or None)
MAZE_ENVS = {
    "ant_u_maze": ("u", "u_eval"),
    "ant_u4_maze": ("u4", "u4_eval"),
    "ant_u5_maze": ("u5", "u5_eval"),
    "ant_big_maze": ("big", "big_eval"),
    "ant_hardest_maze": ("hardest", None),
    "humanoid_u_maze": ("u", "u_eval"),
    "humanoid_big_maze": ("big", "humanoid_big_eval"),
    "humanoid_hardest_maze": ("hardest", None),
}


@pytest.mark.parametrize("key", sorted(REFERENCE_LAYOUTS))
def test_layouts_are_the_references(key):
    assert maze_layouts.LAYOUTS[key] == REFERENCE_LAYOUTS[key]


@pytest.mark.parametrize("name", sorted(MAZE_ENVS))
def test_maze_envs_and_their_eval_envs(name):
    layout, eval_layout = MAZE_ENVS[name]
    env = envs.make(name)
    assert env.layout == REFERENCE_LAYOUTS[layout]
    if eval_layout is None:
        assert f"{name}_eval" not in envs.names()
        return
    eval_env = envs.make(f"{name}_eval")
    assert eval_env.layout == REFERENCE_LAYOUTS[eval_layout]
    # same walls and start, goals a subset of the training goals, same robot settings
    train_grid, eval_grid = maze_layouts.as_grid(env.layout), maze_layouts.as_grid(eval_env.layout)
    np.testing.assert_array_equal(train_grid == "#", eval_grid == "#")
    np.testing.assert_array_equal(train_grid == "R", eval_grid == "R")
    assert ((eval_grid == "G") <= (train_grid == "G")).all()
    for attr in ("state_size", "goal_size", "goal_indices", "goal_radius", "episode_length",
                 "terminate_when_unhealthy", "wall_height"):
        assert getattr(eval_env, attr) == getattr(env, attr), attr


@pytest.mark.parametrize("name, cell, height", [("ant_u_maze", 4.0, 2.0),
                                                ("humanoid_u_maze", 2.0, 1.0)])
def test_wall_height_is_half_a_cell(name, cell, height):
    env = envs.make(name)
    assert env.config.cell_size == cell and env.wall_height == height
    model = mujoco.MjModel.from_xml_string(env.xml)
    walls = [i for i in range(model.ngeom) if model.geom(i).name.startswith(("wall_", "solid_"))]
    assert walls
    np.testing.assert_allclose(model.geom_size[walls], [[cell / 2, cell / 2, height / 2]] * len(walls))
    np.testing.assert_allclose(model.geom_pos[walls][:, 2], height / 2)


def _collides(model, a: int, b: int) -> bool:
    return bool((model.geom_contype[a] & model.geom_conaffinity[b])
                | (model.geom_contype[b] & model.geom_conaffinity[a]))


def test_every_humanoid_geom_collides_with_walls_and_floor():
    env = envs.make("humanoid_u_maze")
    model = mujoco.MjModel.from_xml_string(env.xml)
    names = [model.geom(i).name for i in range(model.ngeom)]
    floor = names.index("floor")
    wall = next(i for i, n in enumerate(names) if n.startswith("wall_"))
    robot = [i for i, n in enumerate(names) if model.geom_bodyid[i] != 0 and n != "target_geom"]
    assert sorted(names[i] for i in robot) == sorted(locomotion.HUMANOID_GEOMS)
    for geom in robot:
        assert _collides(model, geom, floor) and _collides(model, geom, wall), names[geom]
        assert not any(_collides(model, geom, other) for other in robot)  # as the references
    marker = names.index("target_geom")
    assert not any(_collides(model, marker, g) for g in range(model.ngeom) if g != marker)


def test_ant_sizes_and_termination_defaults():
    for name in ("ant", "ant_u_maze", "ant_big_maze_eval"):
        env = envs.make(name)
        assert (env.state_size, env.goal_size, env.goal_indices) == (29, 2, (0, 1))
        assert env.goal_radius == 0.5 and env.episode_length == 1000
        assert env.terminate_when_unhealthy and env.robot.healthy_z == (0.2, 1.0)
        assert env.robot.reset_noise == 0.1
    assert not envs.make("ant", terminate_when_unhealthy=False).terminate_when_unhealthy


def test_humanoid_sizes_goal_and_options():
    for name in ("humanoid", "humanoid_u_maze", "humanoid_big_maze_eval"):
        env = envs.make(name)
        assert (env.state_size, env.goal_size, env.goal_indices) == (268, 3, (0, 1, 2))
        assert env.goal_radius == 0.5 and env.episode_length == 1000
        assert env.terminate_when_unhealthy and env.robot.healthy_z == (1.0, 2.0)
        assert env.robot.reset_noise == 0.0 and locomotion.HUMANOID_GOAL_Z == 1.25
        # q 24 + marker 2, qd 23 + 2, 12 links (11 + marker)
        assert (env.sys.q_size(), env.sys.qd_size(), env.sys.num_links()) == (26, 25, 12)
    small = envs.make("humanoid", observation="qpos_qvel")
    assert (small.state_size, small.goal_size) == (47, 3)
    with pytest.raises(ValueError, match="observation"):
        envs.make("humanoid", observation="pixels")


@pytest.mark.parametrize("name, low, high", [("ant", 0.2, 1.0), ("humanoid", 1.0, 2.0)])
def test_is_unhealthy_thresholds(name, low, high):
    env = envs.make(name)

    def at_height(z):
        pos = jnp.zeros((env.sys.num_links(), 3)).at[0, 2].set(z)
        return bool(env.is_unhealthy(types.SimpleNamespace(x=types.SimpleNamespace(pos=pos))))

    assert at_height(low - 0.01) and at_height(high + 0.01)
    assert not at_height(low + 0.01) and not at_height(high - 0.01)


def test_humanoid_observation_composition_at_reset():
    env = envs.make("humanoid_u_maze")
    state = jax.jit(env.reset)(jax.random.PRNGKey(3))
    physics, obs = state.physics, np.asarray(state.obs)
    assert obs.shape == (268 + 3,)
    np.testing.assert_allclose(obs[:26], physics.q, atol=1e-6)
    np.testing.assert_allclose(obs[26:51], physics.qd, atol=1e-6)
    np.testing.assert_allclose(obs[-25 - 3 : -3], 0.0)  # no actuator force before any action
    goal = np.asarray(state.goal)
    assert goal[2] == 1.25
    np.testing.assert_allclose(physics.q[24:26], goal[:2])  # the marker stands on the goal
    centres = maze_layouts.cell_center(maze_layouts.cells(env.layout, "G"), 2.0)
    assert np.abs(centres - goal[:2]).max(-1).min() < 1e-5
    np.testing.assert_allclose(physics.q[:2], env.start_xy)  # no reset noise


def test_fall_ends_the_episode_and_can_be_switched_off():
    """One ant step from a torso lifted to 1.6 m (unhealthy) and from the normal start: only the
    lifted one ends its episode, and `step` restarts it; with the switch off neither ends."""
    on, off = envs.make("ant"), envs.make("ant", terminate_when_unhealthy=False)

    def run(env, lift):
        state = env.reset(jax.random.PRNGKey(0))
        q = state.physics.q.at[2].set(jnp.where(lift, 1.6, state.physics.q[2]))
        state = state.replace(physics=env._init_pipeline(q, state.physics.qd, None))
        state = env.step(state, jnp.zeros(env.action_size))
        return state.done, state.step

    lifts = jnp.array([True, False])
    done, step = jax.jit(jax.vmap(lambda lift: run(on, lift)))(lifts)
    np.testing.assert_array_equal(done, [True, False])
    np.testing.assert_array_equal(step, [0, 1])
    done, _ = jax.jit(jax.vmap(lambda lift: run(off, lift)))(lifts)
    np.testing.assert_array_equal(done, [False, False])


@pytest.mark.parametrize("name", ["arm_reach", "arm_push_easy", "arm_push_hard",
                                  "arm_binpick_easy", "arm_binpick_hard", "arm_grasp"])
def test_arm_episodes_and_paper_like_observations(name):
    env = envs.make(name)
    assert env.episode_length == 1000
    # the paper's layouts with a 4-joint arm (paper: reach 13, cube tasks 17 with 7 joints)
    if name == "arm_reach":
        assert (env.state_size, env.goal_indices) == (10, (4, 5, 6))
        assert envs.make(name, observation="full").state_size == 11
    else:
        assert (env.state_size, env.goal_indices) == (14, (0, 1, 2))
        assert envs.make(name, observation="full").state_size == 25


def test_marker_helper_builds_a_non_colliding_slider():
    root = mjcf_tools.brax_asset("ant")
    mjcf_tools.add_goal_marker(root, "m", height=1.25, radius=0.5, mass=1.0, rgba="0 1 0 1")
    model = mujoco.MjModel.from_xml_string(mjcf_tools.to_xml(root))
    assert model.nq == 15 + 2 and model.body("m").pos[2] == 1.25
    assert model.geom("m_geom").contype == 0 and model.geom("m_geom").conaffinity == 0
