"""Residual networks: shapes, linear parameter growth, scan keeps the graph flat, switches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.networks import (
    Actor,
    Critic,
    DenseNormAct,
    LOG_STD_MAX,
    LOG_STD_MIN,
    NetworkConfig,
    ResidualMLP,
    check_depth,
)

RNG = jax.random.PRNGKey(0)


def param_count(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def test_output_shapes():
    cfg = NetworkConfig(width=32, depth=8)
    x = jnp.ones((5, 7))
    mlp = ResidualMLP(cfg, 3)
    assert mlp.apply(mlp.init(RNG, x), x).shape == (5, 3)

    critic = Critic(cfg, repr_size=16)
    state, action, goal = jnp.ones((5, 4)), jnp.ones((5, 2)), jnp.ones((5, 2))
    phi, psi = critic.apply(critic.init(RNG, state, action, goal), state, action, goal)
    assert phi.shape == (5, 16) and psi.shape == (5, 16)

    actor = Actor(cfg, action_size=2)
    params = actor.init(RNG, state, goal)
    mean, log_std = actor.apply(params, state * 100.0, goal)
    assert mean.shape == (5, 2) and log_std.shape == (5, 2)
    assert jnp.all(log_std >= LOG_STD_MIN) and jnp.all(log_std <= LOG_STD_MAX)


def test_parameter_count_grows_linearly_with_depth():
    width, x = 16, jnp.ones((1, 3))
    counts = {d: param_count(ResidualMLP(NetworkConfig(width, d), 2).init(RNG, x)) for d in (4, 8, 12, 64)}
    per_block = 4 * (width * width + width + 2 * width)  # Dense kernel + bias, LayerNorm scale + bias
    assert counts[8] - counts[4] == per_block
    assert counts[12] - counts[8] == per_block
    assert counts[64] - counts[4] == 15 * per_block


def test_scan_keeps_compiled_graph_size_constant_in_depth():
    x = jnp.ones((2, 3))

    def graph_size(depth: int) -> tuple[int, int]:
        mlp = ResidualMLP(NetworkConfig(width=8, depth=depth), 2)
        params = jax.eval_shape(mlp.init, RNG, x)
        jaxpr = jax.make_jaxpr(mlp.apply)(params, x)
        hlo = jax.jit(mlp.apply).lower(params, x).as_text()
        return len(str(jaxpr)), len(hlo)

    jaxpr16, hlo16 = graph_size(16)
    jaxpr256, hlo256 = graph_size(256)
    assert jaxpr256 <= 1.2 * jaxpr16
    assert hlo256 <= 1.2 * hlo16


def zero_blocks(params):
    """Zero every parameter of the residual blocks (Dense and LayerNorm)."""
    params = jax.tree.map(lambda x: x, params)
    params["params"]["blocks"] = jax.tree.map(jnp.zeros_like, params["params"]["blocks"])
    return params


@pytest.mark.parametrize("residual", [True, False])
def test_residual_switch_removes_the_skip(residual):
    # With all block parameters zero, each block's branch outputs swish(LN(0)·0) = 0: with the
    # skip the input still reaches the output, without it the output is constant.
    mlp = ResidualMLP(NetworkConfig(width=16, depth=8, residual=residual), 2)
    x = jax.random.normal(RNG, (6, 3))
    params = zero_blocks(mlp.init(RNG, x))
    out = mlp.apply(params, x)
    spread = float(jnp.max(jnp.std(out, axis=0)))
    if residual:
        assert spread > 1e-3
    else:
        assert spread < 1e-6


def test_layer_norm_switch_removes_layer_norms():
    x = jnp.ones((1, 3))
    with_ln = ResidualMLP(NetworkConfig(width=8, depth=4, layer_norm=True), 2).init(RNG, x)
    without = ResidualMLP(NetworkConfig(width=8, depth=4, layer_norm=False), 2).init(RNG, x)
    names = lambda p: {"/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(p)}
    assert any("LayerNorm" in n for n in names(with_ln))
    assert not any("LayerNorm" in n for n in names(without))
    # Without LayerNorm a 10× larger input gives a much larger hidden activation; with it, not.
    layer_ln, layer_raw = DenseNormAct(8, True, "relu"), DenseNormAct(8, False, "relu")
    x = jax.random.normal(RNG, (4, 3))
    p_ln, p_raw = layer_ln.init(RNG, x), layer_raw.init(RNG, x)
    ratio = lambda layer, p: float(jnp.linalg.norm(layer.apply(p, 10 * x)) / jnp.linalg.norm(layer.apply(p, x)))
    assert ratio(layer_ln, p_ln) == pytest.approx(1.0, rel=1e-2)
    assert ratio(layer_raw, p_raw) == pytest.approx(10.0, rel=1e-2)


def test_activation_switch():
    x = jax.random.normal(RNG, (64, 3))
    relu, swish = DenseNormAct(16, True, "relu"), DenseNormAct(16, True, "swish")
    params = relu.init(RNG, x)  # same parameter structure for both
    h_relu, h_swish = relu.apply(params, x), swish.apply(params, x)
    assert float(jnp.min(h_relu)) == 0.0
    assert float(jnp.min(h_swish)) < 0.0  # swish dips below zero for negative inputs
    np.testing.assert_allclose(np.maximum(h_swish, 0) > 0, h_relu > 0)


@pytest.mark.parametrize("depth", [0, 2, 6, 1028, -4])
def test_bad_depth_is_rejected(depth):
    with pytest.raises(ValueError, match="multiple of 4"):
        check_depth(depth)
