"""Drive a training run from Python: validate, compile, then one compiled call per epoch with
evaluation, logging and a progress bar in between."""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.compilation_cache import compilation_cache
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from crl import audit, checkpoint, diagnostics, distributed, guard, host_memory, scores, tracking
from crl import run_dir as run_dir_lib
from crl.config import ConfigError, TrainConfig, validate
from crl.train import Trainer, make_trainer, over_seeds


def train(
    config: TrainConfig | None,
    console: Console | None = None,
    quiet: bool = False,
    resume: str | Path | None = None,
) -> dict[str, Any]:
    """Train with `config`, writing a run directory; returns the summary dict
    (also written to summary.json). Invalid configs raise ConfigError before any compile.

    `resume`: a run directory to continue from its newest valid checkpoint (config None = the
    run's own; a given config may differ only in checkpoint.RESUMABLE_CHANGES). Metrics rows
    after that checkpoint are recomputed, not duplicated. Non-finite losses, gradients or
    parameters stop the run with guard.NonFiniteError before that epoch is checkpointed."""
    console = console or Console()
    # What was being written when, for a one-line StorageError instead of orbax's tracebacks.
    activity = {"doing": "preparing the run directory", "run_dir": resume}
    try:
        return _train(config, console, quiet, resume, activity)
    except Exception as error:
        cause = checkpoint.storage_cause(error)
        if cause is None or isinstance(error, (ConfigError, checkpoint.StorageError)):
            raise
        run_dir = activity["run_dir"]
        where, hint = "", "nothing was written yet"
        if run_dir is not None:
            where = f" in {run_dir}"
            saved = [step for step, _ in checkpoint.checkpoint_metas(run_dir)]
            hint = (
                f"last good checkpoint: after epoch {saved[0] - 1} (free space, then resume "
                f"with: crl train --resume {run_dir})" if saved
                else f"no checkpoint was saved; free space, delete {run_dir} and start again"
            )
        raise checkpoint.StorageError(
            f"{cause[0]} while {activity['doing']}{where} ({cause[1]}); {hint}"
        ) from None


def use_compilation_cache(directory: str | None, console: Console, quiet: bool) -> None:
    """Point JAX's persistent compilation cache at `directory`, so that programs compiled by an
    earlier run with the same shapes load from disk. None leaves JAX's own setting, and so does
    the default where JAX_COMPILATION_CACHE_DIR is set (a given directory beats the environment,
    which beats the default); an unwritable directory only costs the cache, not the run."""
    default = TrainConfig.__dataclass_fields__["compilation_cache_dir"].default
    if directory is None or (
        directory == default and os.environ.get("JAX_COMPILATION_CACHE_DIR")
    ):
        return
    path = Path(directory).expanduser()
    if jax.config.jax_compilation_cache_dir == str(path):
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if not quiet:
            console.print(f"[yellow]compilation cache off ({path}: {error.strerror})[/]")
        return
    jax.config.update("jax_compilation_cache_dir", str(path))
    # JAX decides once per process whether the cache is in use; make it look again.
    compilation_cache.reset_cache()


