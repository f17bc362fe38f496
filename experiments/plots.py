"""Loading and plotting of experiment tables (depth sweeps, ablations, collector/learner), shared
by the notebooks and `crl sweep`'s summary. Tables are the tidy results.csv files: one row per
(config, seed, epoch), columns as in `experiments.depth_sweep.KEY_COLUMNS`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from crl.scores import METRIC, SCORE_WINDOW, table_scores

# Columns that describe a configuration; the ones that vary within a table are its group keys.
CONFIG_COLUMNS = [
    "variant", "role", "collector_depth", "env", "depth", "actor_depth", "critic_depth",
    "width", "batch_size", "residual", "layer_norm", "activation",
]


def load_table(directory: str | Path) -> pd.DataFrame:
    """results.csv of a sweep (or collector/learner) directory; rebuilt from the run directories
    when the file is missing. Raises FileNotFoundError with the path if there is nothing."""
    directory = Path(directory)
    path = directory / "results.csv"
    if not path.exists() and (directory / "runs").exists():
        from experiments.depth_sweep import write_table

        write_table(directory)
    if not path.exists():
        raise FileNotFoundError(f"no results.csv in {directory}; run the sweep first")
    table = pd.read_csv(path)
    if table.empty:
        raise FileNotFoundError(f"{path} has no finished runs yet")
    return table


def varying_columns(table: pd.DataFrame, candidates: Sequence[str] = CONFIG_COLUMNS) -> list[str]:
    """Configuration columns that take more than one value in `table` (depth always included)."""
    varying = [c for c in candidates if c in table.columns and table[c].nunique(dropna=False) > 1]
    if "depth" in varying:  # actor/critic depths that just follow depth add nothing
        varying = [c for c in varying if c not in ("actor_depth", "critic_depth")
                   or not (table[c] == table["depth"]).all()]
    if "depth" not in varying and "depth" in table.columns and not (
        {"actor_depth", "critic_depth"} & set(varying)
    ):
        varying.append("depth")
    return [c for c in CONFIG_COLUMNS if c in varying]


def final_per_seed(
    table: pd.DataFrame, by: Sequence[str], final_epochs: int = SCORE_WINDOW, metric: str = METRIC
) -> pd.DataFrame:
    """Per (config, seed): `metric` averaged over the last `final_epochs` epochs of that run
    (crl.scores: the paper's score is the mean of the last 5 evaluations)."""
    if final_epochs < 1:
        raise ValueError(f"final_epochs must be >= 1, got {final_epochs}")
    return table_scores(table, by, final_epochs, metric)


def final_performance(
    table: pd.DataFrame, by: Sequence[str] = ("depth",), final_epochs: int = SCORE_WINDOW, metric: str = METRIC
) -> pd.DataFrame:
    """Per configuration: mean, standard error (std over seeds / √n; NaN for one seed), number
    of seeds and env steps of the final `metric` (averaged over the last `final_epochs`)."""
    per_seed = final_per_seed(table, by, final_epochs, metric)
    grouped = per_seed.groupby(list(by), dropna=False)
    result = grouped.agg(
        mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
        env_steps=("env_steps", "max"),
    ).reset_index()
    result["sem"] = result["std"] / np.sqrt(result["n"])
    return result.drop(columns="std")


def critical_depth(final: pd.DataFrame) -> int | None:
    """The depth at which mean performance jumps most over the next-shallower depth (the paper's
    "critical depth"). With a `sem` column the jump must also exceed twice its standard error
    (√(s.e.² + s.e.²)); None with fewer than two depths or no such jump."""
    ordered = final.sort_values("depth")
    jumps = ordered["mean"].diff().to_numpy()[1:]
    if "sem" in ordered:
        sem = ordered["sem"].fillna(0.0).to_numpy()
        noise = 2 * np.sqrt(sem[1:] ** 2 + sem[:-1] ** 2)
        jumps = np.where(jumps > noise, jumps, -np.inf)
    if len(jumps) == 0 or np.max(jumps) <= 0:
        return None
    return int(ordered["depth"].to_numpy()[1:][int(np.argmax(jumps))])


def curves(table: pd.DataFrame, by: Sequence[str], metric: str = METRIC) -> pd.DataFrame:
    """Mean and standard error over seeds of `metric` at every evaluated epoch, per configuration."""
    grouped = table[table[metric].notna()].groupby([*by, "epoch"], dropna=False)
    result = grouped.agg(
        env_steps=("env_steps", "max"), mean=(metric, "mean"), std=(metric, "std"),
        n=(metric, "size"),
    ).reset_index()
    result["sem"] = (result["std"] / np.sqrt(result["n"])).fillna(0.0)
    return result


def _label(row: pd.Series, by: Sequence[str]) -> str:
    return ", ".join(f"{c}={row[c]}" for c in by)


def plot_curves(table: pd.DataFrame, ax=None, by: Sequence[str] = ("depth",), metric: str = METRIC):
    """`metric` vs env steps, one line (mean ± s.e. band over seeds) per configuration."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    data = curves(table, by, metric)
    for key, group in data.groupby(list(by), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{c}={k}" for c, k in zip(by, key))
        x, y, e = group["env_steps"], group["mean"], group["sem"]
        (line,) = ax.plot(x, y, marker="o", markersize=3, label=label)
        ax.fill_between(x, y - e, y + e, alpha=0.2, color=line.get_color())
    ax.set_xlabel("environment steps")
    ax.set_ylabel(metric.split("/")[-1].replace("_", " "))
    ax.legend(fontsize="small")
    return ax


def plot_final_vs_depth(
    table: pd.DataFrame, ax=None, final_epochs: int = SCORE_WINDOW, group: str | None = None,
    metric: str = METRIC, mark_critical: bool = True,
):
    """Final `metric` vs depth (log2 axis) with s.e. error bars, one line per value of `group`
    (e.g. "variant" or "width"); the critical depth of each line is marked with a dashed line."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    by = ["depth"] + ([group] if group else [])
    final = final_performance(table, by=by, final_epochs=final_epochs, metric=metric)
    lines = final.groupby(group, dropna=False) if group else [(None, final)]
    for key, data in lines:
        data = data.sort_values("depth")
        label = f"{group}={key}" if group else None
        container = ax.errorbar(
            data["depth"], data["mean"], yerr=data["sem"].fillna(0.0), marker="o", capsize=4,
            label=label,
        )
        critical = critical_depth(data) if mark_critical else None
        if critical is not None:
            color = container.lines[0].get_color()
            ax.axvline(critical, linestyle="--", color=color, alpha=0.6)
            ax.annotate(
                f"critical depth {critical}", (critical, data["mean"].max()), color=color,
                textcoords="offset points", xytext=(4, -12), fontsize="small",
            )
    ax.set_xscale("log", base=2)
    depths = sorted(final["depth"].unique())
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("depth (Dense layers in residual blocks)")
    ax.set_ylabel(f"final {metric.split('/')[-1].replace('_', ' ')}")
    if group:
        ax.legend(fontsize="small")
    return ax


def plot_bars(
    final: pd.DataFrame, x: str, hue: str, ax=None, value: str = "mean", error: str = "sem",
):
    """Grouped bar chart of `final` (a final_performance table): groups along `x`, one bar per
    value of `hue`, s.e. error bars."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    groups = sorted(final[x].unique(), key=str)
    hues = sorted(final[hue].unique(), key=str)
    width = 0.8 / len(hues)
    for i, h in enumerate(hues):
        data = final[final[hue] == h].set_index(x).reindex(groups)
        positions = np.arange(len(groups)) + (i - (len(hues) - 1) / 2) * width
        ax.bar(positions, data[value], width, yerr=data[error].fillna(0.0), capsize=4,
               label=f"{hue}={h}")
    ax.set_xticks(np.arange(len(groups)), [f"{x}={g}" for g in groups])
    ax.legend(fontsize="small")
    return ax


def plot_collector_learner(table: pd.DataFrame, ax=None, final_epochs: int = SCORE_WINDOW):
    """The 2×2: final time at goal of the deep/shallow learners (and the collectors themselves)
    grouped by collector depth."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    table = table.assign(agent=table["role"] + " d" + table["depth"].astype(str))
    final = final_performance(table, by=["collector_depth", "agent"], final_epochs=final_epochs)
    plot_bars(final, x="collector_depth", hue="agent", ax=ax)
    ax.set_ylabel("final time at goal")
    ax.set_title("learners trained only on the collector's data")
    return ax


def depth_threshold_figure(table: pd.DataFrame, path: str | Path | None = None, final_epochs: int = SCORE_WINDOW,
                           title: str = ""):
    """Two panels — time at goal vs env steps per depth, and final time at goal vs depth with the
    critical depth marked; saved to `path` when given. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    plot_curves(table, ax=left, by=["depth"])
    plot_final_vs_depth(table, ax=right, final_epochs=final_epochs)
    seeds = table["seed"].nunique()
    fig.suptitle(title or f"{table['env'].iloc[0]}: depth sweep ({seeds} seeds, mean ± s.e.)")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_final_vs_params(table: pd.DataFrame, ax=None, final_epochs: int = SCORE_WINDOW, group: str = "variant"):
    """Width vs depth: final time at goal against parameter count (log axis), one line per
    `group` value ("deeper" at fixed width vs "wider" at depth 4)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    final = final_performance(table, by=[group, "num_params", "depth", "width"], final_epochs=final_epochs)
    for key, data in final.groupby(group):
        data = data.sort_values("num_params")
        ax.errorbar(data["num_params"], data["mean"], yerr=data["sem"].fillna(0.0), marker="o",
                    capsize=4, label=str(key))
        for row in data.to_dict("records"):
            ax.annotate(f"d{row['depth']} w{row['width']}", (row["num_params"], row["mean"]),
                        textcoords="offset points", xytext=(3, 3), fontsize="x-small")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (actor + critic)")
    ax.set_ylabel("final time at goal")
    ax.legend(fontsize="small")
    return ax


def plot_actor_critic_grid(table: pd.DataFrame, ax=None, final_epochs: int = SCORE_WINDOW):
    """Heatmap of final time at goal over actor depth (rows) × critic depth (columns)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    final = final_performance(table, by=["actor_depth", "critic_depth"], final_epochs=final_epochs)
    grid = final.pivot(index="actor_depth", columns="critic_depth", values="mean")
    image = ax.imshow(grid.to_numpy(), origin="lower", cmap="viridis")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index])
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="w", fontsize="small")
    ax.set_xlabel("critic depth")
    ax.set_ylabel("actor depth")
    ax.figure.colorbar(image, ax=ax, label="final time at goal")
    return ax


def plot_ablation(name: str, table: pd.DataFrame, ax=None, final_epochs: int = SCORE_WINDOW):
    """The natural plot of one ablation sweep (see experiments.ablations.GRIDS)."""
    if name == "width_vs_depth":
        return plot_final_vs_params(table, ax, final_epochs)
    if name == "actor_critic":
        return plot_actor_critic_grid(table, ax, final_epochs)
    return plot_final_vs_depth(table, ax, final_epochs, group="variant", mark_critical=False)


def ablation_tables(ablations_dir: str | Path) -> dict[str, pd.DataFrame]:
    """name → tidy table for every ablation sweep under `ablations_dir` that has finished runs."""
    tables = {}
    for sweep_dir in sorted(Path(ablations_dir).glob("*")):
        if (sweep_dir / "results.csv").exists() or (sweep_dir / "runs").exists():
            try:
                tables[sweep_dir.name] = load_table(sweep_dir)
            except FileNotFoundError:
                continue
    if not tables:
        raise FileNotFoundError(f"no ablation sweeps with results under {ablations_dir}")
    return tables


def behaviour_strip(sweep_dir: str | Path, table: pd.DataFrame, frames: int = 5,
                    final_epochs: int = SCORE_WINDOW):
    """Behaviour against depth: one row per grid point filmed by `crl sweep --render-final`
    (SWEEP_DIR/videos/<run>.gif), `frames` evenly spaced frames of its final policy's episode,
    labelled with the depth and final time at goal. None when the sweep has no videos."""
    import matplotlib.pyplot as plt
    from PIL import Image, ImageSequence

    videos = Path(sweep_dir) / "videos"
    runs = table.drop_duplicates("run").sort_values(["depth", "run"])
    runs = [row for row in runs.itertuples() if (videos / f"{row.run}.gif").exists()]
    if not runs:
        return None
    final = final_performance(table, by=["run"], final_epochs=final_epochs).set_index("run")
    fig, axes = plt.subplots(len(runs), frames, figsize=(1.8 * frames, 1.6 * len(runs)),
                             squeeze=False)
    for row_axes, run in zip(axes, runs):
        with Image.open(videos / f"{run.run}.gif") as gif:
            images = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
        picks = np.linspace(0, len(images) - 1, frames).round().astype(int)
        for ax, index in zip(row_axes, picks):
            ax.imshow(images[index])
            ax.set_xticks([])
            ax.set_yticks([])
        row_axes[0].set_ylabel(
            f"depth {run.depth}\n{final.loc[run.run, 'mean']:.1f} at goal", fontsize=8
        )
    for ax, index in zip(axes[0], picks):
        ax.set_title(f"frame {index}", fontsize=8)
    fig.suptitle("final policy (first seed) per depth, start → end of one episode", fontsize=9)
    fig.tight_layout()
    return fig
