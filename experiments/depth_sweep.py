"""Depth sweeps: a grid of training runs (depth × width × batch size, or actor depth × critic
depth), each trained with `crl.run.train` with its seeds vmapped in one program, collected into one
tidy table with a row per (config, seed, epoch).

    crl sweep --sweep-dir runs/sweeps/point_big --env point_big --width 64 \
        --depths 4 8 16 32 --num-seeds 3 --total-env-steps 600000

Layout of a sweep directory:
    runs/<grid point name>/   one `crl train` run directory per grid point (all its seeds)
    results.csv               the tidy table, rebuilt from the run directories after every run

Rerunning the same command resumes: grid points whose run directory has a summary.json (and the
same config) are skipped; a run directory left without a summary by an interrupted run is deleted
and that point is trained again. To spread a sweep over several devices or hosts, start one
process per device with `--shard-index i --num-shards n` (process i trains grid points
i, i+n, i+2n, ...) on a shared sweep directory, e.g. `CUDA_VISIBLE_DEVICES=i crl sweep ...
--shard-index i --num-shards n`, or the SLURM array job `experiments/slurm_sweep.sh`; then
`crl sweep --sweep-dir DIR --summarize-only` rebuilds the table and prints the summary.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from crl import run_dir as run_dir_lib
from crl.config import ConfigError, TrainConfig, validate
from crl.networks import check_depth
from crl.scores import SCORE_WINDOW

RUNS_SUBDIR = "runs"
RESULTS_FILE = "results.csv"
VIDEOS_SUBDIR = "videos"

# Columns every tidy table has (sweeps, ablations and collector/learner runs), in this order;
# train/* and further eval/* metric columns follow.
KEY_COLUMNS = [
    "sweep", "run", "variant", "role", "env", "depth", "actor_depth", "critic_depth", "width",
    "batch_size", "residual", "layer_norm", "activation", "num_params", "seed", "epoch",
    "env_steps", "wall_time", "eval/time_at_goal", "eval/success", "eval/final_distance",
]

_NAME_ABBREVIATIONS = {
    "depth": "d", "actor_depth": "ad", "critic_depth": "cd", "width": "w", "batch_size": "b",
    "residual": "res", "layer_norm": "ln", "activation": "", "num_sgd_batches": "sgd",
    "isotropy_weight": "iso", "multi_skip": "ms", "churn_weight": "chain",
}


@dataclass(frozen=True)
class GridPoint:
    """One configuration of a sweep: TrainConfig field overrides and the variant it belongs to
    (ablations group points by variant, e.g. "full" vs "no_layer_norm")."""

    overrides: dict[str, Any]
    variant: str = "base"

    @property
    def name(self) -> str:
        """Run directory name, unique within a sweep: variant plus the overridden values."""
        parts = [self.variant]
        for key, value in self.overrides.items():
            if isinstance(value, bool):
                value = int(value)
            parts.append(f"{_NAME_ABBREVIATIONS.get(key, key)}{value}")
        return "_".join(parts)


def depth_grid(
    depths: tuple[int, ...] = (4, 8, 16, 32, 64),
    widths: tuple[int, ...] | None = None,
    batch_sizes: tuple[int, ...] | None = None,
    actor_depths: tuple[int, ...] | None = None,
    critic_depths: tuple[int, ...] | None = None,
    variant: str = "base",
) -> list[GridPoint]:
    """The cross product of the given axes. With actor_depths or critic_depths the depth axis is
    actor depth × critic depth (a missing one of the two takes `depths`); otherwise it is `depths`
    for both networks. None for widths / batch_sizes keeps the base config's value."""
    if actor_depths is not None or critic_depths is not None:
        depth_axis = [
            {"actor_depth": a, "critic_depth": c}
            for a, c in itertools.product(actor_depths or depths, critic_depths or depths)
        ]
    else:
        depth_axis = [{"depth": d} for d in depths]
    width_axis = [{"width": w} for w in widths] if widths else [{}]
    batch_axis = [{"batch_size": b} for b in batch_sizes] if batch_sizes else [{}]
    return [
        GridPoint({**d, **w, **b}, variant)
        for d, w, b in itertools.product(depth_axis, width_axis, batch_axis)
    ]


def point_config(base: TrainConfig, point: GridPoint, sweep_dir: str | Path) -> TrainConfig:
    """The TrainConfig of one grid point, writing into the sweep's runs/ directory (W&B runs
    are grouped by sweep unless a group is given)."""
    return dataclasses.replace(
        base, **point.overrides, out_dir=str(Path(sweep_dir) / RUNS_SUBDIR), run_name=point.name,
        wandb_group=base.wandb_group or Path(sweep_dir).name,
    )


