"""`crl demo threshold` and `crl demo collector-learner`: the CPU-scale demonstrations of what
depth does (issue 13), each one command that reruns the configuration chosen by the search in
`docs/depth_threshold_search.md` and judges it by the criterion pre-registered in
`experiments/README.md`.

- threshold: a depth sweep (shallowest vs deepest, ≥ 5 vmapped seeds), results.csv, the depth
  figure in docs/figures, and the verdict: did the deepest depth beat depth 4 by more than two
  standard errors of the difference?
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
    Console().print(verdict.line())
    return table, verdict


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
    table = collector_learner.run_command(grid, dataclasses.replace(config, out_dir=str(out_dir)))
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
