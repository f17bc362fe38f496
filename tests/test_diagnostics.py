"""Stability diagnostics: each instrument against hand-computed values on small known networks
and batches, the per-layer ordering of scanned blocks, and that turning diagnostics on leaves
training unchanged."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import diagnostics as diag
from crl.config import ConfigError, TrainConfig, replace, validate
from crl.networks import NetworkConfig, ResidualMLP
from crl.train import make_trainer

RNG = jax.random.PRNGKey(0)


def env_cells(name: str) -> int:
    import envs

    return envs.make(name).maze_grid()[0].size


def mlp_params(network: NetworkConfig, in_size: int = 5, out_size: int = 3):
    mlp = ResidualMLP(network, out_size)
    return mlp, mlp.init(RNG, jnp.zeros((1, in_size)))


# ---- per-layer reductions ----------------------------------------------------------------------
def test_layer_names_follow_network_order():
    assert diag.layer_names(8) == [
        "input",
        "b0.l0",
        "b0.l1",
        "b0.l2",
        "b0.l3",
        "b1.l0",
        "b1.l1",
        "b1.l2",
        "b1.l3",
        "output",
    ]


def test_per_layer_sum_unstacks_scanned_blocks_in_network_order():
    """Fill every layer with its own index; the per-layer norm is index·sqrt(#params)."""
    width, in_size, out_size = 8, 5, 3
    _, params = mlp_params(NetworkConfig(width=width, depth=8), in_size, out_size)
    tree = params["params"]

    def block_layer_filled(name: str, sub: dict) -> dict:
        """Block b's copy of layer j (leading axis b) filled with 1 + 4b + j."""
        j = int(name.rsplit("_", 1)[1])

        def fill(x):
            values = 1.0 + 4.0 * jnp.arange(x.shape[0]) + j
            return jnp.broadcast_to(values.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)

        return jax.tree.map(fill, sub)

    filled = {
        "input": jax.tree.map(jnp.zeros_like, tree["input"]),
        "blocks": {name: block_layer_filled(name, sub) for name, sub in tree["blocks"].items()},
        "output": jax.tree.map(lambda x: jnp.full_like(x, 9.0), tree["output"]),
    }
    # Hand-counted parameters per layer: Dense kernel + bias, LayerNorm scale + bias.
    input_count = in_size * width + width + 2 * width
    block_count = width * width + width + 2 * width
    output_count = width * out_size + out_size
    counts = np.array([input_count] + [block_count] * 8 + [output_count], float)
    np.testing.assert_allclose(diag.per_layer_sum(jax.tree.map(jnp.ones_like, tree)), counts)
    expected = np.arange(10.0) * np.sqrt(counts)
    np.testing.assert_allclose(diag.layer_grad_norms(filled), expected, rtol=1e-6)


def test_update_sparsity_counts_unchanged_parameters_per_layer():
    width, in_size, out_size = 4, 3, 2
    _, params = mlp_params(NetworkConfig(width=width, depth=4), in_size, out_size)
    old = params["params"]
    new = jax.tree.map(lambda x: x, old)
    # Move half of block0/layer2's kernel by 1e-3 (well above the tolerance) and the output bias
    # by 1e-8 (below it).
    kernel = old["blocks"]["DenseNormAct_2"]["Dense_0"]["kernel"]
    moved = kernel.at[:, : width // 2].add(1e-3)
    new = {
        **old,
        "blocks": {
            **old["blocks"],
            "DenseNormAct_2": {
                **old["blocks"]["DenseNormAct_2"],
                "Dense_0": {**old["blocks"]["DenseNormAct_2"]["Dense_0"], "kernel": moved},
            },
        },
        "output": {**old["output"], "bias": old["output"]["bias"] + 1e-8},
    }
    block_count = width * width + width + 2 * width
    expected = np.ones(6)
    expected[3] = 1 - (width * width / 2) / block_count
    np.testing.assert_allclose(diag.update_sparsity(new, old), expected, rtol=1e-6)
    np.testing.assert_allclose(diag.update_sparsity(old, old), np.ones(6))


# ---- activations and dead units ----------------------------------------------------------------
@pytest.mark.parametrize(
    "residual,layer_norm,remat",
    [(True, True, False), (False, True, False), (True, False, False), (True, True, True)],
)
def test_hidden_activations_reproduce_the_network(residual, layer_norm, remat):
    network = NetworkConfig(
        width=16, depth=8, residual=residual, layer_norm=layer_norm, remat=remat
    )
    mlp, params = mlp_params(network)
    x = jax.random.normal(RNG, (32, 5))
    hidden, last = diag.hidden_activations(network, params["params"], x)
    assert hidden.shape == (9, 32, 16)
    out = params["params"]["output"]
    np.testing.assert_allclose(
        last @ out["kernel"] + out["bias"], mlp.apply(params, x), rtol=1e-5, atol=1e-5
    )
    if not residual:  # without skips the last hidden layer is the last block layer's output
        np.testing.assert_allclose(last, hidden[-1], rtol=1e-6)


def test_zeroed_layer_has_zero_gradient_and_dead_units_while_the_skip_keeps_the_rest_alive():
    """ReLU, no LayerNorm: zeroing block0/layer1's Dense makes it output 0 (relu'(0) = 0), so
    block 0's four layers get exactly zero gradient and layers 1–3 of it are all dead; the skip
    carries the signal, so the input layer, block 1 and the output still learn."""
    network = NetworkConfig(width=16, depth=8, layer_norm=False, activation="relu")
    mlp, params = mlp_params(network)
    p = params["params"]
    zeroed = jax.tree.map(jnp.asarray, p)
    dense = zeroed["blocks"]["DenseNormAct_1"]["Dense_0"]
    dense["kernel"] = dense["kernel"].at[0].set(0.0)
    dense["bias"] = dense["bias"].at[0].set(0.0)
    x = jax.random.normal(RNG, (64, 5))
    target = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    loss = lambda q: jnp.mean((mlp.apply({"params": q}, x) - target) ** 2)
    norms = np.asarray(diag.layer_grad_norms(jax.grad(loss)(zeroed)))
    np.testing.assert_array_equal(norms[1:5], 0.0)  # b0.l0 … b0.l3
    assert np.all(norms[[0, 5, 6, 7, 8, 9]] > 1e-6)

    hidden, _ = diag.hidden_activations(network, zeroed, x)
    dead = np.asarray(diag.dead_unit_fraction(hidden))
    np.testing.assert_array_equal(dead[2:5], 1.0)  # b0.l1 … b0.l3 output exactly 0
    assert dead[0] < 0.5 and dead[5] < 0.5


def test_dead_unit_fraction_by_hand():
    batch = jax.random.normal(RNG, (2, 10, 4))
    batch = batch.at[0, :, 1].set(0.0).at[0, :, 3].set(2.5)  # layer 0: 2 of 4 constant
    batch = batch.at[1, :, :].set(0.0)  # layer 1: all dead
    np.testing.assert_allclose(diag.dead_unit_fraction(batch), [0.5, 1.0])


# ---- representation geometry -------------------------------------------------------------------
def test_singular_values_under_the_seed_vmap_match_numpy():
    """The seed-vmapped measurement batches the SVD; the values are each matrix's own."""
    features = jax.random.normal(RNG, (3, 40, 6)) * jnp.arange(1.0, 7.0)
    batched = jax.jit(jax.vmap(diag.singular_values))(features)
    np.testing.assert_allclose(
        batched, np.linalg.svd(np.asarray(features), compute_uv=False), rtol=1e-5
    )
    assert np.all(np.diff(np.asarray(batched), axis=-1) <= 0)  # descending
    np.testing.assert_allclose(jax.jit(diag.singular_values)(features[1]), batched[1], rtol=1e-6)


def test_effective_rank_of_isotropic_gaussian_is_its_dimension():
    x = jax.random.normal(RNG, (8192, 16))
    rank = float(diag.geometry(x)["effective_rank"])
    assert 15.5 < rank <= 16.0


def test_effective_rank_of_rank_one_batch_is_one():
    u = jax.random.normal(RNG, (256, 1))
    v = jax.random.normal(jax.random.PRNGKey(1), (1, 16))
    g = diag.geometry(u * v)
    assert abs(float(g["effective_rank"]) - 1.0) < 1e-3
    assert float(g["top5_variance"]) == pytest.approx(1.0, abs=1e-6)


def test_effective_rank_and_top_k_by_hand():
    s = jnp.array([3.0, 1.0, 0.0])
    p = np.array([0.75, 0.25])
    assert float(diag.effective_rank(s)) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-6)
    assert float(diag.top_k_variance(s, 1)) == pytest.approx(0.9)
    assert float(diag.effective_rank(jnp.zeros(3))) == 0.0
    # An orthogonal-columns matrix has exactly the given singular values.
    features = jnp.diag(jnp.array([4.0, 2.0, 2.0]))
    np.testing.assert_allclose(
        diag.geometry(features)["singular_values"], [4.0, 2.0, 2.0], rtol=1e-6
    )
    assert float(diag.geometry(features)["effective_rank"]) == pytest.approx(
        np.exp(-(0.5 * np.log(0.5) + 0.5 * np.log(0.25))), rel=1e-5
    )


# ---- the measure step on a real (tiny) trainer -------------------------------------------------
TINY = TrainConfig(
    env="point_u",
    num_envs=4,
    unroll_length=10,
    episode_length=20,
    batch_size=16,
    num_sgd_batches=2,
    min_replay_size=20,
    replay_size=100,
    total_env_steps=2_000,
    num_epochs=2,
    width=16,
    depth=4,
    repr_size=8,
    num_eval_envs=4,
    diagnostics_every=1,
)


@pytest.fixture(scope="module")
def tiny_setup():
    trainer = make_trainer(TINY)
    state = jax.jit(trainer.init)(RNG)
    diag_state = jax.jit(lambda s, k: diag.init(trainer, s, k))(state, jax.random.PRNGKey(7))
    measure = jax.jit(lambda d, s, n: diag.measure(trainer, d, s, n))
    return trainer, state, diag_state, measure


def test_measure_at_init_sees_no_change(tiny_setup):
    _, state, diag_state, measure = tiny_setup
    _, m = measure(diag_state, state, jnp.float32(1.0))
    assert float(m["diag/policy_churn"]) == 0.0
    # Prefill used this very policy, so behaviour and current log-densities agree.
    assert abs(float(m["diag/offpolicy_kl"])) < 1e-4
    for name in diag.ENCODERS:
        np.testing.assert_array_equal(m[f"diag/update_sparsity/{name}"], 1.0)
        assert m[f"diag/grad_norm/{name}"].shape == (TINY.depth + 2,)
        assert m[f"diag/dead_units/{name}"].shape == (TINY.depth + 1,)
    assert m["diag/singular_values/phi"].shape == (TINY.repr_size,)
    assert m["diag/singular_values/hidden_critic_sa"].shape == (TINY.width,)
    assert 0.0 <= float(m["diag/heldout/categorical_accuracy"]) <= 1.0


def test_policy_churn_and_drift_after_a_known_change(tiny_setup):
    """Shift the actor's output bias for the action means: churn is the mean action change
    (divided by the epochs between log points), only the output layer's bias counts as updated,
    and the stored actions become less likely under the new policy (KL > 0)."""
    trainer, state, diag_state, measure = tiny_setup
    actor = state.agent.actor_params
    out = actor["params"]["ResidualMLP_0"]["output"]
    action_size = trainer.env.action_size
    shifted_bias = out["bias"].at[:action_size].add(0.5)
    new_actor = {
        "params": {
            "ResidualMLP_0": {
                **actor["params"]["ResidualMLP_0"],
                "output": {**out, "bias": shifted_bias},
            }
        }
    }
    new_state = state.replace(agent=state.agent.replace(actor_params=new_actor))

    probe_s, probe_g = diag_state.probe_state, diag_state.probe_goal
    change = trainer.agent.act(new_actor, probe_s, probe_g, None) - trainer.agent.act(
        actor, probe_s, probe_g, None
    )
    expected = float(jnp.mean(jnp.linalg.norm(change, axis=-1)))
    assert expected > 0.05

    _, m = measure(diag_state, new_state, jnp.float32(2.0))
    assert float(m["diag/policy_churn"]) == pytest.approx(expected / 2, rel=1e-5)
    assert float(m["diag/offpolicy_kl"]) > 1e-3
    sparsity = np.asarray(m["diag/update_sparsity/actor"])
    np.testing.assert_array_equal(sparsity[:-1], 1.0)
    width = TINY.width
    kernel, bias = width * 2 * action_size, 2 * action_size
    assert sparsity[-1] == pytest.approx((kernel + bias - action_size) / (kernel + bias))
    np.testing.assert_array_equal(m["diag/update_sparsity/critic_sa"], 1.0)


# ---- maze coverage -------------------------------------------------------------------------------
def test_coverage_counts_only_stored_states_per_maze_cell():
    """Rows below `size` count, rows above it (stale) do not; shares sum to one; the visited
    fraction is over free cells."""
    import envs
    from crl import buffer
    from envs import maze_layouts

    env = envs.make("point_u")
    walls, size = env.maze_grid()
    free = np.argwhere(~walls)
    centres = maze_layouts.cell_center(free[:3], size)
    state = np.zeros((10, 2, env.state_size), np.float32)  # [capacity, num_envs, state]
    x, y = env.goal_indices[:2]
    for rows, centre in ((slice(0, 3), centres[0]), (3, centres[1]), (slice(4, None), centres[2])):
        state[rows, :, x], state[rows, :, y] = centre
    # 6 stored states in the first free cell, 2 in the second; rows from `size` on were never
    # written and must not count.
    replay = buffer.ReplayState(
        data={"state": jnp.asarray(state)}, insert_position=jnp.int32(4), size=jnp.int32(4)
    )
    measured = jax.jit(lambda r: diag.coverage(env, r))(replay)
    share = np.asarray(measured["coverage/cells"]).reshape(walls.shape)
    expected = np.zeros(walls.shape)
    expected[tuple(free[0])], expected[tuple(free[1])] = 6 / 8, 2 / 8
    np.testing.assert_allclose(share, expected)
    assert float(measured["coverage/visited_fraction"]) == pytest.approx(2 / len(free))


@pytest.mark.parametrize("name", ["point_hardest", "ant_u_maze", "humanoid_u_maze"])
def test_maze_grid_puts_start_and_goal_cells_where_the_layout_does(name):
    """The cell index of a fresh episode's position and goal are an 'R' and a 'G' cell of the
    layout (same convention for the point and the MJX/brax mazes)."""
    import envs
    from envs import maze_layouts

    env = envs.make(name)
    walls, size = env.maze_grid()
    state = jax.jit(env.reset)(jax.random.PRNGKey(3))
    position = env.achieved_goal(state.obs[: env.state_size])[:2]
    start = int(maze_layouts.flat_cell_index(position, walls.shape, size))
    goal = int(maze_layouts.flat_cell_index(state.goal[:2], walls.shape, size))
    layout = maze_layouts.LAYOUTS[name.removeprefix("point_").removeprefix("ant_").removeprefix(
        "humanoid_").removesuffix("_maze")]
    grid = maze_layouts.as_grid(layout).reshape(-1)
    assert grid[start] == "R" and grid[goal] == "G"


def test_envs_without_a_maze_have_no_coverage():
    import envs

    assert envs.make("reacher").maze_grid() is None
    assert envs.make("ant").maze_grid() is None


def test_diagnostics_every_must_be_non_negative():
    with pytest.raises(ConfigError, match="diagnostics_every"):
        validate(replace(TINY, diagnostics_every=-1))


def test_is_log_point():
    points = [e for e in range(7) if diag.is_log_point(e, 3, 7)]
    assert points == [2, 5, 6]
    assert not any(diag.is_log_point(e, 0, 7) for e in range(7))


# ---- end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_diagnostics_do_not_change_training_and_reach_the_metrics_files(tmp_path):
    from crl.run import train

    config = replace(TINY, num_epochs=3, total_env_steps=3_000, out_dir=str(tmp_path))
    off = train(replace(config, diagnostics_every=0, run_name="off"), quiet=True)
    on = train(replace(config, diagnostics_every=2, run_name="on"), quiet=True)
    read_rows = lambda name: [
        json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    ]
    rows_off, rows_on = read_rows("off"), read_rows("on")
    for a, b in zip(rows_off, rows_on, strict=True):
        for key in a:
            if key.startswith(("train/", "eval/")) or key in ("epoch", "env_steps"):
                assert a[key] == b[key], key
        assert not any(k.startswith("diag/") for k in a)
    assert off["time_at_goal"] == on["time_at_goal"]
    # Critic health reaches the rows every epoch; diagnostics only at log points 1 and 2.
    assert all("train/categorical_accuracy" in r and "train/logits_pos" in r for r in rows_on)
    assert [r["epoch"] for r in rows_on if "diag/policy_churn" in r] == [1, 2]

    data = diag.load(tmp_path / "on")
    np.testing.assert_array_equal(data["epoch"], [1, 2])
    assert data["grad_norm/critic_sa"].shape == (2, TINY.depth + 2)
    assert data["dead_units/actor"].shape == (2, TINY.depth + 1)
    assert data["effective_rank/phi"].shape == (2,)
    assert data["coverage/cells"].shape == (2, env_cells("point_u"))
    assert np.all((data["coverage/visited_fraction"] > 0) & (data["coverage/visited_fraction"] <= 1))
    np.testing.assert_array_equal(data["epochs_since_last"], [2, 1])
    assert np.all(np.isfinite(data["grad_norm/actor"])) and np.all(data["grad_norm/actor"] > 0)
    assert len(data["layers"]["critic_sa"]) == TINY.depth + 2
    with pytest.raises(ValueError, match="no diagnostics"):
        diag.load(tmp_path / "off")
