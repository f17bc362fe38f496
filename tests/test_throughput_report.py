"""Throughput in summaries counts training env-steps over training time only (no prefill, no
compile), with evaluation reported separately."""

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
