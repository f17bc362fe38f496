"""CRL losses against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import losses


def test_energy_matrix_is_negative_l2_distance():
    phi = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    psi = jnp.array([[0.0, 0.0], [0.0, 4.0], [3.0, 0.0]])
    expected = -np.array([[0.0, 4.0, 3.0], [5.0, 3.0, 4.0]])
    np.testing.assert_allclose(losses.energy_matrix(phi, psi), expected, atol=1e-5)


def test_infonce_equals_hand_computed_value():
    logits = jnp.array([[-1.0, -2.0], [-3.0, -0.5]])
    # Row 0: positive -1, lse = log(e^-1 + e^-2); row 1: positive -0.5, lse = log(e^-3 + e^-0.5).
    lse0 = np.log(np.exp(-1.0) + np.exp(-2.0))
    lse1 = np.log(np.exp(-3.0) + np.exp(-0.5))
    infonce = -((-1.0 - lse0) + (-0.5 - lse1)) / 2
    penalty = 0.1 * (lse0**2 + lse1**2) / 2
    loss, metrics = losses.infonce_loss(logits, logsumexp_penalty=0.1)
    assert float(loss) == pytest.approx(infonce + penalty, rel=1e-6)
    assert float(metrics["infonce"]) == pytest.approx(infonce, rel=1e-6)
    assert float(metrics["categorical_accuracy"]) == 1.0
    assert float(metrics["logits_pos"]) == pytest.approx(-0.75)
    assert float(metrics["logits_neg"]) == pytest.approx(-2.5)


def test_stable_log_det_is_exact_and_finite_at_large_pre_tanh():
    x = jnp.array([-20.0, -3.0, -0.5, 0.0, 0.5, 3.0, 20.0])
    stable = losses.tanh_log_det_jacobian(x)
    assert jnp.all(jnp.isfinite(stable))
    # Exact where the naive formula is accurate...
    mid = np.array([-0.5, 0.0, 0.5], dtype=np.float64)
    np.testing.assert_allclose(stable[2:5], np.log(1 - np.tanh(mid) ** 2), rtol=1e-5)
    # ...and asymptotically log 4 − 2|x| where 1 − tanh² underflows in float32.
    np.testing.assert_allclose(stable[jnp.array([0, -1])], np.log(4.0) - 40.0, rtol=1e-5)
    naive = jnp.log(1 - jnp.tanh(x) ** 2 + 1e-6)
    assert float(naive[-1]) == pytest.approx(np.log(1e-6), rel=1e-3)  # the public code's floor
    grad = jax.grad(lambda v: losses.tanh_log_det_jacobian(v).sum())(x)
    assert jnp.all(jnp.isfinite(grad))
    np.testing.assert_allclose(grad[jnp.array([0, -1])], [2.0, -2.0], rtol=1e-5)


def test_sampled_log_prob_matches_density_of_the_action():
    rng = jax.random.PRNGKey(3)
    mean = jnp.array([[0.3, -1.0], [2.0, 0.0]])
    log_std = jnp.array([[-1.0, 0.0], [-0.5, -2.0]])
    action, log_prob = losses.sample_tanh_gaussian(rng, mean, log_std)
    assert jnp.all(jnp.abs(action) < 1)
    np.testing.assert_allclose(
        log_prob, losses.tanh_gaussian_log_prob(mean, log_std, action), rtol=1e-3, atol=1e-3
    )


def test_alpha_rises_when_entropy_is_below_target():
    log_prob = jnp.array([5.0, 6.0])  # entropy ≈ −5.5, below a target of −1
    grad = jax.grad(losses.alpha_loss)(jnp.zeros(()), log_prob, -1.0)
    assert float(grad) < 0  # gradient descent increases log α
