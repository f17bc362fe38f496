"""`crl demo`: the pre-registered criterion (experiments.demo.judge) and both demonstrations
end to end through the CLI at a tiny budget (same commands, smaller flags)."""

from __future__ import annotations

import pandas as pd
import pytest

from crl.cli import main as cli_main
from crl.config import validate
from experiments import demo
from experiments.depth_sweep import RESULTS_FILE

# The tiny settings of tests/test_experiments.py and the notebook tests (point_u, not the demo's
# point_hardest, which also shows --env reaching the runs): the 2×2's programs are compiled once
# for all three and loaded from the suite's compilation cache after.
TINY_FLAGS = [
    "--env", "point_u", "--width", "16", "--num-envs", "4", "--unroll-length", "10",
    "--episode-length", "20", "--batch-size", "16", "--num-sgd-batches", "2",
    "--replay-size", "100", "--min-replay-size", "20", "--num-epochs", "2",
    "--total-env-steps", "240", "--num-eval-envs", "4", "--num-seeds", "2",
]


def final(shallow: tuple[float, float, int], deep: tuple[float, float, int]) -> pd.DataFrame:
    """A final_performance-style table: depth, mean, sem, n."""
    rows = [(4, *shallow), (16, *deep)]
    return pd.DataFrame(rows, columns=["depth", "mean", "sem", "n"])


@pytest.mark.parametrize(
    "shallow, deep, met",
    [
        ((10.0, 1.0, 5), (20.0, 1.0, 5), True),  # +10 against 2·√2 ≈ 2.8
        ((10.0, 3.0, 5), (17.0, 3.0, 5), False),  # +7 against 2·√18 ≈ 8.5
        ((20.0, 1.0, 5), (10.0, 1.0, 5), False),  # the deep net is worse
        ((10.0, 1.0, 3), (20.0, 1.0, 3), False),  # too few seeds: the search's 3 do not count
    ],
)
def test_criterion_needs_two_standard_errors_and_five_seeds(shallow, deep, met):
    verdict = demo.judge(final(shallow, deep))
    assert verdict.met is met
    assert verdict.shallow_depth == 4 and verdict.deep_depth == 16
    assert verdict.margin == pytest.approx(deep[0] - shallow[0])
    assert ("MET" if met else "NOT met") in verdict.line()


def test_criterion_refuses_a_single_depth():
    with pytest.raises(ValueError, match="two depths"):
        demo.judge(pd.DataFrame([(4, 1.0, 0.1, 5)], columns=["depth", "mean", "sem", "n"]))


def test_demo_defaults_can_meet_the_criterion():
    config = demo.DEMO_CONFIG
    validate(config)
    assert config.num_seeds >= demo.MIN_SEEDS  # fewer seeds could never meet it
    assert demo.DEMO_DEPTHS[0] == 4 and demo.DEMO_DEPTHS[-1] > 4


@pytest.mark.slow
def test_demo_commands_run_end_to_end(tmp_path, capsys):
    flags = ["--demo-dir", str(tmp_path / "demo"), "--figures-dir", str(tmp_path / "figures"),
             "--depths", "4", "8", "--quiet", *TINY_FLAGS]
    cli_main(["demo", "threshold", *flags])
    printed = capsys.readouterr().out
    assert "criterion NOT met" in printed and "(2 seeds)" in printed  # 2 seeds can never meet it
    table = pd.read_csv(tmp_path / "demo" / "threshold" / RESULTS_FILE)
    assert sorted(table["depth"].unique()) == [4, 8] and table["seed"].nunique() == 2
    assert (table["env"] == "point_u").all()
    assert (tmp_path / "figures" / "demo_threshold.png").stat().st_size > 0
    # Why: the diagnostics of the same runs (last log point), per depth × seed, and the figures.
    why = pd.read_csv(tmp_path / "demo" / "threshold" / demo.WHY_FILE)
    assert sorted(set(zip(why["depth"], why["seed"]))) == [(4, 0), (4, 1), (8, 0), (8, 1)]
    assert (why["epoch"] == 1).all()
    assert why["effective_rank/phi"].between(1, demo.DEMO_CONFIG.repr_size).all()
    assert why["effective_rank/psi"].between(1, demo.DEMO_CONFIG.repr_size).all()
    assert why["coverage/visited_fraction"].between(0, 1, inclusive="right").all()
    assert "cells" in printed and "rank φ" in printed
    for name in ("demo_threshold_why.png", "demo_coverage.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0

    cli_main(["demo", "collector-learner", *flags])
    table = pd.read_csv(tmp_path / "demo" / "collector_learner" / RESULTS_FILE)
    learners = table[table["role"] == "learner"]
    assert sorted(set(zip(learners["collector_depth"], learners["depth"]))) == [
        (4, 4), (4, 8), (8, 4), (8, 8)]
    assert (tmp_path / "figures" / "demo_collector_learner.png").stat().st_size > 0


def test_demo_refuses_bad_depths_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "threshold", "--depths", "4", "6", "--demo-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
