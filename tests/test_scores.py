"""Run scores: the mean of the last `score_window` evaluations (crl.scores)."""

import pandas as pd
import pytest

from crl import scores
from experiments.plots import final_performance


def test_final_score_is_the_mean_of_the_last_window():
    assert scores.final_score([0, 0, 1, 2, 3, 4, 5]) == 3.0  # default window: the paper's 5
    assert scores.final_score([1, 2, 3], window=5) == 2.0  # fewer evaluations: all of them
    assert scores.final_score([1, 2, 3], window=1) == 3.0
    with pytest.raises(ValueError, match="no evaluations"):
        scores.final_score([])
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        scores.final_score([1.0], window=0)


def test_scores_per_seed_orders_by_epoch():
    rows = [{"epoch": e, "seed": s, "eval/time_at_goal": 10 * s + e} for e in (3, 0, 2, 1) for s in (0, 1)]
    assert scores.scores_per_seed(rows, [1, 0], window=2) == [12.5, 2.5]


def test_sweep_tables_average_each_runs_last_epochs():
    rows = [
        {"run": run, "depth": depth, "seed": seed, "epoch": e, "env_steps": 100 * (e + 1),
         "eval/time_at_goal": float(depth * e + seed)}
        for run, depth in (("a", 4), ("b", 8)) for seed in (0, 1) for e in range(8)
    ]
    table = pd.DataFrame(rows)
    per_seed = scores.table_scores(table, ["depth"], window=5)
    # depth 4, seed 0: mean of 4·e over e = 3..7 = 20; seed 1 adds 1.
    assert list(per_seed["value"]) == [20.0, 21.0, 40.0, 41.0]
    final = final_performance(table, by=["depth"])  # default: the last 5 (crl.scores)
    assert list(final["mean"]) == [20.5, 40.5]
    assert list(final_performance(table, by=["depth"], final_epochs=1)["mean"]) == [28.5, 56.5]


def test_eval_epochs_are_every_kth_and_the_last():
    assert [e for e in range(7) if scores.is_eval_epoch(e, 3, 7)] == [2, 5, 6]
    assert [e for e in range(4) if scores.is_eval_epoch(e, 1, 4)] == [0, 1, 2, 3]


def test_scores_skip_epochs_that_were_not_evaluated():
    """With --eval-every k the rows between evaluations have no metric: the score is the mean
    of the last `window` evaluations, not of the last `window` epochs."""
    rows = [
        {"epoch": e, "seed": 0, **({"eval/time_at_goal": float(e)} if e % 2 else {})}
        for e in range(8)
    ]
    assert scores.scores_per_seed(rows, [0], window=2) == [6.0]  # epochs 5 and 7
    table = pd.DataFrame([{"run": "a", "depth": 4, "env_steps": 10 * r["epoch"], **r} for r in rows])
    per_seed = scores.table_scores(table, ["depth"], window=2)
    assert list(per_seed["value"]) == [6.0] and list(per_seed["env_steps"]) == [70]
