"""Tests for the pure-JAX point-mass mazes (envs/point_maze.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import maze_layouts, registry
from envs.point_maze import PointMaze, PointMazeConfig, make_point_maze

POINT_ENVS = ["point_open", "point_u", "point_big", "point_hardest", "point_snake3", "point_snake5"]


def _rollout(env, policy, num_envs: int, num_steps: int, seed: int = 0):
    """Jitted scan of `num_steps` vmapped steps; policy(state, key) -> actions [num_envs, 2].
    Returns the initial batched state and the per-step stacked states."""
    step = jax.vmap(env.step)

    @jax.jit
    def run(rng):
        reset_rng, policy_rng = jax.random.split(rng)
        state = jax.vmap(env.reset)(jax.random.split(reset_rng, num_envs))

        def body(carry, _):
            state, key = carry
            key, sub = jax.random.split(key)
            state = step(state, policy(state, sub))
            return (state, key), state

        _, states = jax.lax.scan(body, (state, policy_rng), None, length=num_steps)
        return state, states

    return run(jax.random.PRNGKey(seed))


def _random_policy(state, key):
    return jax.random.uniform(key, state.goal.shape, minval=-1.0, maxval=1.0)


def _greedy_policy(state, key):
    """Head straight for the goal, slowing down as it gets close."""
    return jnp.clip(3.0 * (state.goal - state.physics[:, :2]), -1.0, 1.0)


def _cells_of(env: PointMaze, xy: np.ndarray) -> np.ndarray:
    """(row, col) of world points [..., 2]."""
    size = env.config.cell_size
    return np.stack([np.floor(-xy[..., 1] / size), np.floor(xy[..., 0] / size)], -1).astype(int)


@pytest.mark.parametrize("name", POINT_ENVS)
def test_reset_and_step_shapes_under_jit_vmap(name):
    env = envs.make(name)
    assert (env.state_size, env.goal_size, env.action_size) == (4, 2, 2)
    assert env.goal_indices == (0, 1) and env.backend == "jax" and env.name == name
    num_envs = 3
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), num_envs))
    state = jax.jit(jax.vmap(env.step))(state, jnp.ones((num_envs, 2)))
    assert state.obs.shape == (num_envs, env.observation_size) == (num_envs, 6)
    assert state.goal.shape == (num_envs, 2) and state.physics.shape == (num_envs, 4)
    assert state.obs.dtype == state.goal.dtype == state.physics.dtype == jnp.float32
    assert state.step.dtype == jnp.int32 and state.done.dtype == jnp.bool_
    assert state.step.shape == state.done.shape == (num_envs,)
    for key in ("distance", "at_goal"):
        assert state.metrics[key].shape == (num_envs,)
        assert state.metrics[key].dtype == jnp.float32
    np.testing.assert_array_equal(state.step, 1)
    # obs = state ⊕ goal
    np.testing.assert_array_equal(state.obs[:, :4], state.physics)
    np.testing.assert_array_equal(state.obs[:, 4:], state.goal)


def test_teleport_onto_goal_is_at_goal():
    env = envs.make("point_u")
    state = env.reset(jax.random.PRNGKey(3))
    on_goal = jnp.concatenate([state.goal, jnp.zeros(2)])
    state = state.replace(physics=on_goal)
    state = jax.jit(env.step)(state, jnp.zeros(2))
    assert float(state.metrics["at_goal"]) == 1.0
    assert float(state.metrics["distance"]) < 1e-5
    np.testing.assert_allclose(env.achieved_goal(state.obs), state.goal, atol=1e-6)
    # and one goal radius away is not at the goal
    state = state.replace(physics=on_goal + jnp.array([env.goal_radius * 1.01, 0.0, 0.0, 0.0]))
    state = jax.jit(env.step)(state, jnp.zeros(2))
    assert float(state.metrics["at_goal"]) == 0.0


def test_starts_in_start_cells_and_goals_in_goal_cells():
    for name in POINT_ENVS:
        env = envs.make(name)
        layout = maze_layouts.LAYOUTS[env.config.layout]
        state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(1), 256))
        start_cells = {tuple(c) for c in _cells_of(env, np.asarray(state.physics[:, :2]))}
        goal_cells = {tuple(c) for c in _cells_of(env, np.asarray(state.goal))}
        assert start_cells <= {tuple(c) for c in maze_layouts.cells(layout, "R")}
        allowed_goals = {tuple(c) for c in maze_layouts.cells(layout, "G")}
        assert goal_cells <= allowed_goals
        assert len(goal_cells) > 1  # goals really are spread over the goal cells
        size = env.config.cell_size
        goal_offset = np.asarray(state.goal) - maze_layouts.cell_center(
            _cells_of(env, np.asarray(state.goal)), size
        )
        assert np.abs(goal_offset).max() > 0.4 * size  # uniform inside the cell, not its centre
        start_offset = np.asarray(state.physics[:, :2]) - maze_layouts.cell_center(
            _cells_of(env, np.asarray(state.physics[:, :2])), size
        )
        assert 0 < np.abs(start_offset).max() <= env.config.start_noise * size + 1e-6
        np.testing.assert_array_equal(state.physics[:, 2:], 0.0)  # starts at rest


def test_velocity_follows_action_with_lag():
    env = envs.make("point_open")
    cfg = env.config
    state = env.reset(jax.random.PRNGKey(0))
    start = state.physics
    state = env.step(state, jnp.zeros(2))
    np.testing.assert_allclose(state.physics, start)  # at rest, no action: stays put
    state = env.step(state, jnp.array([1.0, 0.0]))
    expected_vx = cfg.velocity_gain * cfg.max_speed
    np.testing.assert_allclose(state.physics[2:], [expected_vx, 0.0], rtol=1e-6)
    np.testing.assert_allclose(state.physics[0], start[0] + expected_vx * cfg.dt, rtol=1e-6)
    # a diagonal push is clipped to max_speed in norm
    for _ in range(30):
        state = env.step(state, jnp.array([1.0, -1.0]))
    assert float(jnp.linalg.norm(state.physics[2:])) <= cfg.max_speed * (1 + 1e-5)


@pytest.mark.parametrize("max_speed", [2.0, 9.5])  # 9.5 moves 0.95 cells a step: near tunnelling
def test_walls_block_and_never_tunnel(max_speed):
    # U maze: start cell (1, 1); the cell below, (2, 1), is a one-cell-thick wall with the
    # bottom arm (row 3) behind it; the top arm ends at the wall (1, 4).
    env = make_point_maze("u", max_speed=max_speed, episode_length=1000)
    state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for action in ([0.0, -1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]):
        for _ in range(40):
            state = step(state, jnp.array(action))
            row, col = _cells_of(env, np.asarray(state.physics[:2]))
            assert not env.wall_mask()[row, col]
            assert row == 1, f"left the top arm (row {row}) pushing {action}"
            assert 1 <= col <= 3
    # Pushed right along the top arm, the point ends pressed against the wall at x = 4.
    x = float(state.physics[0])
    for _ in range(40):
        state = step(state, jnp.array([1.0, 0.0]))
    assert 3.99 < float(state.physics[0]) < 4.0 and float(state.physics[2]) == 0.0
    assert x < float(state.physics[0])


@pytest.mark.parametrize("name", POINT_ENVS)
def test_random_rollout_stays_in_free_cells_and_finite(name):
    env = envs.make(name, max_speed=9.0)  # fast, to stress the wall handling
    _, states = _rollout(env, _random_policy, num_envs=32, num_steps=300)
    for leaf in jax.tree.leaves(states):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.isfinite(leaf).all())
    rows, cols = _cells_of(env, np.asarray(states.physics[..., :2])).transpose(2, 0, 1)
    assert (rows >= 0).all() and (cols >= 0).all()
    assert not env.wall_mask()[rows, cols].any()


def test_auto_reset_resamples_goal_at_time_limit():
    env = envs.make("point_u", episode_length=5)
    state = env.reset(jax.random.PRNGKey(7))
    step = jax.jit(env.step)
    goals, dones, steps = [state.goal], [], []
    for _ in range(11):
        state = step(state, jnp.array([1.0, 0.0]))
        goals.append(state.goal)
        dones.append(bool(state.done))
        steps.append(int(state.step))
        if state.done:  # a fresh episode: at rest near the start cell
            np.testing.assert_array_equal(state.physics[2:], 0.0)
            assert tuple(_cells_of(env, np.asarray(state.physics[:2]))) == (1, 1)
    assert dones == [False] * 4 + [True] + [False] * 4 + [True, False]
    assert steps == [1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    # constant within an episode, fresh at each reset
    assert all(np.array_equal(goals[0], g) for g in goals[1:5])
    assert all(np.array_equal(goals[5], g) for g in goals[6:10])
    assert not np.array_equal(goals[0], goals[5]) and not np.array_equal(goals[5], goals[10])


def test_random_policy_rarely_at_goal():
    env = envs.make("point_open")
    _, states = _rollout(env, _random_policy, num_envs=64, num_steps=2 * env.episode_length)
    assert float(states.metrics["at_goal"].mean()) < 0.05


def test_greedy_controller_reaches_goal_in_open_room():
    env = envs.make("point_open")
    _, states = _rollout(env, _greedy_policy, num_envs=64, num_steps=env.episode_length - 1)
    at_goal = np.asarray(states.metrics["at_goal"])
    assert not np.asarray(states.done).any()  # one episode, one goal per env
    assert at_goal.max(axis=0).all()  # every env reaches its goal ...
    assert at_goal[-1].all()  # ... and stays there
    assert float(states.metrics["distance"][-1].max()) < 0.1


def test_bad_options_fail_with_clear_errors():
    with pytest.raises(ValueError, match="unknown point-maze option"):
        envs.make("point_open", episode_lenght=10)
    with pytest.raises(ValueError, match="tunnel"):
        envs.make("point_open", max_speed=10.0)
    with pytest.raises(ValueError, match="episode_length"):
        envs.make("point_open", episode_length=0)
    with pytest.raises(ValueError, match="goal_radius"):
        envs.make("point_open", goal_radius=-1.0)
    with pytest.raises(ValueError, match="unknown maze layout"):
        PointMaze(PointMazeConfig(layout="nope"))


def test_factories_take_overrides():
    env = envs.make("point_big", episode_length=17, goal_radius=0.4)
    assert (env.episode_length, env.goal_radius) == (17, 0.4)
    assert envs.make("point_hardest").episode_length == 200
    assert envs.make("point_open").goal_radius == 0.25


def _shortest_path_lengths(layout: list[str]) -> dict[tuple[int, int], int]:
    """Breadth-first search over free cells (4-neighbours) from the start cell."""
    grid = maze_layouts.as_grid(layout)
    start = tuple(int(i) for i in np.argwhere(grid == "R")[0])
    lengths, frontier = {start: 0}, [start]
    while frontier:
        row, col = frontier.pop(0)
        for d_row, d_col in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            cell = (row + d_row, col + d_col)
            if grid[cell] != "#" and cell not in lengths:
                lengths[cell] = lengths[(row, col)] + 1
                frontier.append(cell)
    return lengths


@pytest.mark.parametrize("corridors, length", [(3, 6), (5, 6), (2, 3), (4, 5)])
def test_snake_is_one_folded_corridor_and_its_eval_goals_are_the_far_corridor(corridors, length):
    layout = maze_layouts.snake(corridors, length)
    lengths = _shortest_path_lengths(layout)
    free = np.argwhere(maze_layouts.as_grid(layout) != "#")
    assert len(lengths) == len(free)  # every free cell is reachable
    # one corridor without branches: path lengths 0..N-1, each once
    assert sorted(lengths.values()) == list(range(corridors * length + corridors - 1))
    eval_grid = maze_layouts.as_grid(maze_layouts.snake(corridors, length, far_goals_only=True))
    eval_goals = [tuple(cell) for cell in np.argwhere(eval_grid == "G")]
    assert len(eval_goals) == length
    assert min(lengths[cell] for cell in eval_goals) == (corridors - 1) * (length + 1)
    np.testing.assert_array_equal(eval_grid == "#", maze_layouts.as_grid(layout) == "#")
    with pytest.raises(ValueError, match="snake maze"):
        maze_layouts.snake(1, 6)


@pytest.mark.parametrize("name", ["point_snake3", "point_snake5"])
def test_snake_envs_evaluate_on_their_far_corridor(name):
    assert registry.default_eval_env(name) == f"{name}_eval"
    env, eval_env = envs.make(name), envs.make(f"{name}_eval")
    # the far end fits in an episode at full speed (0.2 cells per step) with room to stop
    far = max(_shortest_path_lengths(maze_layouts.LAYOUTS[name.removeprefix("point_")]).values())
    assert far / (env.config.max_speed * env.config.dt) < 0.6 * env.episode_length
    assert eval_env.episode_length == env.episode_length
