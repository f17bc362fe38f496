"""Architecture ablations as depth-sweep grids (each trained by `experiments.depth_sweep.run_sweep`,
so resuming, sharding and the tidy table work the same way):

  residual        full vs no residual connections, per depth
  layer_norm      full vs no LayerNorm, per depth
  activation      Swish vs ReLU, per depth
  width_vs_depth  deep nets at the base width vs depth-4 nets widened to the same parameter count
  actor_critic    actor depth × critic depth

    python -m experiments.ablations --ablations residual layer_norm --depths 4 16 \
        --ablations-dir runs/ablations --env point_big --width 64 --num-seeds 3

Each ablation gets its own sweep directory, `<ablations-dir>/<name>/` with results.csv; the
`variant` column tells the arms apart.

`--study stability` instead runs the stability-fix study (sweep directory
`<ablations-dir>/stability/`): at each depth, a plain network (no residual connections, no
LayerNorm) as the baseline, the same network with each fix of crl.regularizers / multi-skip
networks alone and with all of them, and the healthy reference (residual + LayerNorm); every run
has diagnostics and the live stability audit on, and the summary gives final time at goal (mean
± s.e. over seeds of each seed's mean over the last `--final-epochs` evaluations) and which audit
rules fired at the last log point.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from crl import audit
from crl import run_dir as run_dir_lib
from crl.config import ConfigError, TrainConfig
from crl.scores import SCORE_WINDOW
from experiments.depth_sweep import (
    GridPoint, check_depths, count_parameters, record_points, run_sweep, summary_table,
)

Ablation = Literal["residual", "layer_norm", "activation", "width_vs_depth", "actor_critic"]
Study = Literal["architecture", "stability"]


def switch_grid(depths: tuple[int, ...], field: str, off_value, variant: str) -> list[GridPoint]:
    """Per depth: the full architecture and the one with `field` set to `off_value`."""
    return [GridPoint({"depth": d}, "full") for d in depths] + [
        GridPoint({"depth": d, field: off_value}, variant) for d in depths
    ]


def matched_width(base: TrainConfig, target_params: int, depth: int = 4) -> int:
    """The width at which a `depth`-deep agent has the parameter count closest to target_params
    (parameters grow monotonically with width, so a bisection finds it)."""
    def params(width: int) -> int:
        return count_parameters(dataclasses.replace(base, width=width, depth=depth,
                                                    actor_depth=None, critic_depth=None))

    low, high = 1, max(2, base.width)
    while params(high) < target_params:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if params(middle) < target_params else (low, middle)
    return min((low, high), key=lambda w: abs(params(w) - target_params))


def width_vs_depth_grid(base: TrainConfig, depths: tuple[int, ...]) -> list[GridPoint]:
    """Variant "deeper": each depth at the base width; variant "wider": depth 4 with the width
    that matches each of those parameter counts (skipping the base width, already trained as
    "deeper" depth 4)."""
    points = [GridPoint({"depth": d}, "deeper") for d in depths]
    for d in depths:
        target = count_parameters(dataclasses.replace(base, depth=d, actor_depth=None, critic_depth=None))
        width = matched_width(base, target)
        if width != base.width:
            points.append(GridPoint({"depth": 4, "width": width}, "wider"))
    unique = {p.name: p for p in points}
    return list(unique.values())


def actor_critic_grid(depths: tuple[int, ...]) -> list[GridPoint]:
    """Every (actor depth, critic depth) pair from `depths`."""
    return [
        GridPoint({"actor_depth": a, "critic_depth": c}, "actor_critic") for a in depths for c in depths
    ]


GRIDS: dict[str, Callable[[TrainConfig, tuple[int, ...]], list[GridPoint]]] = {
    "residual": lambda base, depths: switch_grid(depths, "residual", False, "no_residual"),
    "layer_norm": lambda base, depths: switch_grid(depths, "layer_norm", False, "no_layer_norm"),
    "activation": lambda base, depths: switch_grid(depths, "activation", "relu", "relu"),
    "width_vs_depth": width_vs_depth_grid,
    "actor_critic": lambda base, depths: actor_critic_grid(depths),
}


def ablation_grid(name: str, base: TrainConfig, depths: tuple[int, ...]) -> list[GridPoint]:
    """The grid points of ablation `name` over `depths`."""
    if name not in GRIDS:
        raise ConfigError(f"ablations: unknown ablation {name!r}; known: {', '.join(GRIDS)}")
    return GRIDS[name](base, depths)


# ---- the stability-fix study -------------------------------------------------------------------
STABILITY_DIR = "stability"
STABILITY_DEPTHS = (32,)
DEFAULT_FIX_WEIGHTS = {"isotropy_weight": 0.1, "churn_weight": 1.0}
"""Fix weights used when the base config leaves them at 0 (--isotropy-weight/--churn-weight)."""
PLAIN = {"residual": False, "layer_norm": False}
OFF = {"isotropy_weight": 0.0, "multi_skip": False, "churn_weight": 0.0}
STABILITY_VARIANTS = ("reference", "plain", "plain+isotropy", "plain+multi_skip", "plain+chain", "plain+all")


def stability_grid(base: TrainConfig, depths: tuple[int, ...]) -> list[GridPoint]:
    """Per depth: the healthy reference (residual + LayerNorm, no fixes), the plain network, the
    plain network with each fix alone, and with all fixes."""
    weights = {k: getattr(base, k) or v for k, v in DEFAULT_FIX_WEIGHTS.items()}
    fixes = {
        "reference": {"residual": True, "layer_norm": True, **OFF},
        "plain": {**PLAIN, **OFF},
        "plain+isotropy": {**PLAIN, **OFF, "isotropy_weight": weights["isotropy_weight"]},
        "plain+multi_skip": {**PLAIN, **OFF, "multi_skip": True},
        "plain+chain": {**PLAIN, **OFF, "churn_weight": weights["churn_weight"]},
        "plain+all": {**PLAIN, "multi_skip": True, **weights},
    }
    return [GridPoint({"depth": d, **fixes[v]}, v) for d in depths for v in STABILITY_VARIANTS]


def stability_base(base: TrainConfig) -> TrainConfig:
    """The study's base config: diagnostics (and so the audit) on, every 2 epochs by default."""
    return dataclasses.replace(base, diagnostics_every=base.diagnostics_every or 2)


