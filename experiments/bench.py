"""Benchmarks: compile time, learner throughput, env throughput, memory, vmapped seeds and mixed
precision, measured in one process run so every ratio compares numbers taken side by side.

    crl bench                      # CPU preset: modest sizes, < ~10 min on 2 cores
    crl bench --preset gpu         # the paper's sizes, unchanged script
    crl bench --sections compile --compile-depths 4 1024 --loop-max-depth 64

Prints rich tables and writes a JSON file (and, with --markdown, the same tables as markdown).
Compile and memory measurements run each configuration in a fresh subprocess, so compile caches
and peak-memory high-water marks never mix between configurations.

The loop-of-blocks network here is the *reference* for the compile-time comparison only: the
same math as `crl.networks.ResidualMLP` with the residual blocks unrolled by a Python loop (as
in the public CRL code) instead of `nn.scan`; `loop_params_from_scan` converts parameters so
tests can check the two compute the same function.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

import envs
from crl.agent import Batch, CRLAgent
from crl.config import ConfigError, TrainConfig, replace, validate
from crl.networks import (
    LAYERS_PER_BLOCK,
    LOG_STD_MAX,
    LOG_STD_MIN,
    Critic,
    DenseNormAct,
    NetworkConfig,
    ResidualBlock,
    check_depth,
    dense,
)
from crl.train import Trainer, make_agent, make_env, over_seeds

Section = Literal["compile", "throughput", "env", "memory", "seeds", "precision"]
SECTIONS: tuple[Section, ...] = ("compile", "throughput", "env", "memory", "seeds", "precision")
NetworkKind = Literal["scan", "loop"]
RESULT_PREFIX = "BENCH_RESULT "
REPO_ROOT = Path(__file__).resolve().parents[1]

# Dense (no sparsity) tensor-core peaks from NVIDIA datasheets, FLOP/s. float32 assumes TF32,
# which XLA uses for f32 matmuls at default precision on Ampere/Hopper. Matched by substring of
# `device_kind`, first match wins (PCIe before the SXM default).
ASSUMED_PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"float32": 378e12, "bfloat16": 756e12}),
    ("H100", {"float32": 494.7e12, "bfloat16": 989.4e12}),
    ("H200", {"float32": 494.7e12, "bfloat16": 989.4e12}),
    ("A100", {"float32": 156e12, "bfloat16": 312e12}),
)


# ---- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchConfig:
    """Benchmark sizes. Defaults are the CPU preset; `--preset gpu` uses the paper's sizes."""

    sections: tuple[Section, ...] = SECTIONS
    """Which measurements to run."""
    env: str = "point_u"
    """Environment for the learner measurements (compile, throughput, memory, seeds, precision)."""
    width: int = 256
    batch_size: int = 256
    # compile
    compile_depths: tuple[int, ...] = (4, 16, 64)
    """Depths to compile; the CPU preset stops at 64 to stay short — run
    `--sections compile --compile-depths 256 1024` for the deep end."""
    loop_max_depth: int = 64
    """The loop-of-blocks reference is compiled only up to this depth (its compile grows with depth)."""
    compile_timeout_s: int = 600
    # learner throughput
    throughput_depths: tuple[int, ...] = (4, 16, 64)
    sgd_steps: int = 8
    """SGD steps per timed call (one compiled scan)."""
    repeats: int = 3
    """Timed calls after one warm-up call; the best is reported."""
    # environments
    env_names: tuple[str, ...] = ("point_u",)
    """Environments for the env-throughput table; empty = every registered env."""
    num_envs: tuple[int, ...] = (16, 128, 512, 2048)
    unroll_length: int = 50
    env_depth: int = 4
    """Actor/critic depth in the collection and end-to-end measurements."""
    e2e_num_sgd_batches: int = 16
    """SGD steps per training iteration in the end-to-end measurement."""
    # memory
    memory_depths: tuple[int, ...] = (4, 64)
    memory_batch_sizes: tuple[int, ...] = (256, 512)
    fit_batch_size: int = 512
    fit_width: int = 256
    fit_depths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    fit_remat: tuple[bool, ...] = (False,)
    """Remat settings to run the largest-depth search for."""
    memory_cap_gib: float | None = 4.0
    """Stop the search when a configuration's peak exceeds this (CPU); None: search until failure."""
    memory_timeout_s: int = 600
    # seeds in parallel
    num_seeds: int = 4
    seeds_depth: int = 4
    seeds_epochs: int = 2
    # mixed precision
    precision_depth: int = 16
    learning_env_steps: int = 120_000
    learning_epochs: int = 3
    learning_depth: int = 4
    learning_num_envs: int = 64
    learning_min_replay_size: int = 1000
    """The learning check uses the CPU training preset except for these sizes."""
    # output
    out: str = "bench_results/bench.json"
    markdown: str | None = None
    """Also write the tables as markdown to this path."""


