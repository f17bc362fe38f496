"""Training configuration: one frozen dataclass, two presets, and validation that runs before
anything is compiled."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import envs
from crl.networks import Activation, NetworkConfig, check_depth


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    """Contrastive RL training run. Defaults are the CPU preset; `--preset paper` gives the
    paper's hyperparameters (512 envs × unroll 62, batch 512, 800 SGD batches per iteration)."""

    env: str = "point_u"
    """Registered environment name (`crl envs` lists them)."""
    seed: int = 0
    num_seeds: int = 1
    """Seeds trained together in one vmapped program: seed, seed+1, ..., seed+num_seeds-1."""
    total_env_steps: int = 1_000_000
    """Environment steps to train for, prefill included."""
    num_epochs: int = 20
    """Log/evaluation points; each epoch is one compiled call."""
    num_envs: int = 64
    unroll_length: int = 50
    """Steps each env takes per training iteration."""
    episode_length: int | None = None
    """Episode length; None keeps the environment's default."""
    batch_size: int = 256
    num_sgd_batches: int = 32
    """Critic + actor + α updates per training iteration."""
    replay_size: int = 10_000
    """Replay capacity in time steps per env (total transitions = replay_size × num_envs)."""
    min_replay_size: int = 1_000
    """Time steps per env collected before the first update."""
    discount: float = 0.99
    """γ of the geometric goal-offset distribution."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    logsumexp_penalty: float = 0.1
    target_entropy_scale: float = -0.5
    """Target entropy = scale × |A|."""
    width: int = 256
    depth: int = 4
    """Dense layers inside residual blocks (multiple of 4, 4..1024), for actor and critic."""
    actor_depth: int | None = None
    """Overrides `depth` for the actor."""
    critic_depth: int | None = None
    """Overrides `depth` for both critic encoders."""
    repr_size: int = 64
    residual: bool = True
    layer_norm: bool = True
    activation: Activation = "swish"
    remat: bool = False
    """Recompute block activations in the backward pass (less memory at large depth)."""
    num_eval_envs: int = 64
    out_dir: str = "runs"
    run_name: str | None = None
    """Run directory name under out_dir; None builds one from env, depth, seed and time."""

    # ---- derived ------------------------------------------------------------------------------
    def actor_network(self) -> NetworkConfig:
        return self._network(self.actor_depth or self.depth)

    def critic_network(self) -> NetworkConfig:
        return self._network(self.critic_depth or self.depth)

    def _network(self, depth: int) -> NetworkConfig:
        return NetworkConfig(
            width=self.width,
            depth=depth,
            residual=self.residual,
            layer_norm=self.layer_norm,
            activation=self.activation,
            remat=self.remat,
        )

    @property
    def env_steps_per_iteration(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def prefill_unrolls(self) -> int:
        return -(-self.min_replay_size // self.unroll_length)

    @property
    def iterations_per_epoch(self) -> int:
        training_steps = self.total_env_steps - self.prefill_unrolls * self.env_steps_per_iteration
        return max(1, training_steps // (self.num_epochs * self.env_steps_per_iteration))


PRESETS: dict[str, TrainConfig] = {
    "cpu": TrainConfig(),
    "paper": TrainConfig(
        env="ant",
        total_env_steps=100_000_000,
        num_epochs=100,
        num_envs=512,
        unroll_length=62,
        batch_size=512,
        num_sgd_batches=800,
        num_eval_envs=128,
    ),
}
Preset = Literal["cpu", "paper"]


def validate(config: TrainConfig) -> None:
    """Raise ConfigError for the first invalid field; cheap, runs before any compile."""

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    try:
        envs.check_name(config.env)
    except envs.UnknownEnvError as e:
        raise ConfigError(f"env: {e}") from None
    for field in ("depth", "actor_depth", "critic_depth"):
        value = getattr(config, field)
        if value is not None:
            try:
                check_depth(value, field)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    for field in (
        "num_seeds", "total_env_steps", "num_epochs", "num_envs", "unroll_length", "batch_size",
        "num_sgd_batches", "replay_size", "min_replay_size", "width", "repr_size",
        "num_eval_envs",
    ):
        require(getattr(config, field) >= 1, f"{field} must be >= 1, got {getattr(config, field)}")
    require(config.batch_size >= 2, f"batch_size must be >= 2 (InfoNCE needs negatives), got {config.batch_size}")
    require(
        config.episode_length is None or config.episode_length >= 2,
        f"episode_length must be >= 2 or None, got {config.episode_length}",
    )
    require(0.0 < config.discount < 1.0, f"discount must be in (0, 1), got {config.discount}")
    for field in ("actor_lr", "critic_lr", "alpha_lr"):
        require(getattr(config, field) > 0, f"{field} must be > 0, got {getattr(config, field)}")
    require(config.logsumexp_penalty >= 0, f"logsumexp_penalty must be >= 0, got {config.logsumexp_penalty}")
    require(config.min_replay_size >= 3, f"min_replay_size must be >= 3 time steps, got {config.min_replay_size}")
    require(
        config.min_replay_size <= config.replay_size,
        f"min_replay_size ({config.min_replay_size}) must be <= replay_size ({config.replay_size})",
    )
    require(
        config.unroll_length <= config.replay_size,
        f"unroll_length ({config.unroll_length}) must be <= replay_size ({config.replay_size})",
    )
    prefill_transitions = config.prefill_unrolls * config.unroll_length * config.num_envs
    require(
        config.batch_size <= prefill_transitions,
        f"batch_size ({config.batch_size}) is larger than the buffer holds when training starts "
        f"({prefill_transitions} transitions = min_replay_size rounded up to unrolls × num_envs)",
    )
    minimum = (config.prefill_unrolls + config.num_epochs) * config.env_steps_per_iteration
    require(
        config.total_env_steps >= minimum,
        f"total_env_steps ({config.total_env_steps}) must cover prefill plus one iteration per "
        f"epoch: at least {minimum}",
    )


def replace(config: TrainConfig, **changes) -> TrainConfig:
    """A copy with fields changed (dataclasses.replace, re-exported for brevity)."""
    return dataclasses.replace(config, **changes)