def _train(
    config: TrainConfig | None, console: Console, quiet: bool, resume: str | Path | None,
    activity: dict[str, Any],
) -> dict[str, Any]:
    run_start = time.perf_counter()
    first_metrics_seconds = None
    if resume is not None:
        config = checkpoint.resume_config(resume, config)
    validate(config)
    use_compilation_cache(config.compilation_cache_dir, console, quiet)
    mesh = distributed.make_mesh(config.num_devices)
    trainer = make_trainer(config, mesh)
    env = trainer.env
    resolved = {
        "eval_env": trainer.evaluation_env.name,
        "episode_length": env.episode_length,
        "state_size": env.state_size,
        "goal_size": env.goal_size,
        "action_size": env.action_size,
        "goal_radius": env.goal_radius,
        "backend": env.backend,
        "iterations_per_epoch": config.iterations_per_epoch,
        "env_steps_per_epoch": config.iterations_per_epoch * config.env_steps_per_iteration,
        "devices": [str(d) for d in mesh.devices.flat],
    }
    if resume is not None:
        run_dir = Path(resume)
        if distributed.is_primary() and not os.access(run_dir, os.W_OK):
            raise checkpoint.StorageError(f"out dir not writable: {run_dir}")
    elif distributed.is_primary():
        run_dir = run_dir_lib.create(config, resolved)
    else:
        run_dir = Path(config.out_dir) / config.run_name  # set in multi-process jobs (validate)
    activity["run_dir"] = run_dir
    if not quiet:
        console.print(f"[bold]crl[/] run directory: {run_dir}")

    # One key per seed; every compiled function takes this leading seed axis (over_seeds: a vmap
    # for several seeds, a direct call for one), so a single run has the same state layout.
    seeds = jnp.arange(config.seed, config.seed + config.num_seeds)
    keys = jax.vmap(lambda s: jax.random.split(jax.random.PRNGKey(s), 3))(seeds)
    keys = jax.device_put(keys, distributed.replicated(mesh))
    init_rngs, eval_rngs, baseline_rngs = keys[:, 0], keys[:, 1], keys[:, 2]

    # Envs and replay split along num_envs across the mesh, everything else replicated.
    # One function object for both: jit reuses the trace eval_shape made (seconds on brax).
    init_seeds = over_seeds(trainer.init)
    abstract_state = jax.eval_shape(init_seeds, init_rngs)
    shardings = distributed.train_state_sharding(abstract_state, mesh)
    init = jax.jit(init_seeds, **distributed.jit_shardings(mesh, out_shardings=shardings))
    start_epoch, rows, wall_offset, random_time_at_goal = 0, [], 0.0, None
    # The epoch and evaluation programs compile in background threads (XLA compiles without the
    # GIL) while init compiles and prefills: the three compiles overlap instead of queueing.
    # Without overlap they compile one after the other before init, for the lowest peak memory.
    overlap = config.overlap_compiles
    compiler = ThreadPoolExecutor(max_workers=2 if overlap else 1, thread_name_prefix="crl-compile")
    epoch_program = compiler.submit(
        timed, compile_epoch, trainer, mesh, abstract_state, shardings
    )
    eval_program = compiler.submit(compile_evaluation, trainer, mesh, abstract_state, eval_rngs)
    compiler.shutdown(wait=not overlap)
    start = time.perf_counter()
    if resume is not None:
        template = jax.tree.map(
            lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
            abstract_state, shardings,
        )
        with checkpoint.Checkpointer(run_dir, config.keep_checkpoints) as restorer:
            fields, meta = restorer.restore_latest(template)
        if "replay" not in fields:  # saved without replay: restart it from a fresh prefill
            fields["replay"] = init(init_rngs).replay
        state = abstract_state.replace(**fields)
        start_epoch, wall_offset = meta["epoch"], meta["wall_time"]
        random_time_at_goal = meta["random_time_at_goal"]
        rows = checkpoint.rewind_metrics(run_dir, start_epoch, meta.get("metrics"))
        if distributed.is_primary():
            checkpoint.repair_config_file(run_dir, config, resolved)
        if not quiet:
            console.print(
                f"resumed after {start_epoch} completed epochs from {restorer.directory}"
            )
    else:
        state = init(init_rngs)
    jax.block_until_ready(state)
    host_memory.release_freed()  # init's compile and prefill
    init_seconds = time.perf_counter() - start
    diagnose = diagnostics.make_hook(trainer, state, seeds, start_epoch)  # before donation
    auditor = audit.Auditor(config, [int(s) for s in seeds])
    auditor.resume_from(rows)

    run_epoch, compile_seconds = epoch_program.result()
    # One program for the random baseline and every epoch's evaluation.
    evaluate_either = eval_program.result()
    on_mesh = distributed.replicated(mesh)

    def evaluate(actor_params, rngs, random_policy: bool = False):
        rngs = jax.device_put(rngs, on_mesh)
        return per_seed(evaluate_either(actor_params, rngs, jnp.asarray(random_policy)))

    if not quiet:
        console.print(
            f"compiled one epoch in {compile_seconds:.1f}s (alongside prefill + init "
            f"{init_seconds:.1f}s)"
        )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[sps]:>9,.0f} env-steps/s"),
        TextColumn("time at goal {task.fields[tag]:6.1f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    )
    loggers = tracking.start(
        config, run_dir, resolved, seeds.tolist(), rows, primary=distributed.is_primary()
    )
    checkpointer = checkpoint.Checkpointer(run_dir, config.keep_checkpoints)
    train_start = time.perf_counter() - wall_offset
    last_saved = None
    evaluated = [r[scores.METRIC] for r in rows[-config.num_seeds:] if scores.METRIC in r]
    last_time_at_goal = float(np.mean(evaluated)) if evaluated else 0.0  # for the progress bar
    with progress, checkpointer, loggers:
        task = progress.add_task(
            "epochs", total=config.num_epochs, completed=start_epoch, sps=0.0, tag=0.0
        )
        for epoch in range(start_epoch, config.num_epochs):
            activity["doing"] = f"training epoch {epoch}"
            epoch_start = time.perf_counter()
            steps_before = int(state.env_steps[0])
            state, train_metrics = run_epoch(state)
            train_metrics = per_seed(train_metrics)  # waits for the epoch: timed apart from eval
            train_elapsed = time.perf_counter() - epoch_start
            if scores.is_eval_epoch(epoch, config.eval_every, config.num_epochs):
                epoch_rngs = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_rngs, epoch)
                eval_metrics = evaluate(state.agent.actor_params, epoch_rngs)
                last_time_at_goal = float(np.mean([m["time_at_goal"] for m in eval_metrics]))
            else:
                eval_metrics = [{} for _ in seeds]
            elapsed = time.perf_counter() - epoch_start
            steps = int(state.env_steps[0])
            trained = config.num_seeds * (steps - steps_before)
            epoch_rows = [
                {
                    "epoch": epoch,
                    "seed": int(seed),
                    "env_steps": steps,
                    "wall_time": time.perf_counter() - train_start,
                    # Steady training throughput (all seeds); evaluation counted separately.
                    "env_steps_per_second": trained / train_elapsed,
                    "env_steps_per_second_with_eval": trained / elapsed,
                    "eval_seconds": elapsed - train_elapsed,
                    **{f"train/{k}": v for k, v in train_m.items()},
                    **{f"eval/{k}": v for k, v in eval_m.items()},
                    **diag_m,
                }
                for seed, train_m, eval_m, diag_m in zip(
                    seeds, train_metrics, eval_metrics,
                    auditor.review(epoch, diagnose(epoch, state), console),
                )
            ]
            activity["doing"] = f"writing the metrics of epoch {epoch}"
            loggers.log_epoch(epoch_rows)
            rows.extend(epoch_rows)
            if first_metrics_seconds is None:
                first_metrics_seconds = time.perf_counter() - run_start
            if random_time_at_goal is None:  # after the first metrics: it only feeds the summary
                # The actions are uniform: the actor's parameters are not used.
                random_eval = evaluate(state.agent.actor_params, baseline_rngs, random_policy=True)
                random_time_at_goal = float(np.mean([m["time_at_goal"] for m in random_eval]))
                if not quiet:
                    console.print(
                        f"random policy time at goal {random_time_at_goal:.1f}/"
                        f"{env.episode_length} (the baseline)"
                    )
            guard.check_epoch(
                epoch, epoch_rows, checkpointer.last_good(run_dir), config.divergence_threshold
            )
            done = epoch + 1
            if config.checkpoint_every and (
                done % config.checkpoint_every == 0 or done == config.num_epochs
            ):
                meta = {
                    "config": dataclasses.asdict(config),
                    "resolved": resolved,
                    "wall_time": epoch_rows[0]["wall_time"],
                    "random_time_at_goal": random_time_at_goal,
                    # The rows so far: metrics.jsonl is rebuilt from them if it is damaged.
                    "metrics": list(rows),
                }
                if last_saved is not None:  # orbax reports a failed background write late
                    activity["doing"] = f"saving checkpoint {last_saved}"
                    checkpointer.wait()
                activity["doing"] = f"saving checkpoint {done}"
                checkpointer.save(done, state, meta, config.checkpoint_replay)
                last_saved = done
            progress.update(
                task,
                advance=1,
                sps=epoch_rows[0]["env_steps_per_second"],
                tag=last_time_at_goal,
            )

    if not rows:
        raise checkpoint.CheckpointError(
            f"{run_dir}: no metrics rows to summarise (metrics.jsonl is missing and the "
            f"checkpoint predates recorded rows)"
        )
    final_rows = rows[-config.num_seeds :]
    # The score: per seed, the mean of the last score_window evaluations (crl.scores).
    final_tag = scores.scores_per_seed(rows, [int(s) for s in seeds], config.score_window)
    wall = final_rows[0]["wall_time"]
    summary = {
        "run_dir": str(run_dir),
        "env": config.env,
        "depth": config.depth,
        "seeds": [int(s) for s in seeds],
        "env_steps": final_rows[0]["env_steps"],
        "compile_seconds": compile_seconds,
        "init_seconds": init_seconds,
        # From the call (or resume) to the first epoch's metrics: setup, compiles, one epoch.
        "first_metrics_seconds": first_metrics_seconds,
        "train_seconds": wall,
        # Training env-steps (prefill excluded) over the epochs' training time; the second
        # figure adds evaluation time. Compile and prefill are reported above, not mixed in.
        **steady_throughput(rows, config),
        "eval_env": trainer.evaluation_env.name,
        "score_window": config.score_window,
        "time_at_goal": float(np.mean(final_tag)),
        "time_at_goal_per_seed": final_tag,
        "last_eval_time_at_goal": float(np.mean([r["eval/time_at_goal"] for r in final_rows])),
        "success": float(np.mean([r["eval/success"] for r in final_rows])),
        "final_distance": float(np.mean([r["eval/final_distance"] for r in final_rows])),
        "random_time_at_goal": random_time_at_goal,
        "episode_length": env.episode_length,
        # Of this process (a resume counts from the resume), compiles included.
        "peak_host_memory_gib": host_memory.peak_resident_gib(),
        "peak_device_memory_gib": host_memory.peak_device_gib(mesh.devices.flat),
        audit.WARNINGS_KEY: auditor.lines,
    }
    activity["doing"] = "writing summary.json"
    loggers.finish(summary)
    if not quiet:
        console.print(summary_table(summary))
    return summary


