"""`crl demo threshold` and `crl demo collector-learner`: the CPU-scale demonstrations of what
depth does (issue 13), each one command that reruns the configuration chosen by the search in
`docs/depth_threshold_search.md` and judges it by the criterion pre-registered in
`experiments/README.md`.

- threshold: a depth sweep (shallowest vs deepest, ≥ 5 vmapped seeds), results.csv, the depth
  figure in docs/figures, and the verdict: did the deepest depth beat depth 4 by more than two
  standard errors of the difference?
  It also explains the result from the same runs' diagnostics (`crl.diagnostics`, which never
  change training): effective rank of φ and ψ and the per-layer gradient heatmap at the shallow
  and deep setting (expressivity), and each depth's visited-cell histogram of the maze from its
  replay buffer (exploration; each depth's agent is its own collector, the very collector of the
  2×2 below) — why.csv, demo_threshold_why.png and demo_coverage.png.
- collector-learner: the 2×2 on the same task — deep/shallow collector × deep/shallow learners
  trained only on the collector's batches (`experiments.collector_learner`) — with its figure.

Both take every `crl train` flag, so a smaller version (e.g. in tests) is the same command with
a smaller budget.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from rich.console import Console

from crl.config import PRESETS, TrainConfig
from crl.scores import SCORE_WINDOW
from experiments import collector_learner, depth_sweep

# The configuration the search chose (docs/depth_threshold_search.md).
DEMO_CONFIG = dataclasses.replace(
    PRESETS["cpu"],
    env="point_hardest",
    width=64,
    batch_size=256,
    num_seeds=5,
    total_env_steps=600_000,
    num_epochs=15,
    checkpoint_every=0,
    diagnostics_every=5,  # why: effective rank, per-layer gradients, maze coverage (3 log points)
)
DEMO_DEPTHS = (4, 16)
DEMO_DIR = "runs/demo"
FIGURES_DIR = "docs/figures"

Demo = Literal["threshold", "collector-learner"]


@dataclass(frozen=True)
class DemoOptions:
    """Options of `crl demo`; every other flag is a `crl train` flag (defaults: the chosen
    configuration)."""

    depths: tuple[int, int] = DEMO_DEPTHS
    """Shallow and deep depth: the sweep's two ends, and the 2×2's two depths."""
    demo_dir: str = DEMO_DIR
    """Runs and results.csv go to DEMO_DIR/threshold or DEMO_DIR/collector_learner."""
    figures_dir: str = FIGURES_DIR
    """Where the figure is written (demo_threshold.png / demo_collector_learner.png)."""
    quiet: bool = False
    """No per-run progress output."""


@dataclass(frozen=True)
class Verdict:
    """The pre-registered criterion applied to a depth sweep's final scores."""

    shallow_depth: int
    deep_depth: int
    shallow: float
    shallow_sem: float
    deep: float
    deep_sem: float
    seeds: int
    margin: float  # deep − shallow
    noise: float  # 2·√(se_deep² + se_shallow²)
    met: bool

    def line(self) -> str:
        verdict = "MET" if self.met else "NOT met"
        return (
            f"criterion {verdict}: depth {self.deep_depth} {self.deep:.1f} ± {self.deep_sem:.1f} vs "
            f"depth {self.shallow_depth} {self.shallow:.1f} ± {self.shallow_sem:.1f} "
            f"({self.seeds} seeds); difference {self.margin:+.1f}, needs > {self.noise:.1f} "
            f"(2 s.e.) and >= 5 seeds"
        )


MIN_SEEDS = 5


def judge(final: pd.DataFrame) -> Verdict:
    """Apply the criterion to `experiments.plots.final_performance(table, by=["depth"])`: the
    deepest depth's mean beats the shallowest's by more than 2 standard errors of the
    difference, with at least MIN_SEEDS seeds at both."""
    ordered = final.sort_values("depth")
    shallow, deep = ordered.iloc[0], ordered.iloc[-1]
    if shallow["depth"] == deep["depth"]:
        raise ValueError("the criterion needs at least two depths")
    sems = [0.0 if pd.isna(row["sem"]) else float(row["sem"]) for row in (shallow, deep)]
    margin = float(deep["mean"] - shallow["mean"])
    noise = 2.0 * float(np.hypot(*sems))
    seeds = int(min(shallow["n"], deep["n"]))
    return Verdict(
        shallow_depth=int(shallow["depth"]), deep_depth=int(deep["depth"]),
        shallow=float(shallow["mean"]), shallow_sem=sems[0],
        deep=float(deep["mean"]), deep_sem=sems[1], seeds=seeds,
        margin=margin, noise=noise, met=bool(margin > noise and seeds >= MIN_SEEDS),
    )


