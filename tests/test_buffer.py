"""Replay ring and future-state relabelling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from crl import buffer


def fill(episode_length: int, num_envs: int, capacity: int, total_steps: int, unroll: int):
    """A buffer whose 'state' rows record (episode id, step in episode, env index), stepped the
    way the training loop steps: envs in lock-step, fixed-length episodes, unroll chunks."""
    example = {"state": jnp.zeros((num_envs, 3)), "step": jnp.zeros((num_envs,), jnp.int32)}
    state = buffer.init(example, capacity)
    envs = np.arange(num_envs)
    # Envs start at different phases so episodes do not all align.
    phase = (envs * 7) % episode_length
    for start in range(0, total_steps, unroll):
        t = np.arange(start, start + unroll)[:, None] + phase[None, :]
        chunk = {
            "state": jnp.asarray(
                np.stack([t // episode_length, t % episode_length, np.broadcast_to(envs, t.shape)], -1),
                jnp.float32,
            ),
            "step": jnp.asarray(t % episode_length, jnp.int32),
        }
        state = buffer.add(state, chunk)
    return state


def test_add_wraps_the_ring():
    state = buffer.init({"x": jnp.zeros((2,)), "step": jnp.zeros((2,), jnp.int32)}, capacity=10)
    for value in range(2):
        chunk = {"x": jnp.full((7, 2), value), "step": jnp.zeros((7, 2), jnp.int32)}
        state = buffer.add(state, chunk)
    assert int(state.size) == 10 and int(state.insert_position) == 4
    np.testing.assert_array_equal(state.data["x"][:, 0], [1, 1, 1, 1, 0, 0, 0, 1, 1, 1])


def test_goals_come_from_the_same_episode_and_a_later_step():
    length = 9  # short episodes: many samples sit at episode ends
    state = fill(episode_length=length, num_envs=4, capacity=50, total_steps=130, unroll=10)
    sample = jax.jit(buffer.sample_with_future, static_argnums=(2, 3))
    for seed in range(5):
        now, future, offsets = sample(state, jax.random.PRNGKey(seed), 2048, 0.7)
        now, future = np.asarray(now["state"]), np.asarray(future["state"])
        np.testing.assert_array_equal(now[:, 0], future[:, 0])  # same episode
        np.testing.assert_array_equal(now[:, 2], future[:, 2])  # same env
        assert np.all(future[:, 1] > now[:, 1])  # a later step
        np.testing.assert_array_equal(future[:, 1] - now[:, 1], offsets)
        # Every stored transition with a future is reachable: all steps but the last appear.
        assert set(now[:, 1].astype(int)) == set(range(length - 1))


def test_offsets_follow_a_geometric_distribution():
    gamma = 0.9
    # Long episodes and a long buffer: truncation has negligible mass (γ^50 ≈ 0.005 at most
    # for the few samples near an episode end), so Δ ~ Geometric(1 − γ) on {1, 2, ...}.
    length = 2000
    state = fill(episode_length=length, num_envs=8, capacity=4000, total_steps=4000, unroll=500)
    now, _, offsets = jax.jit(buffer.sample_with_future, static_argnums=(2, 3))(
        state, jax.random.PRNGKey(0), 20000, gamma
    )
    remaining = np.minimum(length - 1 - np.asarray(now["step"]), 3999)
    offsets = np.asarray(offsets)[remaining > 200]  # drop the few truncated samples
    assert offsets.min() >= 1
    assert offsets.mean() == pytest.approx(1 / (1 - gamma), rel=0.03)
    bins = np.arange(1, 31)
    observed = np.array([np.sum(offsets == k) for k in bins] + [np.sum(offsets > 30)])
    p = (1 - gamma) * gamma ** (bins - 1)
    expected = len(offsets) * np.append(p, 1 - p.sum())
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_truncated_geometric_respects_the_bound():
    bound = jnp.array([1, 2, 3, 5, 1000] * 2000)
    offsets = buffer.truncated_geometric(jax.random.PRNGKey(1), 0.99, bound)
    assert jnp.all(offsets >= 1) and jnp.all(offsets <= bound)
    ones = offsets[bound == 1]
    assert jnp.all(ones == 1)
    # With bound 2 and γ = 0.99 the two offsets are nearly equally likely: P(1) = 1/(1+γ).
    assert float(jnp.mean(offsets[bound == 2] == 1)) == pytest.approx(1 / 1.99, abs=0.03)


def fill_random_episodes(num_envs: int, capacity: int, total_steps: int, unroll: int,
                         max_length: int, seed: int = 0, min_length: int = 1):
    """Like `fill`, but every episode has a random length in [min_length, max_length] (as with
    early termination); 'state' rows record (episode id, step, env, time step). Also returns,
    per [time step, env], the last time step of that episode."""
    rng = np.random.default_rng(seed)
    episode, step, last = (np.zeros((total_steps, num_envs), int) for _ in range(3))
    for env in range(num_envs):
        t, eid = 0, env * 10_000
        while t < total_steps:
            length = int(rng.integers(min_length, max_length + 1))
            end = min(t + length, total_steps)
            episode[t:end, env], step[t:end, env], last[t:end, env] = eid, np.arange(end - t), t + length - 1
            t, eid = end, eid + 1
    envs = np.broadcast_to(np.arange(num_envs), (total_steps, num_envs))
    times = np.broadcast_to(np.arange(total_steps)[:, None], (total_steps, num_envs))
    state = buffer.init(
        {"state": jnp.zeros((num_envs, 4)), "step": jnp.zeros((num_envs,), jnp.int32)}, capacity
    )
    for start in range(0, total_steps, unroll):
        rows = slice(start, start + unroll)
        record = np.stack([episode[rows], step[rows], envs[rows], times[rows]], -1)
        chunk = {"state": jnp.asarray(record, jnp.float32), "step": jnp.asarray(step[rows], jnp.int32)}
        state = buffer.add(state, chunk)
    return state, last


def test_episode_end_finds_the_last_stored_row_of_random_length_episodes():
    total, capacity = 130, 50
    state, last = fill_random_episodes(3, capacity, total, 10, max_length=12)
    first_time = total - capacity  # time step of logical row 0
    rows, envs = np.meshgrid(np.arange(capacity), np.arange(3), indexing="ij")
    found = np.asarray(buffer.episode_end(state, jnp.asarray(rows), jnp.asarray(envs)))
    expected = np.minimum(last[first_time:], total - 1) - first_time  # newest episodes: cut
    np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("min_length", [2, 1])
def test_variable_length_episodes_never_relabel_across_episodes(min_length):
    state, _ = fill_random_episodes(4, 60, 170, 10, max_length=9, min_length=min_length)
    sample = jax.jit(buffer.sample_with_future, static_argnums=(2, 3))
    for seed in range(5):
        now, future, offsets = sample(state, jax.random.PRNGKey(seed), 2048, 0.8)
        now, future = np.asarray(now["state"]), np.asarray(future["state"])
        offsets = np.asarray(offsets)
        assert np.all(offsets >= 1)
        np.testing.assert_array_equal(now[:, 2], future[:, 2])  # same env
        np.testing.assert_array_equal(future[:, 3] - now[:, 3], offsets)  # Δ time steps later
        same = now[:, 0] == future[:, 0]
        if min_length == 2:  # every stored episode but the oldest has a future
            assert np.all(same)
        else:  # one-step episodes have none: only the rare fallback may cross
            assert np.mean(same) > 0.999


def test_variable_length_offsets_follow_the_truncated_geometric():
    """Offsets match the mixture of geometric(1 − γ) laws truncated at each sample's own episode
    end (chi-square; expected counts from the true remaining steps of every sample)."""
    gamma, total, capacity, num_envs = 0.8, 3000, 1000, 8
    state, last = fill_random_episodes(num_envs, capacity, total, 100, max_length=40, seed=3)
    now, _, offsets = jax.jit(buffer.sample_with_future, static_argnums=(2, 3))(
        state, jax.random.PRNGKey(0), 50_000, gamma
    )
    now, offsets = np.asarray(now["state"]).astype(int), np.asarray(offsets)
    times, env = now[:, 3], now[:, 2]
    remaining = np.minimum(last[times, env], total - 1) - times
    assert remaining.min() >= 1 and np.all(offsets <= remaining)
    bins = np.arange(1, 16)
    # P(Δ = k | M) = (1 − γ) γ^(k−1) / (1 − γ^M) for k ≤ M.
    p = np.where(
        bins[None, :] <= remaining[:, None],
        (1 - gamma) * gamma ** (bins[None, :] - 1) / (1 - gamma ** remaining[:, None]),
        0.0,
    )
    expected = np.append(p.sum(0), len(offsets) - p.sum())
    observed = np.array([np.sum(offsets == k) for k in bins] + [np.sum(offsets > bins[-1])])
    assert stats.chisquare(observed, expected).pvalue > 0.001
