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


def test_energy_matrix_matches_the_direct_form_in_value_and_gradient():
    """Large representations (‖φ‖ ≈ 30) with positives 1e-3 apart, one exactly equal: where the
    expanded ‖φ‖² + ‖ψ‖² − 2φ·ψ cancels most. Values against float64, and the InfoNCE gradient
    against the direct form's."""
    k_phi, k_noise = jax.random.split(jax.random.PRNGKey(0))
    phi = 4.0 * jax.random.normal(k_phi, (64, 64))
    psi = phi + 1e-3 * jax.random.normal(k_noise, (64, 64))
    psi = psi.at[0].set(phi[0])
    reference = -np.sqrt(
        ((np.float64(phi)[:, None, :] - np.float64(psi)[None, :, :]) ** 2).sum(-1) + 1e-12
    )
    fast = np.asarray(losses.energy_matrix(phi, psi))
    np.testing.assert_allclose(np.diag(fast), np.diag(reference), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-4)

    def loss(energy, phi, psi):
        return losses.infonce_loss(energy(phi, psi), 0.1)[0]

    grads = jax.grad(loss, argnums=(1, 2))(losses.energy_matrix, phi, psi)
    direct = jax.grad(loss, argnums=(1, 2))(losses.energy_matrix_direct, phi, psi)
    for got, want in zip(grads, direct):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


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