def run_threshold(options: DemoOptions, config: TrainConfig) -> tuple[pd.DataFrame, Verdict]:
    """The depth sweep at the two depths, its figure, table and verdict."""
    from experiments.plots import final_performance

    sweep_dir = Path(options.demo_dir) / "threshold"
    figure = Path(options.figures_dir) / "demo_threshold.png"
    sweep = depth_sweep.SweepOptions(
        sweep_dir=str(sweep_dir), depths=tuple(options.depths), figure=str(figure),
        quiet=options.quiet,
    )
    table = depth_sweep.run_command(sweep, config)
    verdict = judge(final_performance(table, by=["depth"], final_epochs=SCORE_WINDOW))
    console = Console()
    if config.diagnostics_every > 0:
        runs = table.drop_duplicates("depth").set_index("depth")["run"].sort_index()
        run_dirs = {int(d): sweep_dir / depth_sweep.RUNS_SUBDIR / run for d, run in runs.items()}
        why = explain(run_dirs, Path(options.figures_dir))
        depth_sweep._atomic_write(sweep_dir / WHY_FILE, why.to_csv(index=False))
        console.print(why_table(why))
    console.print(verdict.line())
    return table, verdict


WHY_FILE = "why.csv"
WHY_COLUMNS = {
    "effective_rank/phi": "rank φ",
    "effective_rank/psi": "rank ψ",
    "effective_rank/hidden_critic_sa": "rank hidden",
    "heldout/categorical_accuracy": "held-out acc",
    "coverage/visited_fraction": "cells visited",
}


def explain(run_dirs: dict[int, Path], figures_dir: Path) -> pd.DataFrame:
    """The diagnostics of the sweep's runs at their last log point, one row per depth × seed,
    and two figures: demo_threshold_why.png (gradient heatmaps and effective rank of the first
    seed, shallow vs deep) and demo_coverage.png (seed-averaged visited-cell histogram per
    depth, i.e. per collector depth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crl import diagnostics

    rows = []
    for depth, run_dir in run_dirs.items():
        for seed in diagnostics.seeds_of(run_dir):
            data = diagnostics.load(run_dir, seed)
            row = {"depth": depth, "seed": seed, "epoch": int(data["epoch"][-1])}
            row.update({k: float(data[k][-1]) for k in WHY_COLUMNS if k in data})
            grads = data["grad_norm/critic_sa"][-1]
            row["grad in/out"] = float(grads[0] / max(grads[-1], 1e-30))
            rows.append(row)
    figures_dir.mkdir(parents=True, exist_ok=True)
    loaded = {f"depth {d}": diagnostics.load(r) for d, r in run_dirs.items()}
    fig = diagnostics.plot_comparison(loaded)
    fig.savefig(figures_dir / "demo_threshold_why.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    maps = {}
    for depth, run_dir in run_dirs.items():
        try:
            maps[depth] = diagnostics.coverage_map(run_dir)
        except ValueError:  # not a maze env: no coverage to draw
            pass
    if maps:
        fig, axes = plt.subplots(1, len(maps), figsize=(3.6 * len(maps), 3.4), squeeze=False)
        for ax, (depth, (walls, share, visited)) in zip(axes[0], maps.items()):
            image = diagnostics.plot_coverage(
                ax, walls, share,
                f"collector depth {depth}: {100 * visited.mean():.0f}% of cells visited",
            )
        fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03, label="share of replay states")
        fig.suptitle("where each depth's agent has been (replay buffer, last log point, mean over seeds)", fontsize=9)
        fig.savefig(figures_dir / "demo_coverage.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    Console().print(f"figures: {figures_dir / 'demo_threshold_why.png'}, {figures_dir / 'demo_coverage.png'}")
    return pd.DataFrame(rows)


def why_table(why: pd.DataFrame):
    """Mean ± s.e. over seeds of each diagnostic, per depth (a rich Table)."""
    from rich.table import Table

    columns = [c for c in why.columns if c not in ("depth", "seed", "epoch")]
    table = Table(title="why (diagnostics at the last log point, mean ± s.e. over seeds)")
    table.add_column("depth")
    for column in columns:
        table.add_column(WHY_COLUMNS.get(column, column))
    for depth, group in why.groupby("depth"):
        cells = []
        for column in columns:
            values = group[column].to_numpy()
            sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():.3g} ± {sem:.2g}")
        table.add_row(str(depth), *cells)
    return table


def run_collector_learner(options: DemoOptions, config: TrainConfig) -> pd.DataFrame:
    """The 2×2 (deep/shallow collector × deep/shallow learners) on the same task, and its figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.plots import plot_collector_learner

    out_dir = Path(options.demo_dir) / "collector_learner"
    depths = tuple(sorted(options.depths, reverse=True))
    grid = collector_learner.CollectorLearnerOptions(
        collector_depths=depths, learner_depths=depths, quiet=options.quiet,
    )
    # Diagnostics are per agent: the threshold demo measures these very collectors.
    config = dataclasses.replace(config, out_dir=str(out_dir), diagnostics_every=0)
    table = collector_learner.run_command(grid, config)
    figure = Path(options.figures_dir) / "demo_collector_learner.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_collector_learner(table, ax=ax)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    Console().print(f"figure: {figure}")
    return table


def run_command(which: Demo, options: DemoOptions, config: TrainConfig):
    """`crl demo WHICH` (parsed by crl.cli)."""
    depth_sweep.check_depths({"depths": tuple(options.depths)})
    if which == "threshold":
        return run_threshold(options, config)
    return run_collector_learner(options, config)
