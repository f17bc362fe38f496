"""CRL losses: InfoNCE critic, SAC-style actor with automatic entropy, and the tanh-Gaussian
log-density in its exact, numerically stable form."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def energy(sa_repr: jax.Array, goal_repr: jax.Array) -> jax.Array:
    """f(s, a, g) = −‖φ(s, a) − ψ(g)‖₂ per row; the epsilon keeps its gradient finite at 0."""
    return -jnp.sqrt(jnp.sum((sa_repr - goal_repr) ** 2, axis=-1) + 1e-12)


def energy_matrix(sa_repr: jax.Array, goal_repr: jax.Array) -> jax.Array:
    """logits[i, j] = −‖φ_i − ψ_j‖₂ for every state-action i and goal j in the batch.

    Squared distances come from one matmul, ‖φ_i‖² + ‖ψ_j‖² − 2 φ_i·ψ_j, instead of
    materialising every difference (an [n, n, d] array: 67 MB forward and again backward at
    the paper's batch of 512, which made the loss ~70× slower than this form on a CPU). The
    matmul runs at full f32 precision (GPUs default to TF32), and the diagonal — the positives,
    which training pulls close together, where the expanded form cancels most — is computed from
    the differences directly when the matrix is square.
    """
    squared = (
        jnp.sum(sa_repr**2, axis=-1)[:, None]
        + jnp.sum(goal_repr**2, axis=-1)[None, :]
        - 2 * jnp.matmul(sa_repr, goal_repr.T, precision=jax.lax.Precision.HIGHEST)
    )
    squared = jnp.maximum(squared, 0.0)  # rounding can make a tiny distance negative
    if sa_repr.shape[0] == goal_repr.shape[0]:
        diagonal = jnp.sum((sa_repr - goal_repr) ** 2, axis=-1)
        squared = jnp.where(jnp.eye(sa_repr.shape[0], dtype=bool), diagonal[:, None], squared)
    # The epsilon keeps the gradient of the norm finite when φ_i == ψ_j.
    return -jnp.sqrt(squared + 1e-12)


def energy_matrix_direct(sa_repr: jax.Array, goal_repr: jax.Array) -> jax.Array:
    """`energy_matrix` from every difference φ_i − ψ_j (an [n, n, d] array), as the public
    code computes it: the reference the faster form is tested and profiled against."""
    diff = sa_repr[:, None, :] - goal_repr[None, :, :]
    return -jnp.sqrt(jnp.sum(diff**2, axis=-1) + 1e-12)


def infonce_loss(
    logits: jax.Array, logsumexp_penalty: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Forward InfoNCE: each row's positive is on the diagonal; plus c·mean(logsumexp²), which
    pins the free additive constant of the logits.

    Returns the loss and critic-health metrics.
    """
    logsumexp = jax.nn.logsumexp(logits, axis=1)
    positives = jnp.diag(logits)
    infonce = -jnp.mean(positives - logsumexp)
    loss = infonce + logsumexp_penalty * jnp.mean(logsumexp**2)
    size = logits.shape[0]
    off_diagonal = (jnp.sum(logits) - jnp.sum(positives)) / (size * (size - 1))
    metrics = {
        "critic_loss": loss,
        "infonce": infonce,
        "logsumexp": jnp.mean(logsumexp),
        "logits_pos": jnp.mean(positives),
        "logits_neg": off_diagonal,
        "categorical_accuracy": jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(size)),
    }
    return loss, metrics


def tanh_log_det_jacobian(pre_tanh: jax.Array) -> jax.Array:
    """log(1 − tanh²(x)) computed exactly as 2·(log 2 − x − softplus(−2x)).

    The public code's log(1 − tanh²(x) + 1e-6) saturates at log(1e-6) and loses the gradient
    for large |x|, which deep actors reach; this form is exact and finite for any x.
    """
    return 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def sample_tanh_gaussian(
    rng: jax.Array, mean: jax.Array, log_std: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample a = tanh(mean + std·ε) and its log-density (summed over dims)."""
    std = jnp.exp(log_std)
    noise = jax.random.normal(rng, mean.shape, mean.dtype)
    pre_tanh = mean + std * noise
    gaussian_log_prob = -0.5 * noise**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_prob = jnp.sum(gaussian_log_prob - tanh_log_det_jacobian(pre_tanh), axis=-1)
    return jnp.tanh(pre_tanh), log_prob


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """Log-density of a given action in (−1, 1) under the tanh-Gaussian (used for drift
    diagnostics); actions are clipped away from ±1 where arctanh diverges."""
    action = jnp.clip(action, -1 + 1e-6, 1 - 1e-6)
    pre_tanh = jnp.arctanh(action)
    noise = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian_log_prob = -0.5 * noise**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    return jnp.sum(gaussian_log_prob - tanh_log_det_jacobian(pre_tanh), axis=-1)


def actor_loss(
    log_prob: jax.Array, energy: jax.Array, alpha: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SAC actor loss against the critic's energy: mean(α·log π(a|s,g) − f(s, a, g))."""
    loss = jnp.mean(alpha * log_prob - energy)
    return loss, {"actor_loss": loss, "entropy": -jnp.mean(log_prob)}


def alpha_loss(
    log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float
) -> jax.Array:
    """Automatic entropy tuning: α rises while the policy's entropy is below the target."""
    return jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(-log_prob - target_entropy))