def shard(points: list[GridPoint], shard_index: int, num_shards: int) -> list[GridPoint]:
    """Grid points of one shard: index shard_index, shard_index + num_shards, ..."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(
            f"shard_index must be in [0, num_shards) and num_shards >= 1, got "
            f"shard_index={shard_index}, num_shards={num_shards}"
        )
    return points[shard_index::num_shards]


def _comparable(config: TrainConfig | dict) -> dict:
    """A config as plain JSON values, the form config.json stores."""
    as_dict = dataclasses.asdict(config) if isinstance(config, TrainConfig) else config
    return json.loads(json.dumps(as_dict))


def run_status(config: TrainConfig) -> str:
    """"done" (summary written, same config), "partial" (started, no summary) or "new".
    Raises ConfigError if a finished run in that directory was trained with another config."""
    run_dir = Path(config.out_dir) / config.run_name
    if not run_dir.exists():
        return "new"
    if not (run_dir / run_dir_lib.SUMMARY_FILE).exists():
        return "partial"
    saved = run_dir_lib.load_config(run_dir)["config"]
    wanted = _comparable(config)
    # Fields added to TrainConfig after the run was trained are not compared, nor those that
    # do not change what a run computes (where it logs, how it checkpoints).
    from crl.checkpoint import RESUMABLE_CHANGES

    changed = sorted(
        k for k in wanted
        if k in saved and saved[k] != wanted[k] and k not in RESUMABLE_CHANGES
    )
    if changed:
        raise ConfigError(
            f"sweep_dir: {run_dir} was trained with a different config ({', '.join(changed)} "
            f"differ); use a new sweep directory"
        )
    return "done"


def run_sweep(
    base: TrainConfig,
    points: list[GridPoint],
    sweep_dir: str | Path,
    shard_index: int = 0,
    num_shards: int = 1,
    console: Console | None = None,
    quiet: bool = False,
    render_final: bool = False,
) -> pd.DataFrame:
    """Train every grid point of this shard that is not finished yet (sequentially, each with
    `base.num_seeds` vmapped seeds via `crl.run.train`), rebuilding the tidy table after each;
    with `render_final`, film each point's final policy (first seed) into SWEEP_DIR/videos/.
    All configs are validated before anything is compiled. Returns the table of the whole sweep
    directory (all shards' finished runs)."""
    from crl.run import train  # imports jax; keep `crl sweep --help` fast

    console = console or Console()
    names = [p.name for p in points]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"grid: duplicate grid points {', '.join(duplicates)}")
    mine = shard(points, shard_index, num_shards)
    configs = [point_config(base, p, sweep_dir) for p in mine]
    for config in configs:
        validate(config)
    if render_final and base.checkpoint_every == 0:
        raise ConfigError("render_final: needs checkpoints to film (checkpoint_every >= 1)")
    statuses = [run_status(config) for config in configs]
    todo = [c for c, s in zip(configs, statuses) if s != "done"]
    if not quiet:
        console.print(
            f"[bold]sweep[/] {sweep_dir}: {len(points)} grid points, shard {shard_index}/"
            f"{num_shards} has {len(mine)}, {len(mine) - len(todo)} already done"
        )
    for i, (config, status) in enumerate(zip(configs, statuses)):
        if status == "done":
            continue
        run_dir = Path(config.out_dir) / config.run_name
        if status == "partial":
            shutil.rmtree(run_dir)  # an interrupted run; metrics.jsonl would block a restart
        if not quiet:
            console.rule(f"[bold]{config.run_name}[/] ({i + 1}/{len(configs)} in this shard)")
        train(config, console=console, quiet=quiet)
        write_table(sweep_dir)
    if render_final:
        for config in configs:
            video = film_final(config, sweep_dir)
            if not quiet and video is not None:
                console.print(f"filmed {config.run_name}: {video}")
    return write_table(sweep_dir)


def film_final(config: TrainConfig, sweep_dir: str | Path) -> Path | None:
    """Film the final policy (first seed, newest checkpoint) of a finished grid point as
    SWEEP_DIR/videos/<grid point>.gif (plus brax's .html viewer for brax envs); None if that
    video already exists."""
    from crl.policy import film

    video = Path(sweep_dir) / VIDEOS_SUBDIR / f"{config.run_name}.gif"
    if video.exists():
        return None
    film(Path(config.out_dir) / config.run_name, video)
    return video