# Per-epoch columns that measure time, not what the run computed (they differ between a run
# and its exact resume).
TIMING_COLUMNS = (
    "wall_time", "env_steps_per_second", "env_steps_per_second_with_eval", "eval_seconds"
)


def steady_throughput(rows: list[dict], config: TrainConfig) -> dict[str, float]:
    """Summary throughput from the per-epoch rows (one row per seed per epoch): training
    env-steps/s without and with evaluation, prefill and compile excluded."""
    epochs = rows[:: config.num_seeds]
    trained = config.num_seeds * config.iterations_per_epoch * config.env_steps_per_iteration
    train_seconds = sum(trained / r["env_steps_per_second"] for r in epochs)
    eval_seconds = sum(r.get("eval_seconds", 0.0) for r in epochs)
    return {
        "env_steps_per_second": trained * len(epochs) / train_seconds,
        "env_steps_per_second_with_eval": trained * len(epochs) / (train_seconds + eval_seconds),
        "eval_seconds": eval_seconds,
    }


def timed(fn, *args) -> tuple[Any, float]:
    """(fn(*args), seconds it took)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def compile_epoch(trainer: Trainer, mesh, abstract_state, shardings):
    """The seed-vmapped epoch program, compiled from shapes alone; the state is donated."""
    program = jax.jit(
        over_seeds(trainer.run_epoch),
        donate_argnums=0,
        **distributed.jit_shardings(
            mesh, in_shardings=(shardings,), out_shardings=(shardings, distributed.replicated(mesh))
        ),
    ).lower(abstract_state).compile()
    host_memory.release_freed()
    return program


def compile_evaluation(trainer: Trainer, mesh, abstract_state, rngs: jax.Array):
    """One seed-vmapped evaluation program for the policy and the random baseline (a traced
    flag picks), compiled from shapes alone: (actor_params, rngs, random_policy) → metrics."""
    on_mesh = distributed.replicated(mesh)
    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    program = jax.jit(
        over_seeds(trainer.evaluate, in_axes=(0, 0, None)),
        **distributed.jit_shardings(mesh, in_shardings=(on_mesh, on_mesh, on_mesh),
                                    out_shardings=on_mesh),
    ).lower(abstract_state.agent.actor_params, rngs, flag).compile()
    host_memory.release_freed()
    return program


def per_seed(metrics: dict[str, jax.Array]) -> list[dict[str, float]]:
    """{name: [num_seeds]} on device → one {name: float} dict per seed."""
    host = jax.device_get(metrics)
    num_seeds = len(next(iter(host.values())))
    return [{k: float(v[i]) for k, v in host.items()} for i in range(num_seeds)]


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="crl run summary", show_header=False)
    for key, value in summary.items():
        if key == audit.WARNINGS_KEY:  # printed as they came; the table gives the count
            value = len(value)
        if isinstance(value, list):
            value = ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    return table