BENCH_PRESETS: dict[str, BenchConfig] = {
    "cpu": BenchConfig(),
    "gpu": BenchConfig(
        batch_size=512,
        compile_depths=(4, 16, 64, 256, 1024),
        fit_depths=(4, 8, 16, 32, 64, 128, 256, 512, 1024),
        loop_max_depth=256,
        compile_timeout_s=1800,
        throughput_depths=(4, 16, 64, 256, 1024),
        sgd_steps=50,
        env_names=(),
        memory_depths=(4, 16, 64, 256, 1024),
        memory_batch_sizes=(256, 512, 1024),
        fit_remat=(False, True),
        memory_cap_gib=None,
        num_seeds=8,
        seeds_depth=64,
        e2e_num_sgd_batches=64,
        precision_depth=64,
        learning_env_steps=2_000_000,
        learning_epochs=5,
        learning_depth=16,
    ),
}


def check_bench_config(cfg: BenchConfig) -> None:
    """One-line ValueError for bad sizes or names, before anything is compiled."""
    envs.check_name(cfg.env)
    for name in cfg.env_names:
        envs.check_name(name)
    for field in ("compile_depths", "throughput_depths", "memory_depths", "fit_depths"):
        for depth in getattr(cfg, field):
            check_depth(depth, field)
    for field in ("env_depth", "seeds_depth", "precision_depth", "learning_depth"):
        check_depth(getattr(cfg, field), field)
    for field in ("width", "batch_size", "sgd_steps", "repeats", "unroll_length", "num_seeds",
                  "seeds_epochs", "e2e_num_sgd_batches", "learning_epochs", "fit_batch_size",
                  "fit_width", "learning_num_envs", "learning_min_replay_size"):
        if getattr(cfg, field) < 1:
            raise ValueError(f"{field} must be >= 1, got {getattr(cfg, field)}")
    if min(cfg.num_envs, default=1) < 1 or min(cfg.memory_batch_sizes, default=2) < 2:
        raise ValueError("num_envs must be >= 1 and memory_batch_sizes >= 2")
    unknown = set(cfg.sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")


# ---- the loop-of-blocks reference network -------------------------------------------------------
class LoopResidualMLP(nn.Module):
    """`ResidualMLP` with its blocks unrolled by a Python loop (one parameter set per block), the
    way the public CRL code builds them: the traced graph grows linearly with depth."""

    config: NetworkConfig
    output_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        check_depth(cfg.depth)
        x = DenseNormAct(
            cfg.width, cfg.layer_norm, cfg.activation, cfg.matmul_dtype, name="input"
        )(x)
        block = nn.remat(ResidualBlock) if cfg.remat else ResidualBlock
        for i in range(cfg.depth // LAYERS_PER_BLOCK):
            x, _ = block(
                cfg.width, cfg.residual, cfg.layer_norm, cfg.activation, cfg.matmul_dtype,
                name=f"block_{i}",
            )(x, None)
        return dense(self.output_size, cfg.matmul_dtype, name="output")(x)


class LoopCritic(Critic):
    """`Critic` whose encoders are loop-of-blocks networks."""

    def setup(self) -> None:
        self.sa_encoder = LoopResidualMLP(self.config, self.repr_size)
        self.goal_encoder = LoopResidualMLP(self.config, self.repr_size)


class LoopActor(nn.Module):
    """`Actor` on a loop-of-blocks network (same head; tests check equality with `Actor`)."""

    config: NetworkConfig
    action_size: int

    @nn.compact
    def __call__(self, state: jax.Array, goal: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = LoopResidualMLP(self.config, 2 * self.action_size, name="ResidualMLP_0")(
            jnp.concatenate([state, goal], axis=-1)
        )
        mean, raw_log_std = jnp.split(out, 2, axis=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw_log_std) + 1)
        return mean, log_std


@dataclass(frozen=True)
class LoopAgent(CRLAgent):
    """`CRLAgent` with loop-of-blocks actor and critic; every method (update included) is
    inherited, so the two agents differ only in how the blocks are laid out."""

    @property
    def actor(self) -> LoopActor:
        return LoopActor(self.actor_network, self.action_size)

    @property
    def critic(self) -> LoopCritic:
        return LoopCritic(self.critic_network, self.repr_size)


def loop_params_from_scan(params: Any) -> Any:
    """Scan-network parameters → loop-network parameters: every stacked `blocks` entry
    [n, ...] becomes `block_0` … `block_{n-1}`."""
    if not isinstance(params, Mapping):
        return params
    converted = {}
    for key, value in params.items():
        if key == "blocks":
            count = jax.tree.leaves(value)[0].shape[0]
            for i in range(count):
                converted[f"block_{i}"] = jax.tree.map(lambda x, i=i: x[i], value)
        else:
            converted[key] = loop_params_from_scan(value)
    return converted


# ---- analytic FLOPs -------------------------------------------------------------------------------
def mlp_matmul_flops(rows: int, input_size: int, width: int, depth: int, output_size: int) -> int:
    """Forward matmul FLOPs (2 per multiply-add) of one ResidualMLP on `rows` inputs."""
    return 2 * rows * (input_size * width + depth * width * width + width * output_size)


def update_matmul_flops(agent: CRLAgent, batch_size: int) -> dict[str, int]:
    """Matmul FLOPs of one `CRLAgent.update` on a batch, counted analytically.

    Convention: a network that is trained costs 3× its forward (forward, input gradients, weight
    gradients); a network differentiated only with respect to its input costs 2×; a forward-only
    network 1×. Critic step: both encoders trained. Actor step on its own: actor trained, the
    critic's state-action encoder differentiated w.r.t. the sampled action, goal encoder forward
    only. In the update the actor step reuses the critic step's ψ(g), so "total" counts the
    goal encoder's forward once. The B×B energy matrix is elementwise (no matmul) and not
    counted.
    """
    critic, actor, b = agent.critic_network, agent.actor_network, batch_size
    sa = mlp_matmul_flops(b, agent.state_size + agent.action_size, critic.width, critic.depth,
                          agent.repr_size)
    goal = mlp_matmul_flops(b, agent.goal_size, critic.width, critic.depth, agent.repr_size)
    policy = mlp_matmul_flops(b, agent.state_size + agent.goal_size, actor.width, actor.depth,
                              2 * agent.action_size)
    critic_step = 3 * (sa + goal)
    actor_step = 3 * policy + 2 * sa + goal
    return {"critic_step": critic_step, "actor_step": actor_step,
            "total": critic_step + actor_step - goal}


def assumed_peak_flops(device: jax.Device, matmul_dtype: str) -> float | None:
    """Datasheet peak for known accelerators (see ASSUMED_PEAK_FLOPS); None otherwise."""
    for name, peaks in ASSUMED_PEAK_FLOPS:
        if name.lower() in device.device_kind.lower():
            return peaks[matmul_dtype]
    return None


def measured_matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    """Achieved f32 FLOP/s of one large square matmul: a measured ceiling for devices without a
    known datasheet peak (the CPU)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
    matmul = jax.jit(lambda x: x @ x).lower(a).compile()
    jax.block_until_ready(matmul(a))
    best = min(timed(lambda: matmul(a)) for _ in range(repeats))
    return 2 * size**3 / best


# ---- shared helpers -----------------------------------------------------------------------------
def timed(fn) -> float:
    """Seconds to run `fn()` and wait for its device results."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def learner_config(cfg: BenchConfig, depth: int, **changes) -> TrainConfig:
    """A small-buffer training config for learner measurements (prefill is 2 unrolls of 16
    envs, so a deep actor's prefill stays cheap); `changes` override any field."""
    base = TrainConfig(
        env=cfg.env,
        depth=depth,
        width=cfg.width,
        batch_size=cfg.batch_size,
        num_envs=16,
        unroll_length=cfg.unroll_length,
        min_replay_size=2 * cfg.unroll_length,
        replay_size=max(1000, 4 * cfg.unroll_length),
        num_sgd_batches=cfg.sgd_steps,
        num_epochs=1,
        num_eval_envs=16,
        out_dir=tempfile.gettempdir(),
    )
    config = replace(base, **changes)
    return with_iterations(config, 1)


def with_iterations(config: TrainConfig, iterations_per_epoch: int) -> TrainConfig:
    """Set total_env_steps so that each epoch is exactly `iterations_per_epoch` iterations."""
    steps = (config.prefill_unrolls + iterations_per_epoch * config.num_epochs)
    config = replace(config, total_env_steps=steps * config.env_steps_per_iteration)
    validate(config)
    return config


def make_bench_trainer(config: TrainConfig, network: NetworkKind = "scan") -> Trainer:
    """The standard trainer, or one whose agent uses the loop-of-blocks reference network."""
    env = make_env(config)
    agent = make_agent(config, env)
    if network == "loop":
        agent = LoopAgent(**{f.name: getattr(agent, f.name) for f in dataclasses.fields(agent)})
    return Trainer(config=config, env=env, agent=agent)


def abstract_batch(agent: CRLAgent, batch_size: int) -> Batch:
    """Shapes of one training batch (for lowering without data)."""
    spec = lambda size: jax.ShapeDtypeStruct((batch_size, size), jnp.float32)
    return Batch(state=spec(agent.state_size), action=spec(agent.action_size),
                 goal=spec(agent.goal_size))


def random_batch(agent: CRLAgent, batch_size: int, rng: jax.Array) -> Batch:
    """A batch of standard-normal data (memory measurements do not need real transitions)."""
    keys = jax.random.split(rng, 3)
    return Batch(
        state=jax.random.normal(keys[0], (batch_size, agent.state_size)),
        action=jax.random.uniform(keys[1], (batch_size, agent.action_size), minval=-1, maxval=1),
        goal=jax.random.normal(keys[2], (batch_size, agent.goal_size)),
    )


def peak_memory_bytes() -> int:
    """Peak device memory of this process: the allocator's peak on accelerators, peak RSS
    (resident set high-water mark) on CPU."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        return int(stats.get("peak_bytes_in_use", 0))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


# ---- subprocess workers: compile time and peak memory --------------------------------------------
def compile_task(config: dict, network: NetworkKind, program: Literal["epoch", "step"]) -> dict:
    """Trace+lower and XLA-compile one training epoch (vmapped over one seed, donated, as
    `crl train` compiles it) or one SGD step, from abstract shapes (nothing is run)."""
    trainer = make_bench_trainer(TrainConfig(**config), network)
    rng = jax.random.PRNGKey(0)
    if program == "epoch":
        keys = jax.random.split(rng, 1)
        args = (jax.eval_shape(over_seeds(trainer.init), keys),)
        fn = jax.jit(over_seeds(trainer.run_epoch), donate_argnums=0)
    else:
        agent = trainer.agent
        args = (jax.eval_shape(agent.init, rng), abstract_batch(agent, trainer.config.batch_size), rng)
        fn = jax.jit(agent.update, donate_argnums=0)
    start = time.perf_counter()
    lowered = fn.lower(*args)
    lower_seconds = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    compile_seconds = time.perf_counter() - start
    return {
        "lower_s": lower_seconds,
        "xla_compile_s": compile_seconds,
        "total_s": lower_seconds + compile_seconds,
        "hlo_chars": len(lowered.as_text()),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def memory_task(config: dict, cap_bytes: int | None, steps: int = 2) -> dict:
    """Peak memory of `steps` donated SGD steps (agent state + batch + update temporaries).
    If XLA's own plan already exceeds `cap_bytes`, stop before running."""
    baseline = peak_memory_bytes()
    trainer = make_bench_trainer(TrainConfig(**config))
    agent, batch_size = trainer.agent, trainer.config.batch_size
    rng = jax.random.PRNGKey(0)
    update = jax.jit(agent.update, donate_argnums=0)
    compiled = update.lower(
        jax.eval_shape(agent.init, rng), abstract_batch(agent, batch_size), rng
    ).compile()
    analysis = compiled.memory_analysis()
    planned = {
        "xla_argument_bytes": int(analysis.argument_size_in_bytes),
        "xla_output_bytes": int(analysis.output_size_in_bytes),
        "xla_temp_bytes": int(analysis.temp_size_in_bytes),
        "xla_alias_bytes": int(analysis.alias_size_in_bytes),
    }
    planned["xla_planned_bytes"] = (
        planned["xla_argument_bytes"] + planned["xla_output_bytes"] + planned["xla_temp_bytes"]
        - planned["xla_alias_bytes"]
    )
    if cap_bytes is not None and planned["xla_planned_bytes"] > cap_bytes:
        return {**planned, "ran": False, "baseline_bytes": baseline}
    agent_state = jax.jit(agent.init)(rng)
    batch = random_batch(agent, batch_size, jax.random.PRNGKey(1))
    start = time.perf_counter()
    for i in range(steps):
        agent_state, metrics = compiled(agent_state, batch, jax.random.PRNGKey(i))
    jax.block_until_ready(metrics)
    return {
        **planned,
        "ran": True,
        "baseline_bytes": baseline,
        "peak_bytes": peak_memory_bytes(),
        "seconds_per_step": (time.perf_counter() - start) / steps,
        "finite": bool(jnp.isfinite(metrics["critic_loss"])),
    }


WORKER_TASKS = {"compile": compile_task, "memory": memory_task}


def run_isolated(task: str, timeout_s: float, **kwargs) -> dict:
    """Run a worker task in a fresh Python process; returns its result dict, or one with
    `error` ('timeout', 'out_of_memory' or the last stderr line) if it did not finish."""
    command = [sys.executable, "-m", "experiments.bench", "--worker",
               json.dumps({"task": task, **kwargs})]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              cwd=REPO_ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "timeout", "timeout_s": timeout_s}
    wall = time.perf_counter() - start
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX):]), "process_wall_s": wall}
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    oom = done.returncode in (-9, 137) or is_out_of_memory(done.stderr)
    return {"error": "out_of_memory" if oom else tail[:300], "returncode": done.returncode}


