"""Drive a training run from Python: validate, compile, then one compiled call per epoch with
evaluation, logging and a progress bar in between."""

from __future__ import annotations

import time
from typing import Any

import jax
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

from crl import run_dir as run_dir_lib
from crl.config import TrainConfig, validate
from crl.train import make_trainer, to_python


def train(config: TrainConfig, console: Console | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train with `config`, writing a run directory; returns the summary dict
    (also written to summary.json). Invalid configs raise ConfigError before any compile."""
    console = console or Console()
    validate(config)
    trainer = make_trainer(config)
    env = trainer.env
    resolved = {
        "episode_length": env.episode_length,
        "state_size": env.state_size,
        "goal_size": env.goal_size,
        "action_size": env.action_size,
        "goal_radius": env.goal_radius,
        "backend": env.backend,
        "iterations_per_epoch": config.iterations_per_epoch,
        "env_steps_per_epoch": config.iterations_per_epoch * config.env_steps_per_iteration,
        "devices": [str(d) for d in jax.devices()],
    }
    run_dir = run_dir_lib.create(config, resolved)
    if not quiet:
        console.print(f"[bold]crl[/] run directory: {run_dir}")

    init_rng, eval_rng, baseline_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    start = time.perf_counter()
    state = jax.jit(trainer.init)(init_rng)
    jax.block_until_ready(state)
    init_seconds = time.perf_counter() - start

    start = time.perf_counter()
    run_epoch = jax.jit(trainer.run_epoch, donate_argnums=0).lower(state).compile()
    compile_seconds = time.perf_counter() - start
    evaluate = jax.jit(trainer.evaluate, static_argnames="random_policy")
    random_eval = to_python(
        evaluate(state.agent.actor_params, baseline_rng, random_policy=True)
    )
    if not quiet:
        console.print(
            f"compiled one epoch in {compile_seconds:.1f}s; prefill + init {init_seconds:.1f}s; "
            f"random policy time at goal {random_eval['time_at_goal']:.1f}/{env.episode_length}"
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
    rows = []
    train_start = time.perf_counter()
    with progress:
        task = progress.add_task("epochs", total=config.num_epochs, sps=0.0, tag=0.0)
        for epoch in range(config.num_epochs):
            epoch_start = time.perf_counter()
            steps_before = int(state.env_steps)
            state, train_metrics = run_epoch(state)
            eval_metrics = to_python(
                evaluate(state.agent.actor_params, jax.random.fold_in(eval_rng, epoch))
            )
            train_metrics = to_python(train_metrics)
            elapsed = time.perf_counter() - epoch_start
            steps = int(state.env_steps)
            row = {
                "epoch": epoch,
                "env_steps": steps,
                "wall_time": time.perf_counter() - train_start,
                "env_steps_per_second": (steps - steps_before) / elapsed,
                **{f"train/{k}": v for k, v in train_metrics.items()},
                **{f"eval/{k}": v for k, v in eval_metrics.items()},
            }
            run_dir_lib.append_metrics(run_dir, row)
            rows.append(row)
            progress.update(
                task, advance=1, sps=row["env_steps_per_second"], tag=eval_metrics["time_at_goal"]
            )

    final = rows[-1]
    summary = {
        "run_dir": str(run_dir),
        "env": config.env,
        "depth": config.depth,
        "seed": config.seed,
        "env_steps": final["env_steps"],
        "compile_seconds": compile_seconds,
        "train_seconds": final["wall_time"],
        "env_steps_per_second": final["env_steps"] / (final["wall_time"] + init_seconds),
        "time_at_goal": final["eval/time_at_goal"],
        "success": final["eval/success"],
        "final_distance": final["eval/final_distance"],
        "random_time_at_goal": random_eval["time_at_goal"],
        "random_success": random_eval["success"],
        "episode_length": env.episode_length,
    }
    run_dir_lib.write_summary(run_dir, summary)
    if not quiet:
        console.print(summary_table(summary))
    return summary


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="crl run summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    return table
