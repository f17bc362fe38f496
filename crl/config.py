"""Training configuration: one frozen dataclass, two presets, and validation that runs before
anything is compiled."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

import tyro

import envs
from crl.networks import Activation, MatmulDtype, NetworkConfig, check_depth


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
    terminate_when_unhealthy: bool | None = None
    """End an episode when the robot falls (ant/humanoid families: torso height out of range,
    as the references do); None keeps the env's default (on for those families)."""
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
    matmul_dtype: MatmulDtype = "float32"
    """bfloat16: Dense matmuls in bf16 with f32 accumulation; params, LayerNorm and losses stay f32."""
    num_eval_envs: int = 64
    eval_env: str | None = None
    """Registered env to evaluate on (same observation/goal/action sizes as `env`); None = the
    paper's evaluation variant `{env}_eval` where one is registered, else `env`."""
    eval_every: int = 1
    """Evaluate (deterministic policy, a full episode on every eval env) every this-many epochs
    and always at the last; 1 = every epoch, as the paper. Epochs between have no eval/ fields."""
    score_window: int = 5
    """The run's score (summary time_at_goal) is the mean of its last this-many evaluations."""
    out_dir: str = "runs"
    run_name: str | None = None
    """Run directory name under out_dir; None builds one from env, depth, seed and time."""
    diagnostics_every: int = 0
    """Log stability diagnostics (per-layer grad norms, effective rank, dead units, update
    sparsity, policy churn, off-policy drift; see crl.diagnostics) every N epochs; 0 = off."""
    checkpoint_every: int = 1
    """Save a checkpoint (RUN_DIR/checkpoints) every N epochs and after the last; 0 = never."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept."""
    checkpoint_replay: bool = True
    """Include the replay buffer in checkpoints (needed for an exact resume)."""
    compilation_cache_dir: str | None = "~/.cache/crl/xla"
    """Keep compiled programs on disk here, so a rerun with the same shapes (another seed, a
    resume, a sweep point seen before) loads them instead of compiling. None leaves JAX's own
    setting; so does this default when JAX_COMPILATION_CACHE_DIR is set. Process-wide: the last
    run started sets it."""
    overlap_compiles: bool = True
    """Compile the epoch and evaluation programs in background threads while init compiles and
    the replay prefills: first metrics come sooner, but the host holds up to three XLA
    compilations' working memory at once (ant, depth 4, CPU, cold cache: first metrics 63 s
    against 72 s, peak 2.7 against 1.6 GiB). --no-overlap-compiles compiles one program at a
    time, for hosts short of memory."""
    num_devices: int | None = None
    """Devices to split envs, replay and SGD batches over (data parallel); None = all devices
    of the job (every host after jax.distributed.initialize)."""

    # ---- stability fixes (crl.regularizers, crl.networks; all off by default) -----------------
    isotropy_weight: float = 0.0
    """Weight of the isotropic-representation penalty on φ and ψ (batch covariance pushed
    towards a scaled identity; after Saheb et al. 2026); 0 = off."""
    multi_skip: bool = False
    """Multi-skip residual networks (Creus Castanyer et al. 2025): the input layer's output is
    added to every block's output, keeping gradients near-uniform across depth (with residual
    blocks, as in the paper; without them only the input layer is reconnected). The paper's
    other intervention, the Kron (PSGD) optimiser, is not offered: optax has none."""
    churn_weight: float = 0.0
    """Weight of CHAIN churn reduction (Tang & Berseth 2024): penalise the change of the actor's
    deterministic action and the critic's logits on a separate replay batch since the previous
    update; 0 = off."""

    # ---- live stability audit (crl.audit; runs at each diagnostics log point) ----------------
    audit_dead_layer_ratio: float = 1e-6
    """A layer is dead when its gradient norm is below this × the median of the other layers."""
    audit_min_effective_rank: float = 1.1
    """Warn when the effective rank of φ or ψ falls below this (of the uncentred batch, as
    diagnostics measure it: embeddings with a large shared offset already sit near 1, so only
    a near-total collapse onto one direction is flagged by default)."""
    audit_max_dead_units: float = 0.5
    """Warn when a hidden layer's fraction of dead (constant) units exceeds this."""
    audit_churn_rises: int = 3
    """Warn when policy churn rose at this many consecutive log points; 0 = never."""

    # ---- experiment tracking (crl.tracking; never changes what the run computes) ------------
    logger: tyro.conf.UseAppendAction[tuple[Literal["jsonl", "tensorboard", "wandb"], ...]] = ("jsonl",)
    """Trackers for metrics, config and summary (jsonl is always on; repeatable)."""
    wandb_project: str = "crl"
    wandb_group: str | None = None
    """W&B group of this run's seeds; None = the run name (sweeps: the sweep's name)."""
    wandb_mode: Literal["online", "offline", "disabled"] | None = None
    """offline: files in RUN_DIR/wandb, no network; None: $WANDB_MODE, else online."""

    divergence_threshold: float = 1e10
    """Stop the run (like a NaN) when a loss's epoch mean exceeds this in magnitude: a loss
    of 1e21 is finite but the run has diverged; inf = only NaN/Inf stop it."""

    def __post_init__(self):
        # config.json stores tuples as lists; keep the config hashable (jit keys on it). A
        # string is left alone for validate to refuse (tuple("jsonl") would split it).
        if isinstance(self.logger, list):
            object.__setattr__(self, "logger", tuple(self.logger))
        if isinstance(self.out_dir, os.PathLike):  # a Path is fine; config.json stores str
            object.__setattr__(self, "out_dir", os.fspath(self.out_dir))

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
            matmul_dtype=self.matmul_dtype,
            multi_skip=self.multi_skip,
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