# ---- the tidy table ----------------------------------------------------------------------------
def count_parameters(config: TrainConfig) -> int:
    """Actor plus critic parameters of `config`'s agent (shapes only, nothing is computed)."""
    import jax

    from crl.train import make_trainer

    agent = make_trainer(config).agent
    shapes = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
    leaves = jax.tree.leaves((shapes.actor_params, shapes.critic_params))
    return int(sum(leaf.size for leaf in leaves))


def config_columns(config: dict, num_params: int | None = None) -> dict[str, Any]:
    """The architecture columns of the tidy table from a config dict (as in config.json)."""
    return {
        "env": config["env"],
        "depth": config["depth"],
        "actor_depth": config["actor_depth"] or config["depth"],
        "critic_depth": config["critic_depth"] or config["depth"],
        "width": config["width"],
        "batch_size": config["batch_size"],
        "residual": config["residual"],
        "layer_norm": config["layer_norm"],
        "activation": config["activation"],
        "num_params": num_params,
    }


def order_columns(table: pd.DataFrame) -> pd.DataFrame:
    """KEY_COLUMNS first, then the remaining eval/* and train/* columns alphabetically."""
    rest = sorted(c for c in table.columns if c not in KEY_COLUMNS)
    return table[[c for c in KEY_COLUMNS if c in table.columns] + rest]


def run_table(run_dir: Path, sweep: str, variant: str) -> pd.DataFrame:
    """One finished run's metrics (a row per (epoch, seed)) with the config columns added."""
    saved = run_dir_lib.load_config(run_dir)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved["config"].items() if k in known})
    metrics = run_dir_lib.load_metrics(run_dir)
    columns = {
        "sweep": sweep, "run": run_dir.name, "variant": variant, "role": "agent",
        **config_columns(saved["config"], count_parameters(config)),
    }
    return metrics.assign(**columns)


def load_points(sweep_dir: str | Path) -> dict[str, str]:
    """Run name → variant, as recorded in sweep.json (empty for a sweep without one)."""
    path = Path(sweep_dir) / "sweep.json"
    return json.loads(path.read_text())["variants"] if path.exists() else {}


def record_points(sweep_dir: str | Path, points: list[GridPoint]) -> None:
    """Remember each grid point's variant in sweep.json (merged with what is there)."""
    path = Path(sweep_dir) / "sweep.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    variants = {**load_points(sweep_dir), **{p.name: p.variant for p in points}}
    _atomic_write(path, json.dumps({"variants": variants}, indent=2))


def build_table(sweep_dir: str | Path) -> pd.DataFrame:
    """The tidy table of every finished run under sweep_dir/runs (one row per config × seed ×
    epoch); empty if none has finished."""
    sweep_dir = Path(sweep_dir)
    variants = load_points(sweep_dir)
    runs_dir = sweep_dir / RUNS_SUBDIR
    finished = sorted(
        p for p in runs_dir.glob("*") if (p / run_dir_lib.SUMMARY_FILE).exists()
    ) if runs_dir.exists() else []
    if not finished:
        return pd.DataFrame(columns=KEY_COLUMNS)
    tables = [run_table(p, sweep_dir.name, variants.get(p.name, "base")) for p in finished]
    return order_columns(pd.concat(tables, ignore_index=True))


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so concurrent shards never leave a torn file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_table(sweep_dir: str | Path) -> pd.DataFrame:
    """Rebuild results.csv from the finished runs and return it."""
    table = build_table(sweep_dir)
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    _atomic_write(Path(sweep_dir) / RESULTS_FILE, table.to_csv(index=False))
    return table


def summary_table(table: pd.DataFrame, final_epochs: int = SCORE_WINDOW, title: str = "") -> Table:
    """Rich table of final time at goal (mean ± s.e. over seeds) per configuration."""
    from experiments.plots import final_performance, varying_columns

    by = varying_columns(table)
    final = final_performance(table, by=by, final_epochs=final_epochs)
    episode = f", last {final_epochs} epochs" if final_epochs > 1 else ""
    rich_table = Table(title=title or f"final time at goal (mean ± s.e. over seeds{episode})")
    for column in by:
        rich_table.add_column(column)
    for column in ("time at goal", "seeds", "env steps"):
        rich_table.add_column(column, justify="right")
    for row in final.to_dict("records"):
        sem = "–" if pd.isna(row["sem"]) else f"{row['sem']:.1f}"
        rich_table.add_row(
            *[str(row[c]) for c in by],
            f"{row['mean']:.1f} ± {sem}",
            str(int(row["n"])),
            f"{int(row['env_steps']):,}",
        )
    return rich_table