def worker_main(payload: str) -> None:
    """Entry point of the subprocess: run one task, print its result as one JSON line."""
    kwargs = json.loads(payload)
    result = WORKER_TASKS[kwargs.pop("task")](**kwargs)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---- sections -----------------------------------------------------------------------------------
def bench_compile(cfg: BenchConfig, log) -> list[dict]:
    """Compile seconds of one epoch and one SGD step against depth, scan vs loop-of-blocks."""
    rows = []
    for depth in cfg.compile_depths:
        config = dataclasses.asdict(learner_config(cfg, depth))
        for network in ("scan", "loop"):
            if network == "loop" and depth > cfg.loop_max_depth:
                continue
            row = {"depth": depth, "network": network}
            for program in ("step", "epoch"):
                result = run_isolated("compile", cfg.compile_timeout_s, config=config,
                                      network=network, program=program)
                row[program] = result
            log(f"compile depth={depth} {network}: step {_seconds(row['step'])}, "
                f"epoch {_seconds(row['epoch'])}")
            rows.append(row)
    return rows


def measure_sgd_throughput(cfg: BenchConfig, depth: int, matmul_dtype: str = "float32") -> dict:
    """Steady-state SGD steps/s of `Trainer.learn` (replay sampling, relabelling and updates,
    `sgd_steps` per compiled call) and the matmul FLOP/s that implies."""
    config = learner_config(cfg, depth, matmul_dtype=matmul_dtype)
    trainer = make_bench_trainer(config)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    learn = jax.jit(trainer.learn, donate_argnums=0)
    start = time.perf_counter()
    learn = learn.lower(state.agent, state.replay, state.rng).compile()
    compile_seconds = time.perf_counter() - start
    agent_state = state.agent
    seconds = []
    for i in range(cfg.repeats + 1):  # the first call is a warm-up
        start = time.perf_counter()
        agent_state, metrics = learn(agent_state, state.replay, jax.random.PRNGKey(i))
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - start)
    best = min(seconds[1:])
    flops = update_matmul_flops(trainer.agent, config.batch_size)["total"]
    device = jax.devices()[0]
    achieved = flops * cfg.sgd_steps / best
    peak = assumed_peak_flops(device, matmul_dtype)
    return {
        "depth": depth,
        "matmul_dtype": matmul_dtype,
        "batch_size": config.batch_size,
        "width": config.width,
        "compile_s": compile_seconds,
        "best_call_s": best,
        "sgd_steps_per_s": cfg.sgd_steps / best,
        "matmul_flops_per_step": flops,
        "matmul_flops_per_s": achieved,
        "assumed_peak_flops": peak,
        "fraction_of_peak": None if peak is None else achieved / peak,
        "finite": bool(jnp.isfinite(metrics["critic_loss"])),
    }