def last_audit(run_dir: str | Path) -> dict[int, list[str]]:
    """Per seed, the audit's warning lines at the run's last log point."""
    rows = run_dir_lib.load_metrics(run_dir)
    if audit.WARNINGS_KEY not in rows:
        return {int(s): [] for s in rows["seed"].unique()}
    logged = rows[rows[audit.WARNINGS_KEY].apply(lambda w: isinstance(w, list))]
    last = logged[logged["epoch"] == logged["epoch"].max()]
    return {int(r["seed"]): list(r[audit.WARNINGS_KEY]) for _, r in last.iterrows()}


def stability_table(sweep_dir: str | Path, final_epochs: int = SCORE_WINDOW) -> pd.DataFrame:
    """One row per (depth, variant): final time at goal (mean ± s.e. over seeds of each seed's
    mean over its last `final_epochs` evaluations), seeds, and for each audit rule the number of
    seeds for which it fired at the last log point."""
    from experiments.depth_sweep import RUNS_SUBDIR, write_table
    from experiments.plots import final_performance

    table = write_table(sweep_dir)
    if table.empty:
        return pd.DataFrame()
    final = final_performance(table, by=["depth", "variant"], final_epochs=final_epochs)
    rules = list(audit.count_by_rule([]))
    fired = []
    for run, group in table.groupby("run"):
        per_seed = last_audit(Path(sweep_dir) / RUNS_SUBDIR / run)
        counts = {rule: sum(audit.count_by_rule(lines)[rule] > 0 for lines in per_seed.values())
                  for rule in rules}
        fired.append({"depth": group["depth"].iloc[0], "variant": group["variant"].iloc[0], **counts})
    final = final.merge(pd.DataFrame(fired), on=["depth", "variant"])
    order = {v: i for i, v in enumerate(STABILITY_VARIANTS)}
    return final.sort_values(["depth", "variant"], key=lambda c: c.map(order) if c.name == "variant" else c).reset_index(drop=True)


def stability_rich_table(final: pd.DataFrame, final_epochs: int) -> Table:
    """The study's summary for the console."""
    rich_table = Table(title=f"stability study: final time at goal (mean ± s.e. over seeds, last "
                             f"{final_epochs} evaluations) and audit rules firing at the last log point")
    columns = ["depth", "variant", "time at goal", "seeds", *list(audit.count_by_rule([]))]
    for column in columns:
        rich_table.add_column(column, justify="left" if column == "variant" else "right")
    for row in final.to_dict("records"):
        sem = "–" if pd.isna(row["sem"]) else f"{row['sem']:.1f}"
        rich_table.add_row(
            str(row["depth"]), row["variant"], f"{row['mean']:.1f} ± {sem}", str(int(row["n"])),
            *[f"{int(row[r])}/{int(row['n'])}" for r in audit.count_by_rule([])],
        )
    return rich_table


def run_stability_study(
    base: TrainConfig, depths: tuple[int, ...], ablations_dir: str | Path, shard_index: int = 0,
    num_shards: int = 1, console: Console | None = None, quiet: bool = False,
) -> pd.DataFrame:
    """Train the stability grid (a sweep in <ablations_dir>/stability); returns its tidy table."""
    sweep_dir = Path(ablations_dir) / STABILITY_DIR
    points = stability_grid(base, depths)
    record_points(sweep_dir, points)
    return run_sweep(stability_base(base), points, sweep_dir, shard_index, num_shards, console, quiet)