INT32_MAX = 2**31 - 1
"""Counters, seeds and array dimensions are int32 on device: larger values wrap silently."""


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low}"


def _in_open(low: float, high: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: low < v < high), f"in ({low:g}, {high:g})"


# Range rule per field (types come from the annotations, see check_types). A field that is
# None where its annotation allows None is not range-checked. Fields added to TrainConfig need
# an entry only if they have a range; every int is additionally bounded by INT32_MAX.
FIELD_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": ((lambda v: 0 <= v <= INT32_MAX), f"in [0, {INT32_MAX}] (seeds are int32 on device)"),
    **{f: _at_least(1) for f in (
        "num_seeds", "total_env_steps", "num_epochs", "num_envs", "unroll_length",
        "num_sgd_batches", "replay_size", "width", "repr_size", "num_eval_envs", "score_window",
        "eval_every",
    )},
    "batch_size": ((lambda v: v >= 2), ">= 2 (InfoNCE needs negatives)"),
    "min_replay_size": ((lambda v: v >= 3), ">= 3 time steps"),
    "episode_length": ((lambda v: v >= 2), ">= 2 or None"),
    "discount": _in_open(0.0, 1.0),
    **{f: ((lambda v: v > 0), "> 0") for f in ("actor_lr", "critic_lr", "alpha_lr")},
    "logsumexp_penalty": _at_least(0),
    "diagnostics_every": ((lambda v: v >= 0), ">= 0 (0 = off)"),
    "checkpoint_every": ((lambda v: v >= 0), ">= 0 (0 = never)"),
    "keep_checkpoints": _at_least(1),
    "divergence_threshold": ((lambda v: v > 0), "> 0 (inf = off)"),
}
# Floats that may be infinite (everything else must be finite: inf/NaN pass most comparisons).
INFINITE_OK = frozenset({"divergence_threshold"})


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether `value` has the annotated type; bool is not an int, an int is a float."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_ok(value, typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if origin is Literal:
        return isinstance(value, str) and value in typing.get_args(annotation)
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        return isinstance(value, tuple) and all(_type_ok(v, item) for v in value)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _describe(annotation: Any) -> str:
    """'an int or None', "one of 'swish', 'relu'", ... for error messages."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _describe(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return f"a tuple of ({_describe(typing.get_args(annotation)[0])})"
    if annotation is type(None):
        return "None"
    return {bool: "a bool", int: "an int", float: "a float", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


@functools.cache
def _annotations() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig, include_extras=True)


def check_types(config: TrainConfig) -> None:
    """Every field has its annotated type (the Python API gets no parsing), floats are finite
    and every value is in its FIELD_RULES range; ints fit int32."""
    for name, annotation in _annotations().items():
        value = getattr(config, name)
        if not _type_ok(value, annotation):
            raise ConfigError(f"{name} must be {_describe(annotation)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            if not (name in INFINITE_OK and value == math.inf):
                raise ConfigError(f"{name} must be finite, got {value!r}")
        if value is None or isinstance(value, (bool, str, tuple)):
            continue
        if name in FIELD_RULES:
            ok, allowed = FIELD_RULES[name]
            if not ok(value):
                raise ConfigError(f"{name} must be {allowed}, got {value!r}")
        if isinstance(value, numbers.Integral) and abs(value) > INT32_MAX:
            raise ConfigError(f"{name} must be <= {INT32_MAX} (int32 on device), got {value!r}")


def check_run_name(config: TrainConfig) -> None:
    """run_name is one directory name: nothing may be written outside out_dir."""
    name = config.run_name
    if name is None:
        return
    if name in ("", ".", "..") or "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise ConfigError(
            f"run_name must be a single directory name (no '/', not '.' or '..'), got {name!r}"
        )


def validate(config: TrainConfig) -> None:
    """Raise ConfigError for the first invalid field; cheap, runs before any compile."""

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    check_types(config)
    check_run_name(config)
    try:
        envs.check_name(config.env)
    except envs.UnknownEnvError as e:
        raise ConfigError(f"env: {e}") from None
    if config.eval_env is not None:
        try:
            envs.check_name(config.eval_env)
        except envs.UnknownEnvError as e:
            raise ConfigError(f"eval_env: {e}") from None
    if config.terminate_when_unhealthy is not None:
        for field in ("env", "eval_env"):
            name = getattr(config, field)
            if name is not None and not envs.make(name).has_health_check:
                raise ConfigError(
                    f"terminate_when_unhealthy: {field} {name} has no notion of falling (only the "
                    f"ant and humanoid families terminate early); leave it unset"
                )
    for field in ("depth", "actor_depth", "critic_depth"):
        value = getattr(config, field)
        if value is not None:
            try:
                check_depth(value, field)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    require(
        config.seed + config.num_seeds - 1 <= INT32_MAX,
        f"seed: seeds {config.seed}..{config.seed + config.num_seeds - 1} exceed {INT32_MAX} "
        f"(int32 on device)",
    )
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
    check_stability_fields(config)
    check_devices(config)
    from crl.tracking import check_installed  # the trackers' clients are optional extras

    check_installed(config)
    from crl.memory import check_memory

    check_memory(config, jax_device_count(config))
    steps = (config.prefill_unrolls + config.num_epochs) * config.env_steps_per_iteration
    require(
        steps <= INT32_MAX,
        f"num_envs: num_envs × unroll_length × (prefill unrolls + num_epochs) = {steps} env "
        f"steps, more than the int32 step counter holds ({INT32_MAX})",
    )
    minimum = (config.prefill_unrolls + config.num_epochs) * config.env_steps_per_iteration
    require(
        config.total_env_steps >= minimum,
        f"total_env_steps ({config.total_env_steps}) must cover prefill plus one iteration per "
        f"epoch: at least {minimum}",
    )


def jax_device_count(config: TrainConfig) -> int:
    """Devices the run splits envs and replay over (num_devices, or all)."""
    import jax

    return config.num_devices or jax.device_count()


def check_stability_fields(config: TrainConfig) -> None:
    """The stability fixes' weights and the audit's thresholds (crl.regularizers, crl.audit)."""
    for field in ("isotropy_weight", "churn_weight"):
        value = getattr(config, field)
        if not value >= 0:  # also rejects NaN
            raise ConfigError(f"{field} must be >= 0 (0 = off), got {value}")
    if config.isotropy_weight > 0 and config.repr_size < 2:
        raise ConfigError(f"isotropy_weight needs repr_size >= 2 (a covariance), got {config.repr_size}")
    if not 0 < config.audit_dead_layer_ratio < 1:
        raise ConfigError(f"audit_dead_layer_ratio must be in (0, 1), got {config.audit_dead_layer_ratio}")
    if not config.audit_min_effective_rank >= 0:
        raise ConfigError(f"audit_min_effective_rank must be >= 0, got {config.audit_min_effective_rank}")
    if not 0 <= config.audit_max_dead_units < 1:
        raise ConfigError(f"audit_max_dead_units must be in [0, 1), got {config.audit_max_dead_units}")
    if config.audit_churn_rises < 0:
        raise ConfigError(f"audit_churn_rises must be >= 0 (0 = never), got {config.audit_churn_rises}")


def check_devices(config: TrainConfig) -> None:
    """num_devices must exist and divide num_envs and batch_size (each device holds an equal
    slice of the envs, the replay buffer and every SGD batch). Initialises the JAX backend but
    compiles nothing."""
    import jax

    available = jax.device_count()
    n = available if config.num_devices is None else config.num_devices
    if not 1 <= n <= available:
        raise ConfigError(f"num_devices must be in [1, {available}] (devices visible), got {n}")
    if jax.process_count() > 1 and n != available:
        raise ConfigError(
            f"num_devices must be None or {available} (all devices) in a multi-process job, got {n}"
        )
    if jax.process_count() > 1 and config.run_name is None:
        raise ConfigError("run_name must be set in a multi-process job (every process writes there)")
    for field in ("num_envs", "batch_size"):
        value = getattr(config, field)
        if value % n:
            raise ConfigError(
                f"{field} ({value}) must be divisible by the number of devices ({n}); "
                f"change {field} or set num_devices"
            )


def replace(config: TrainConfig, **changes) -> TrainConfig:
    """A copy with fields changed (dataclasses.replace, re-exported for brevity)."""
    return dataclasses.replace(config, **changes)