def bench_throughput(cfg: BenchConfig, log) -> dict:
    reference = measured_matmul_flops()
    rows = []
    for depth in cfg.throughput_depths:
        row = measure_sgd_throughput(cfg, depth)
        row["fraction_of_measured_matmul"] = row["matmul_flops_per_s"] / reference
        log(f"throughput depth={depth}: {row['sgd_steps_per_s']:.2f} SGD steps/s")
        rows.append(row)
    return {"measured_matmul_flops_per_s": reference, "rows": rows}


def measure_env(cfg: BenchConfig, env_name: str, num_envs: int) -> dict:
    """Env-only, collection (policy + env) and end-to-end training env-steps/s for one size."""
    from experiments.env_speed import measure_env_steps_per_second

    row: dict[str, Any] = {"env": env_name, "num_envs": num_envs}
    row["env_only"] = measure_env_steps_per_second(
        env_name, num_envs, cfg.unroll_length, repeats=cfg.repeats
    )["steps_per_second"]
    config = learner_config(cfg, cfg.env_depth, env=env_name, num_envs=num_envs,
                            num_sgd_batches=cfg.e2e_num_sgd_batches)
    config = with_iterations(config, 2)
    trainer = make_bench_trainer(config)
    rng = jax.random.PRNGKey(0)
    agent_state = jax.jit(trainer.agent.init)(rng)
    env_state = jax.jit(jax.vmap(trainer.env.reset))(jax.random.split(rng, num_envs))
    collect = jax.jit(trainer.collect).lower(agent_state.actor_params, env_state, rng).compile()
    jax.block_until_ready(collect(agent_state.actor_params, env_state, rng))
    best = min(timed(lambda i=i: collect(agent_state.actor_params, env_state,
                                         jax.random.PRNGKey(i))) for i in range(cfg.repeats))
    row["collection"] = num_envs * cfg.unroll_length / best
    row["backend"] = trainer.env.backend

    keys = jax.random.split(rng, 1)
    state = jax.jit(over_seeds(trainer.init))(keys)
    run_epoch = jax.jit(over_seeds(trainer.run_epoch), donate_argnums=0).lower(state).compile()
    state, _ = run_epoch(state)  # warm-up epoch
    jax.block_until_ready(state)
    seconds = []
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        state, metrics = run_epoch(state)
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - start)
    steps = config.iterations_per_epoch * config.env_steps_per_iteration
    row["end_to_end"] = steps / min(seconds)
    row["sgd_steps_per_iteration"] = config.num_sgd_batches
    return row


