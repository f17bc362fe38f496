"""A run's score: the mean of its last few evaluations (the paper reports the average over the
final 5 evaluations), rather than the single last one, which is noisy. Used for summary.json
and for the sweep tables (experiments.plots)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

SCORE_WINDOW = 5
METRIC = "eval/time_at_goal"


def check_window(window: int) -> None:
    if not (isinstance(window, (int, np.integer)) and window >= 1):
        raise ValueError(f"score window must be an int >= 1, got {window!r}")


def is_eval_epoch(epoch: int, every: int, num_epochs: int) -> bool:
    """Whether 0-based `epoch` is evaluated: every `every`-th epoch (1-based) and the last."""
    return (epoch + 1) % every == 0 or epoch == num_epochs - 1


def final_score(values: Sequence[float], window: int = SCORE_WINDOW) -> float:
    """Mean of the last `window` of `values` (evaluations in epoch order; all if fewer)."""
    check_window(window)
    if len(values) == 0:
        raise ValueError("final_score: no evaluations")
    return float(np.mean(np.asarray(values, dtype=float)[-window:]))


def scores_per_seed(
    rows: Sequence[dict[str, Any]], seeds: Sequence[int], window: int = SCORE_WINDOW,
    metric: str = METRIC,
) -> list[float]:
    """Per seed (in `seeds` order), `final_score` of `metric` over a run's metrics rows (dicts
    with 'epoch' and 'seed', as in metrics.jsonl); rows of epochs that were not evaluated
    (no `metric`) are skipped."""
    result = []
    for seed in seeds:
        mine = sorted((r for r in rows if r["seed"] == seed and metric in r), key=lambda r: r["epoch"])
        result.append(final_score([r[metric] for r in mine], window))
    return result


def table_scores(
    table: pd.DataFrame, by: Sequence[str], window: int = SCORE_WINDOW, metric: str = METRIC
) -> pd.DataFrame:
    """Per (config columns `by`, seed) of a tidy sweep table (one row per run, seed, epoch):
    `value`, the mean of `metric` over that run's last `window` evaluations (epochs without an
    evaluation skipped), and its `env_steps`."""
    check_window(window)
    keys = [*by, "seed"]
    evaluated = table[table[metric].notna()]
    # Rank evaluations from the last (0) back, per run and seed.
    from_last = evaluated.groupby([*by, "run", "seed"], dropna=False)["epoch"].rank(
        method="first", ascending=False
    )
    recent = evaluated[from_last <= window]
    return recent.groupby(keys, dropna=False).agg(
        value=(metric, "mean"), env_steps=("env_steps", "max")
    ).reset_index()