def stability_figure(final: pd.DataFrame, path: str | Path | None = None):
    """Bar chart of final time at goal per variant (error bars: s.e. over seeds), one panel per
    depth, with the audit rules that fired written under each bar."""
    import matplotlib.pyplot as plt

    depths = sorted(final["depth"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(7.5 * len(depths), 4.8), squeeze=False)
    short = {"dead layers": "DL", "dead units": "DU", "collapsed representation": "CR",
             "rising policy churn": "CH"}
    for ax, depth in zip(axes[0], depths):
        rows = final[final["depth"] == depth]
        x = np.arange(len(rows))
        colors = ["tab:green" if v == "reference" else "tab:gray" if v == "plain" else "tab:blue"
                  for v in rows["variant"]]
        ax.bar(x, rows["mean"], yerr=rows["sem"].fillna(0.0), color=colors, capsize=4)
        labels = []
        for _, row in rows.iterrows():
            flags = " ".join(f"{short[r]}{int(row[r])}" for r in short if row[r] > 0)
            labels.append(f"{row['variant']}\n{flags or 'no warnings'}")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel("final time at goal (steps)")
        ax.set_title(f"depth {depth}: plain = no residual, no LayerNorm", fontsize=10)
    fig.text(0.01, 0.01, "audit rules at the last log point (seeds): DL dead layers, DU dead units, "
             "CR collapsed φ/ψ, CH rising churn", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


@dataclass(frozen=True)
class AblationOptions:
    """Ablations to run; every other flag is a `crl train` flag and sets the base config."""

    ablations: tuple[Ablation, ...] = ("residual", "layer_norm", "activation", "width_vs_depth", "actor_critic")
    ablations_dir: str = "runs/ablations"
    """Parent directory; each ablation is a sweep directory <ablations_dir>/<name>."""
    study: Study = "architecture"
    """architecture: the --ablations grids; stability: the stability-fix study (plain network
    vs each fix vs all fixes vs the residual+LayerNorm reference; see the module docstring)."""
    depths: tuple[int, ...] | None = None
    """Depths; default 4 16 32 64 (architecture) or 32 (stability)."""
    shard_index: int = 0
    num_shards: int = 1
    final_epochs: int | None = None
    """Evaluations averaged for the final score (default: the paper's last 5, crl.scores)."""
    figure: str | None = None
    """stability study: also save its figure here."""
    quiet: bool = False


def run_ablations(
    base: TrainConfig, ablations: tuple[str, ...], depths: tuple[int, ...], ablations_dir: str | Path,
    shard_index: int = 0, num_shards: int = 1, console: Console | None = None, quiet: bool = False,
) -> dict[str, pd.DataFrame]:
    """Run each ablation's grid as a sweep; returns name → tidy table."""
    console = console or Console()
    grids = {name: ablation_grid(name, base, depths) for name in ablations}
    tables = {}
    for name, points in grids.items():
        sweep_dir = Path(ablations_dir) / name
        record_points(sweep_dir, points)
        tables[name] = run_sweep(base, points, sweep_dir, shard_index, num_shards, console, quiet)
    return tables


def run_command(options: AblationOptions, base: TrainConfig) -> dict[str, pd.DataFrame]:
    """`crl ablate` (parsed by crl.cli): run the chosen ablations (or `--study stability`) and
    print one summary table each."""
    stability = options.study == "stability"
    depths = options.depths or (STABILITY_DEPTHS if stability else (4, 16, 32, 64))
    final_epochs = options.final_epochs or SCORE_WINDOW
    check_depths({"depths": depths})
    if final_epochs < 1:
        raise ConfigError(f"final_epochs must be >= 1, got {final_epochs}")
    console = Console()
    if stability:
        run_stability_study(base, depths, options.ablations_dir, options.shard_index,
                            options.num_shards, console, options.quiet)
        final = stability_table(Path(options.ablations_dir) / STABILITY_DIR, final_epochs)
        if not final.empty:
            console.print(stability_rich_table(final, final_epochs))
            if options.figure:
                stability_figure(final, options.figure)
                console.print(f"figure: {options.figure}")
        return {STABILITY_DIR: final}
    tables = run_ablations(
        base, options.ablations, depths, options.ablations_dir, options.shard_index,
        options.num_shards, console, options.quiet,
    )
    for name, table in tables.items():
        if not table.empty:
            console.print(summary_table(table, final_epochs, f"ablation: {name}"))
    return tables


def main(args: list[str] | None = None) -> None:
    """`python -m experiments.ablations ...` is `crl ablate ...`."""
    from crl.cli import main as cli_main

    cli_main(["ablate", *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