def bench_env(cfg: BenchConfig, log) -> list[dict]:
    rows = []
    for name in cfg.env_names or tuple(envs.names()):
        for num_envs in cfg.num_envs:
            try:
                row = measure_env(cfg, name, num_envs)
            except Exception as error:  # noqa: BLE001 — record and continue ("as memory allows")
                if not is_out_of_memory(error):
                    raise
                row = {"env": name, "num_envs": num_envs, "error": "out_of_memory"}
            log(f"env {name} num_envs={num_envs}: {row}")
            rows.append(row)
    return rows


def bench_memory(cfg: BenchConfig, log) -> dict:
    """Peak memory against depth × batch × remat, then the largest depth that fits."""
    cap = None if cfg.memory_cap_gib is None else int(cfg.memory_cap_gib * 2**30)
    grid = []
    for depth in cfg.memory_depths:
        for batch_size in cfg.memory_batch_sizes:
            for remat in (False, True):
                config = learner_config(cfg, depth, batch_size=batch_size, remat=remat)
                result = run_isolated("memory", cfg.memory_timeout_s,
                                      config=dataclasses.asdict(config), cap_bytes=None)
                grid.append({"depth": depth, "batch_size": batch_size, "remat": remat, **result})
                log(f"memory depth={depth} batch={batch_size} remat={remat}: "
                    f"{_gib(result.get('peak_bytes'))} GiB")
    searches = []
    for remat in cfg.fit_remat:
        tried, largest, stop = [], None, "searched every depth"
        for depth in cfg.fit_depths:
            config = learner_config(cfg, depth, batch_size=cfg.fit_batch_size,
                                    width=cfg.fit_width, remat=remat)
            result = run_isolated("memory", cfg.memory_timeout_s,
                                  config=dataclasses.asdict(config), cap_bytes=cap)
            tried.append({"depth": depth, **result})
            log(f"fit search remat={remat} depth={depth}: {result}")
            if "error" in result:
                stop = f"depth {depth}: {result['error']}"
                break
            if not result["ran"]:
                stop = f"depth {depth}: XLA plans {_gib(result['xla_planned_bytes'])} GiB > cap"
                break
            if cap is not None and result["peak_bytes"] > cap:
                stop = f"depth {depth}: peak {_gib(result['peak_bytes'])} GiB > cap"
                break
            largest = depth
        searches.append({"remat": remat, "largest_depth": largest, "stopped_at": stop,
                         "tried": tried})
    return {"cap_bytes": cap, "batch_size": cfg.fit_batch_size, "width": cfg.fit_width,
            "grid": grid, "fit": searches}


