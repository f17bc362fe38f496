"""Batched auto-reset (envs.vector): same semantics as vmapping `GoalEnv.step`, without computing
a reset for every env on every step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import envs
from envs import vector
from envs.point_maze import PointMaze

NUM_ENVS = 64


class FastTerminatingMaze(PointMaze):
    """point_u whose episodes end early whenever the point moves fast to the right, so under
    random actions episodes end at scattered steps and some envs end twice per unroll."""

    terminate_when_unhealthy = True

    def is_unhealthy(self, physics):
        return physics[2] > 0.5 * self.config.max_speed


def terminating_env(episode_length: int = 50) -> FastTerminatingMaze:
    base = envs.make("point_u", episode_length=episode_length)
    return FastTerminatingMaze(base.config)


def random_actions(rng, steps: int, env) -> jax.Array:
    return jax.random.uniform(rng, (steps, NUM_ENVS, env.action_size), minval=-1, maxval=1)


def rollout_vector(env, steps: int, seed: int = 0, unroll: int = 10):
    """Steps with envs.vector.step, spares prepared every `unroll` steps as training does."""
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(seed), NUM_ENVS))
    actions = random_actions(jax.random.PRNGKey(seed + 1), steps, env)

    @jax.jit
    def run_unroll(state, actions):
        spares = None
        if vector.uses_spares(env):
            state, spares = vector.prepare_spares(env, state)

        def one(carry, action):
            state, spares = carry
            new, spares = vector.step(env, state, action, spares)
            return (new, spares), (state, new)

        (state, _), (before, after) = jax.lax.scan(one, (state, spares), actions)
        return state, before, after

    befores, afters = [], []
    for start in range(0, steps, unroll):
        state, before, after = run_unroll(state, actions[start : start + unroll])
        befores.append(before)
        afters.append(after)
    cat = lambda *xs: jnp.concatenate(xs)
    return jax.tree.map(cat, *befores), jax.tree.map(cat, *afters)


def test_time_limit_envs_match_vmapped_step_bit_for_bit():
    env = envs.make("point_u", episode_length=7)
    assert not vector.uses_spares(env)
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), NUM_ENVS))
    actions = random_actions(jax.random.PRNGKey(1), 30, env)

    def scan_with(step):
        return jax.jit(lambda s: jax.lax.scan(lambda s, a: (step(s, a),) * 2, s, actions)[1])

    expected = scan_with(jax.vmap(env.step))(state)
    got = scan_with(lambda s, a: vector.step(env, s, a)[0])(state)
    assert int(jnp.sum(expected.done)) == 4 * NUM_ENVS  # resets happened
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_terminated_envs_never_continue_and_restart_from_fresh_starts():
    env = terminating_env()
    before, after = rollout_vector(env, steps=60)
    done = np.asarray(after.done)
    assert done.sum() > NUM_ENVS  # many early ends ...
    assert (done.sum(axis=0) >= 2).any()  # ... and envs that end more than once per unroll
    # Every finished env restarts at step 0 from a start state (at rest, inside the start cell),
    # never from the terminated state; every other env continues with the next step index.
    steps = np.asarray(after.step)
    assert (steps[done] == 0).all()
    assert (steps[~done] == np.asarray(before.step)[~done] + 1).all()
    velocity = np.asarray(after.obs)[..., 2:4]
    assert (velocity[done] == 0).all()
    assert not np.asarray(jax.vmap(jax.vmap(env.is_unhealthy))(after.physics))[done].any()
    # The goal changes with the episode and only then.
    goal_before, goal_after = np.asarray(before.goal), np.asarray(after.goal)
    assert (goal_after[~done] == goal_before[~done]).all()
    assert (goal_after[done] != goal_before[done]).any(axis=-1).all()


def test_starts_and_goals_after_auto_reset_follow_the_reset_distribution():
    env = terminating_env()
    _, after = rollout_vector(env, steps=200)
    done = np.asarray(after.done)
    restarted_goals = np.asarray(after.goal)[done]
    restarted_starts = np.asarray(after.obs)[..., :2][done]
    reference = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(7), 4096))
    assert len(restarted_goals) > 500
    reference_goals, reference_starts = np.asarray(reference.goal), np.asarray(reference.obs)
    for column in range(2):
        goal_test = stats.ks_2samp(restarted_goals[:, column], reference_goals[:, column])
        start_test = stats.ks_2samp(restarted_starts[:, column], reference_starts[:, column])
        assert goal_test.pvalue > 0.01, goal_test
        assert start_test.pvalue > 0.01, start_test
    # Goals of different episodes are distinct draws (no cached first goal).
    assert len(np.unique(restarted_goals[:, 0])) == len(restarted_goals)


@pytest.mark.parametrize("spares", [True, False])
def test_spares_and_fallback_resets_keep_every_env_consistent(spares):
    """With spares disabled, the fallback reset alone must give the same guarantees."""
    env = terminating_env()
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(3), NUM_ENVS))
    actions = random_actions(jax.random.PRNGKey(4), 20, env)
    spare_state = None
    if spares:
        state, spare_state = vector.prepare_spares(env, state)
    for action in actions:
        new, spare_state = vector.step(env, state, action, spare_state)
        done = np.asarray(new.done)
        assert (np.asarray(new.step)[done] == 0).all()
        assert (np.asarray(new.step)[~done] == np.asarray(state.step)[~done] + 1).all()
        state = new


def test_reset_stays_a_branch_under_the_seed_vmap_and_matches_the_unnamed_vmap():
    """crl vmaps the whole program over seeds. Unnamed, that vmap turns the reset `lax.cond` into
    a select that computes resets on every step; `over_seeds` names the axis so the branch
    survives, and the states collected are the same either way."""
    from crl.config import TrainConfig
    from crl.train import make_trainer, over_seeds

    config = TrainConfig(env="point_u", num_seeds=2, num_envs=4, unroll_length=30,
                         episode_length=20, width=16, depth=4, batch_size=8, replay_size=100,
                         min_replay_size=20, num_eval_envs=2, num_sgd_batches=1)
    trainer = make_trainer(config)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state = jax.jit(over_seeds(trainer.init))(keys)

    def collect(s, k):
        return trainer.collect(s.agent.actor_params, s.env_state, k)

    named, unnamed = over_seeds(collect), jax.vmap(collect)
    assert "cond" in str(jax.make_jaxpr(named)(state, keys))
    assert "cond" not in str(jax.make_jaxpr(unnamed)(state, keys))
    for a, b in zip(jax.tree.leaves(jax.jit(named)(state, keys)),
                    jax.tree.leaves(jax.jit(unnamed)(state, keys)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("stepping", ["physics", "vmap", "unnamed", "vector"])
def test_env_speed_times_every_stepping_over_vmapped_seeds(stepping):
    from experiments.env_speed import measure_env_steps_per_second

    row = measure_env_steps_per_second(
        "point_u", 4, 20, repeats=1, stepping=stepping, unroll_length=10, num_seeds=2
    )
    assert row["num_steps"] == 20 and row["num_seeds"] == 2
    assert row["steps_per_second"] == pytest.approx(2 * 4 * 20 / row["run_seconds"])


def test_reset_share_table_times_every_stepping_against_the_physics_floor():
    from experiments.env_speed import Args, main

    rows = main(Args(env_names=("point_u",), num_envs=(4,), num_steps=20, unroll_length=10,
                     repeats=2, reset_share=True))
    assert [row["stepping"] for row in rows] == ["physics", "vmap", "unnamed", "vector"]
    assert rows[0]["share_beyond_physics"] == 0.0
    for row in rows:
        assert row["share_beyond_physics"] == pytest.approx(
            1.0 - rows[0]["run_seconds"] / row["run_seconds"])
        assert "run" not in row
