"""Throughput in summaries counts training env-steps over training time only (no prefill, no
compile), with evaluation reported separately."""

import pandas as pd
import pytest

from crl.config import TrainConfig
from crl.run import steady_throughput


def test_steady_throughput_excludes_prefill_and_separates_evaluation():
    config = TrainConfig(
        env="point_u", num_seeds=2, num_envs=4, unroll_length=10, total_env_steps=4 * 10 * 12,
        num_epochs=2, min_replay_size=20, replay_size=100,
    )
    per_epoch = config.iterations_per_epoch * config.env_steps_per_iteration  # per seed
    # Epoch 0 trained in 2 s (+1 s eval), epoch 1 in 1 s (+1 s eval); rows per seed repeat.
    rows = []
    for epoch, (train_s, eval_s) in enumerate([(2.0, 1.0), (1.0, 1.0)]):
        sps = 2 * per_epoch / train_s
        rows += [{"epoch": epoch, "seed": s, "env_steps": 999, "env_steps_per_second": sps,
                  "eval_seconds": eval_s} for s in (0, 1)]
    got = steady_throughput(rows, config)
    trained = 2 * 2 * per_epoch
    assert got["env_steps_per_second"] == pytest.approx(trained / 3.0)
    assert got["env_steps_per_second_with_eval"] == pytest.approx(trained / 5.0)
    assert got["eval_seconds"] == pytest.approx(2.0)


TINY_TRAIN = (
    "--env point_u --num-envs 4 --unroll-length 10 --total-env-steps 480 --num-epochs 2 "
    "--min-replay-size 20 --replay-size 100 --batch-size 16 --num-sgd-batches 2 --width 16 "
    "--num-eval-envs 2 --episode-length 20 --checkpoint-every 0"
)


def test_first_metrics_times_a_real_launch_to_its_first_row(tmp_path):
    from experiments.first_metrics import Args, main

    rows = main(Args(depths=(4,), train_args=TINY_TRAIN, variants="|--no-overlap-compiles"))
    assert [(row["tree"], row["variant"], row["depth"], row["cache"]) for row in rows] == [
        (".", "", 4, "cold"), (".", "", 4, "warm"),
        (".", "--no-overlap-compiles", 4, "cold"), (".", "--no-overlap-compiles", 4, "warm"),
    ]
    for row in rows:  # the launch includes imports (and compiles), so it outlasts the epoch
        assert 0 < row["first_epoch_seconds"] < row["first_metrics_seconds"]
        assert 0.1 < row["peak_resident_gib"] < 16  # JAX alone is ~0.2 GiB resident
        assert row["env_steps_per_second"] > 0
    # The second variant's rows carry ratios to the first's (same depth and cache).
    for first, second in zip(rows[:2], rows[2:]):
        assert first["ratios"] == {}
        assert second["ratios"]["env_steps_per_second"] == pytest.approx(
            second["env_steps_per_second"] / first["env_steps_per_second"])
        assert second["ratios"]["first_metrics_seconds"] == pytest.approx(
            first["first_metrics_seconds"] / second["first_metrics_seconds"])


def tiny_config(out_dir) -> TrainConfig:
    """TINY_TRAIN as the config `crl train` would parse from it."""
    import shlex

    import tyro

    return tyro.cli(TrainConfig, args=shlex.split(TINY_TRAIN) + ["--out-dir", str(out_dir)])


def test_summary_reports_first_metrics_and_the_random_baseline(tmp_path):
    from crl.run import train

    summary = train(tiny_config(tmp_path), quiet=True)
    assert 0 < summary["first_metrics_seconds"]
    # Computed after the first epoch now; uniform actions on 20-step episodes.
    assert 0 <= summary["random_time_at_goal"] <= 20
    assert 0.1 < summary["peak_host_memory_gib"] < 16
    assert summary["peak_device_memory_gib"] is None  # the CPU has no allocator peak


def test_compiling_one_program_at_a_time_trains_the_same_run(tmp_path):
    """--no-overlap-compiles only changes when the programs compile, never what they compute."""
    import dataclasses

    from crl.run import TIMING_COLUMNS, train
    from crl.run_dir import load_metrics

    frames = []
    for overlap in (True, False):
        run = dataclasses.replace(
            tiny_config(tmp_path), overlap_compiles=overlap, run_name=f"overlap_{overlap}"
        )
        summary = train(run, quiet=True)
        frames.append(load_metrics(summary["run_dir"]).drop(columns=list(TIMING_COLUMNS)))
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