def compile_seeds(trainer: Trainer, num_seeds: int):
    """Compiled (init, run_epoch) for `num_seeds` vmapped seeds, and the seconds it took."""
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(num_seeds))
    start = time.perf_counter()
    init = jax.jit(over_seeds(trainer.init)).lower(keys).compile()
    shapes = jax.eval_shape(over_seeds(trainer.init), keys)
    run_epoch = jax.jit(over_seeds(trainer.run_epoch), donate_argnums=0).lower(shapes).compile()
    return (init, run_epoch), time.perf_counter() - start


def run_seeds(programs, seeds: list[int], epochs: int) -> float:
    """Seconds for init (prefill) + `epochs` epochs of the given seeds with compiled programs."""
    init, run_epoch = programs
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
    start = time.perf_counter()
    state = init(keys)
    for _ in range(epochs):
        state, metrics = run_epoch(state)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start


def bench_seeds(cfg: BenchConfig, log) -> dict:
    """N vmapped seeds in one program vs N sequential single-seed runs of the same sizes.
    Both programs are compiled first and run once to warm up; `speedup_with_compile` charges
    one compile per sequential run (N separate processes, as N `crl train` calls would)."""
    config = learner_config(cfg, cfg.seeds_depth, num_epochs=cfg.seeds_epochs,
                            num_sgd_batches=cfg.e2e_num_sgd_batches)
    config = with_iterations(config, 2)
    trainer = make_bench_trainer(config)
    n = cfg.num_seeds
    single, single_compile = compile_seeds(trainer, 1)
    vmapped, vmapped_compile = compile_seeds(trainer, n)
    run_seeds(single, [10_000], 1)  # warm-up: first-run allocations, thread pools
    run_seeds(vmapped, list(range(10_000, 10_000 + n)), 1)
    vmapped_run = run_seeds(vmapped, list(range(n)), cfg.seeds_epochs)
    sequential_run = sum(run_seeds(single, [seed], cfg.seeds_epochs) for seed in range(n))
    result = {
        "num_seeds": n,
        "depth": cfg.seeds_depth,
        "epochs": cfg.seeds_epochs,
        "env_steps_per_seed": config.total_env_steps,
        "vmapped": {"compile_s": vmapped_compile, "run_s": vmapped_run},
        "single_compile_s": single_compile,
        "sequential_run_s": sequential_run,
        "sequential_compile_s": n * single_compile,
        "speedup_run": sequential_run / vmapped_run,
        "speedup_with_compile": (n * single_compile + sequential_run)
        / (vmapped_compile + vmapped_run),
    }
    log(f"seeds: {result}")
    return result


