"""A lower bound on the memory a training run needs, checked before anything is compiled or
written: a config that cannot fit is refused with the estimate instead of failing minutes later
in XLA's allocator (and leaving a run directory behind).

Only arrays that must exist at the same time are counted (float32, 4 bytes; every term is per
seed): the replay buffer, the parameters with their gradients and Adam moments, the env states,
and the larger of one SGD step's saved activations plus one unroll's records, or one evaluation
episode's per-step metrics. XLA's own buffers, brax's physics state and the diagnostics come on
top, so a config refused here cannot run; one that passes may still not fit.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crl.config import TrainConfig

FLOAT = 4  # bytes
ADAM_COPIES = 4  # parameters, gradients, first and second moments
EVAL_METRICS = 2  # at_goal and distance per step and eval env, stacked by the episode's scan


@functools.cache
def env_sizes(env: str, episode_length: int | None) -> tuple[int, int, int, int]:
    """(state_size, goal_size, action_size, episode_length) of the configured env."""
    import envs

    overrides = {} if episode_length is None else {"episode_length": episode_length}
    made = envs.make(env, **overrides)
    return made.state_size, made.goal_size, made.action_size, made.episode_length


def network_parameters(width: int, depth: int, inputs: int, outputs: int) -> int:
    """Dense weights and biases of one residual MLP (LayerNorm scales ignored)."""
    return inputs * width + depth * width * width + width * outputs + (depth + 1) * width + outputs


def estimate_bytes(config: "TrainConfig", num_devices: int = 1) -> dict[str, int]:
    """Bytes per device by part (a lower bound, see the module docstring); `total` sums the
    persistent parts and the larger of the training and evaluation temporaries. Envs and
    replay are split over `num_devices`, everything else is replicated."""
    state, goal, action, episode_length = env_sizes(config.env, config.episode_length)
    width, seeds = config.width, config.num_seeds
    actor_depth = config.actor_depth or config.depth
    critic_depth = config.critic_depth or config.depth
    params = (
        network_parameters(width, actor_depth, state + goal, 2 * action)
        + network_parameters(width, critic_depth, state + action, config.repr_size)
        + network_parameters(width, critic_depth, goal, config.repr_size)
    )
    transition = state + action + 1  # state, action, step-in-episode
    envs_per_device = -(-config.num_envs // num_devices)
    eval_per_device = -(-config.num_eval_envs // num_devices)
    batch_per_device = -(-config.batch_size // num_devices)
    layers = actor_depth + 2 * critic_depth
    if config.remat:  # only block inputs are kept (one per residual block of 4 layers)
        layers = -(-layers // 4)
    parts = {
        "replay": seeds * config.replay_size * envs_per_device * transition * FLOAT,
        "parameters": seeds * ADAM_COPIES * params * FLOAT,
        "env_states": seeds * (envs_per_device + eval_per_device) * (state + goal) * FLOAT,
        "sgd_activations": seeds * (batch_per_device * width * layers
                                    + batch_per_device * config.batch_size) * FLOAT,
        "unroll_records": seeds * config.unroll_length * envs_per_device * transition * FLOAT,
        "eval_episode": seeds * episode_length * (eval_per_device * EVAL_METRICS + 2) * FLOAT,
    }
    persistent = parts["replay"] + parts["parameters"] + parts["env_states"]
    training = parts["sgd_activations"] + parts["unroll_records"]
    parts["total"] = persistent + max(training, parts["eval_episode"])
    return parts


def available_bytes() -> tuple[int, str]:
    """Memory one device can use and what it is: an accelerator's allocator limit, or the
    host's available RAM for CPU devices."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    try:
        import psutil

        return int(psutil.virtual_memory().available), "available host RAM"
    except ImportError:  # psutil is a dependency of jupyter, not of crl itself
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available host RAM"


def gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_memory(config: "TrainConfig", num_devices: int = 1) -> None:
    """ConfigError when the estimate exceeds what a device has, naming the largest part and
    the field that drives it."""
    from crl.config import ConfigError

    parts = estimate_bytes(config, num_devices)
    limit, what = available_bytes()
    if parts["total"] <= limit:
        return
    drivers = {  # fields each part grows with
        "replay": ("replay_size", "num_envs", "num_seeds"),
        "parameters": ("width", "depth", "num_seeds"),
        "env_states": ("num_envs", "num_eval_envs", "num_seeds"),
        "sgd_activations": ("batch_size", "width", "depth", "num_seeds"),
        "unroll_records": ("unroll_length", "num_envs", "num_seeds"),
        "eval_episode": ("episode_length", "num_eval_envs", "num_seeds"),
    }
    largest = max(drivers, key=parts.__getitem__)
    field = max(drivers[largest], key=lambda f: _growth(config, f))
    raise ConfigError(
        f"{field}: this config needs at least {gib(parts['total'])} per device but {what} is "
        f"{gib(limit)}; the largest part is {largest} ({gib(parts[largest])}, grows with "
        f"{' × '.join(drivers[largest])})"
    )


def _growth(config: "TrainConfig", field: str) -> float:
    """How many times larger than the CPU preset's value a field is (the likely culprit)."""
    from crl.config import TrainConfig

    value = getattr(config, field)
    if value is None:
        return 0.0
    default = getattr(TrainConfig(), field) or env_sizes(config.env, None)[3]
    return value / default