# ---- command line ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepOptions:
    """Grid and bookkeeping options of `crl sweep`; every other flag is a `crl train` flag
    (e.g. --env, --width, --num-seeds, --total-env-steps, --preset) and sets the base config."""

    sweep_dir: str = "runs/sweeps/depth"
    """Directory holding the sweep's run directories and results.csv."""
    depths: tuple[int, ...] = (4, 8, 16, 32, 64)
    """Depths (Dense layers in residual blocks; multiples of 4 up to 1024) for both networks."""
    widths: tuple[int, ...] | None = None
    """Width axis; None keeps --width."""
    batch_sizes: tuple[int, ...] | None = None
    """Batch-size axis; None keeps --batch-size."""
    actor_depths: tuple[int, ...] | None = None
    """Actor-depth axis (with critic_depths: an actor × critic depth grid instead of depths)."""
    critic_depths: tuple[int, ...] | None = None
    """Critic-depth axis."""
    shard_index: int = 0
    """This process trains grid points shard_index, shard_index + num_shards, ..."""
    num_shards: int = 1
    """Number of processes (devices or hosts) the grid is split over."""
    final_epochs: int = SCORE_WINDOW
    """Epochs averaged for the final time at goal in the summary (the paper uses the last 5)."""
    figure: str | None = None
    """Also save the depth figure (time at goal vs env steps per depth; final vs depth) here."""
    summarize_only: bool = False
    """Train nothing; rebuild results.csv from finished runs and print the summary."""
    render_final: bool = False
    """Film each grid point's final policy (first seed) into SWEEP_DIR/videos/."""
    quiet: bool = False
    """No per-run progress output."""


def check_depths(axes: dict[str, tuple[int, ...] | None]) -> None:
    """One-line error for any depth on an axis (name → depths) that the networks cannot build."""
    for name, depths in axes.items():
        for depth in depths or ():
            try:
                check_depth(depth, name)
            except ValueError as e:
                raise ConfigError(str(e)) from None


def check_sweep_options(options: SweepOptions) -> None:
    """One-line errors for options that would train nothing, or train and then fail."""
    check_depths({n: getattr(options, n) for n in ("depths", "actor_depths", "critic_depths")})
    for name in ("depths", "widths", "batch_sizes", "actor_depths", "critic_depths"):
        value = getattr(options, name)
        if value is not None and len(value) == 0:
            raise ConfigError(f"{name}: empty; give at least one value (or leave the flag out)")
    for name in ("widths", "batch_sizes"):
        for value in getattr(options, name) or ():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
    if options.final_epochs < 1:
        raise ConfigError(f"final_epochs must be >= 1, got {options.final_epochs}")
    sweep_dir = Path(options.sweep_dir)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir: {sweep_dir} is a file, not a directory")
    if options.summarize_only and not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir: {sweep_dir} does not exist (nothing to summarise)")
    shard([], options.shard_index, options.num_shards)  # its one-line range check


def run_command(options: SweepOptions, base: TrainConfig) -> pd.DataFrame:
    """`crl sweep` (parsed by crl.cli): run (this shard of) a depth sweep and print the summary
    table."""
    check_sweep_options(options)
    console = Console()
    if options.summarize_only:
        table = write_table(options.sweep_dir)
    else:
        points = depth_grid(
            options.depths, options.widths, options.batch_sizes,
            options.actor_depths, options.critic_depths,
        )
        record_points(options.sweep_dir, points)
        table = run_sweep(
            base, points, options.sweep_dir, options.shard_index, options.num_shards,
            console=console, quiet=options.quiet, render_final=options.render_final,
        )
    if table.empty:
        console.print(f"no finished runs in {options.sweep_dir}")
    else:
        console.print(summary_table(table, options.final_epochs))
        console.print(f"tidy table: {Path(options.sweep_dir) / RESULTS_FILE}")
        if options.figure:
            from experiments.plots import depth_threshold_figure

            depth_threshold_figure(table, options.figure, final_epochs=options.final_epochs)
            console.print(f"figure: {options.figure}")
    return table


def main(args: list[str] | None = None) -> None:
    """`python -m experiments.depth_sweep ...` is `crl sweep ...`."""
    from crl.cli import main as cli_main

    cli_main(["sweep", *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