def bench_precision(cfg: BenchConfig, log) -> dict:
    """bf16 matmuls vs f32: learner speed at one depth, and a short training run each."""
    from crl.run import train

    speed = {dtype: measure_sgd_throughput(cfg, cfg.precision_depth, dtype)
             for dtype in ("float32", "bfloat16")}
    learning = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for dtype in ("float32", "bfloat16"):
            config = TrainConfig(env=cfg.env, depth=cfg.learning_depth, width=cfg.width,
                                 total_env_steps=cfg.learning_env_steps,
                                 num_epochs=cfg.learning_epochs, matmul_dtype=dtype,
                                 num_envs=cfg.learning_num_envs,
                                 min_replay_size=cfg.learning_min_replay_size,
                                 num_eval_envs=cfg.learning_num_envs,
                                 out_dir=out_dir, run_name=dtype)
            summary = train(config, quiet=True)
            learning[dtype] = {k: summary[k] for k in (
                "time_at_goal", "success", "final_distance", "random_time_at_goal",
                "episode_length", "train_seconds", "env_steps")}
            log(f"precision learning {dtype}: {learning[dtype]}")
    result = {
        "speed": speed,
        "speedup": speed["bfloat16"]["sgd_steps_per_s"] / speed["float32"]["sgd_steps_per_s"],
        "learning": learning,
    }
    return result


SECTION_FUNCTIONS = {
    "compile": bench_compile,
    "throughput": bench_throughput,
    "env": bench_env,
    "memory": bench_memory,
    "seeds": bench_seeds,
    "precision": bench_precision,
}


# ---- report -------------------------------------------------------------------------------------
def _seconds(result: dict | None) -> str:
    if result is None:
        return "—"
    if "error" in result:
        return f">{result['timeout_s']:.0f} (timeout)" if result["error"] == "timeout" else result["error"]
    return f"{result['total_s']:.2f}"


def _gib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**30:.2f}"


