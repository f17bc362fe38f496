"""NaN/Inf guard: flags computed inside the jitted training loop, checked by the driver after
each epoch, before that epoch's state can be checkpointed."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

LOSS_KEYS = ("critic_loss", "actor_loss", "alpha_loss")
GRAD_KEYS = ("critic_grad_norm", "actor_grad_norm")
# metric name → what the error message calls it
FLAGS = {"nonfinite_loss": "loss", "nonfinite_grads": "gradients", "nonfinite_params": "parameters"}


class NonFiniteError(RuntimeError):
    """Training produced NaN or Inf; the message names the epoch and the quantity."""


def _any_nonfinite(arrays) -> jax.Array:
    return jnp.any(jnp.stack([jnp.any(~jnp.isfinite(x)) for x in arrays]))


def nonfinite_flags(agent_state: Any, metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """1.0/0.0 flags for one training iteration: non-finite losses, gradients (a global norm is
    finite only if every gradient entry is) or parameters (actor, critic, α)."""
    params = jax.tree.leaves((agent_state.actor_params, agent_state.critic_params,
                              agent_state.log_alpha))
    flags = {
        "nonfinite_loss": _any_nonfinite([metrics[k] for k in LOSS_KEYS if k in metrics]),
        "nonfinite_grads": _any_nonfinite([metrics[k] for k in GRAD_KEYS if k in metrics]),
        "nonfinite_params": _any_nonfinite(params),
    }
    return {k: v.astype(jnp.float32) for k, v in flags.items()}


def check_epoch(
    epoch: int, rows: list[dict[str, Any]], last_good: str, divergence_threshold: float = math.inf
) -> None:
    """Raise NonFiniteError if any seed's epoch metrics carry a non-finite flag, or a loss whose
    magnitude exceeds `divergence_threshold` (finite but diverged: the next epochs would be NaN).
    `rows` are the epoch's metrics rows (keys 'train/<flag>'); `last_good` describes the
    checkpoint to resume."""
    bad, diverged = [], []
    for row in rows:
        quantities = [name for flag, name in FLAGS.items() if row.get(f"train/{flag}", 0.0) != 0.0]
        if quantities:
            culprits = sorted(
                k.removeprefix("train/") for k in (*LOSS_KEYS, *GRAD_KEYS)
                if not _finite_float(row.get(f"train/{k}", 0.0))
            )
            detail = f" ({', '.join(culprits)})" if culprits else ""
            bad.append(f"seed {row['seed']}: {', '.join(quantities)}{detail}")
            continue
        large = [
            f"{k} {float(row[f'train/{k}']):.3g}" for k in LOSS_KEYS
            if abs(_as_float(row.get(f"train/{k}", 0.0))) > divergence_threshold
        ]
        if large:
            diverged.append(f"seed {row['seed']}: {', '.join(large)}")
    if bad:
        raise NonFiniteError(
            f"non-finite values at epoch {epoch} — {'; '.join(bad)}; stopped without "
            f"checkpointing this epoch; {last_good}"
        )
    if diverged:
        raise NonFiniteError(
            f"diverged at epoch {epoch} — {'; '.join(diverged)} (|loss| > divergence_threshold "
            f"{divergence_threshold:.3g}); stopped without checkpointing this epoch; {last_good}"
        )


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _finite_float(value: Any) -> bool:
    try:
        return bool(jnp.isfinite(float(value)))
    except (TypeError, ValueError):
        return True