def _num(value: float | None, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def machine_info() -> dict:
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "load_average_start": os.getloadavg(),
    }


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, columns, rows) for every section present in `results`."""
    out = []
    sections = results["sections"]
    if "compile" in sections:
        rows_by = {(r["depth"], r["network"]): r for r in sections["compile"]}
        body = []
        for depth in sorted({r["depth"] for r in sections["compile"]}):
            scan, loop = rows_by.get((depth, "scan")), rows_by.get((depth, "loop"))
            ratio = lambda p: (
                f"{loop[p]['total_s'] / scan[p]['total_s']:.1f}×"
                if loop and "total_s" in loop[p] and "total_s" in scan[p] else "—")
            body.append([str(depth), _seconds(scan and scan["step"]), _seconds(loop and loop["step"]),
                         ratio("step"), _seconds(scan and scan["epoch"]),
                         _seconds(loop and loop["epoch"]), ratio("epoch")])
        out.append(("Compile time (s, trace+lower+XLA compile, fresh process each)",
                    ["depth", "step scan", "step loop", "loop/scan", "epoch scan", "epoch loop",
                     "loop/scan"], body))
    if "throughput" in sections:
        t = sections["throughput"]
        body = [[str(r["depth"]), f"{r['sgd_steps_per_s']:.2f}", _num(r["matmul_flops_per_step"]),
                 _num(r["matmul_flops_per_s"]), _num(r["fraction_of_measured_matmul"], ".1%"),
                 _num(r["fraction_of_peak"], ".1%")] for r in t["rows"]]
        out.append((f"Learner throughput (batch {t['rows'][0]['batch_size']}, width "
                    f"{t['rows'][0]['width']}; measured f32 matmul ceiling "
                    f"{t['measured_matmul_flops_per_s']:.3g} FLOP/s; assumed peak "
                    f"{_num(t['rows'][0]['assumed_peak_flops'])})",
                    ["depth", "SGD steps/s", "matmul FLOP/step", "FLOP/s", "of matmul ceiling",
                     "of peak"], body))
    if "env" in sections:
        body = [[r["env"], str(r["num_envs"]), _num(r.get("env_only")), _num(r.get("collection")),
                 _num(r.get("end_to_end")), r.get("error", "")] for r in sections["env"]]
        out.append(("Env steps/s (env only, collection with policy, end-to-end training)",
                    ["env", "num_envs", "env only", "collection", "end-to-end", "note"], body))
    if "memory" in sections:
        m = sections["memory"]
        body = [[str(r["depth"]), str(r["batch_size"]), str(r["remat"]), _gib(r.get("peak_bytes")),
                 _gib(r.get("baseline_bytes")), _gib(r.get("xla_planned_bytes")),
                 _gib(r.get("xla_temp_bytes")), r.get("error", "")] for r in m["grid"]]
        out.append(("Peak memory of SGD steps (GiB; CPU: process peak RSS incl. baseline)",
                    ["depth", "batch", "remat", "peak", "baseline", "XLA planned", "XLA temp",
                     "note"], body))
        body = [[str(s["remat"]), str(s["largest_depth"]), s["stopped_at"]] for s in m["fit"]]
        out.append((f"Largest depth that fits (batch {m['batch_size']}, width {m['width']}, cap "
                    f"{_gib(m['cap_bytes'])} GiB)", ["remat", "largest depth", "stopped at"], body))
    if "seeds" in sections:
        s = sections["seeds"]
        out.append((f"{s['num_seeds']} seeds: vmapped vs sequential (depth {s['depth']})",
                    ["", "compile s", "run s", "speed-up"],
                    [["vmapped", f"{s['vmapped']['compile_s']:.2f}", f"{s['vmapped']['run_s']:.2f}", ""],
                     ["sequential (N × compile)", f"{s['sequential_compile_s']:.2f}", f"{s['sequential_run_s']:.2f}",
                      f"{s['speedup_run']:.2f}× run, {s['speedup_with_compile']:.2f}× incl. compile"]]))
    if "precision" in sections:
        p = sections["precision"]
        body = [[dtype, f"{p['speed'][dtype]['sgd_steps_per_s']:.2f}",
                 f"{p['learning'][dtype]['time_at_goal']:.1f}",
                 f"{p['learning'][dtype]['success']:.2f}",
                 f"{p['learning'][dtype]['random_time_at_goal']:.1f}"] for dtype in p["speed"]]
        out.append((f"Mixed precision (speed at depth {p['speed']['float32']['depth']}: "
                    f"bf16/f32 = {p['speedup']:.2f}×)",
                    ["matmul dtype", "SGD steps/s", "time at goal", "success", "random policy"],
                    body))
    return out


def to_markdown(results: dict) -> str:
    lines = []
    for title, columns, rows in tables(results):
        lines += [f"### {title}", "", "| " + " | ".join(columns) + " |",
                  "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def run(cfg: BenchConfig, preset: str = "cpu", command: str = "", console=None) -> dict:
    """Run the selected sections; write and return the results dict."""
    from rich.console import Console
    from rich.table import Table

    check_bench_config(cfg)
    console = console or Console()
    log = lambda message: console.log(message)
    results: dict[str, Any] = {
        "command": command,
        "preset": preset,
        "config": dataclasses.asdict(cfg),
        "machine": machine_info(),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "section_seconds": {},
        "sections": {},
    }
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for section in cfg.sections:
        start = time.perf_counter()
        results["sections"][section] = SECTION_FUNCTIONS[section](cfg, log)
        results["section_seconds"][section] = time.perf_counter() - start
        out.write_text(json.dumps(results, indent=1))  # keep partial results if a later one dies
    results["machine"]["load_average_end"] = os.getloadavg()
    out.write_text(json.dumps(results, indent=1))
    for title, columns, rows in tables(results):
        table = Table(title=title)
        for column in columns:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    if cfg.markdown:
        Path(cfg.markdown).write_text(to_markdown(results))
    console.print(f"results written to {out}")
    return results


def main(argv: list[str] | None = None) -> None:
    """`python -m experiments.bench ...` is `crl bench ...`; `--worker JSON` is the entry of the
    subprocesses the compile and memory sections start."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        worker_main(argv[1])
        return
    from crl.cli import main as cli_main

    cli_main(["bench", *argv])


if __name__ == "__main__":
    main()
