"""`crl train` end to end in a subprocess, and clear one-line errors for bad input."""

import json
import subprocess
import sys

import pandas as pd
import pytest

TINY_ARGS = [
    "--env", "point_u", "--width", "16", "--batch-size", "16", "--num-envs", "4",
    "--num-sgd-batches", "2", "--unroll-length", "10", "--min-replay-size", "20",
    "--replay-size", "100", "--total-env-steps", "160", "--num-epochs", "2",
    "--num-eval-envs", "4", "--episode-length", "20",
]


def crl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crl", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_train_writes_config_and_metrics(tmp_path):
    result = crl("train", *TINY_ARGS, "--out-dir", str(tmp_path), "--run-name", "tiny")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "tiny"
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["env"] == "point_u" and config["config"]["width"] == 16
    assert config["resolved"]["episode_length"] == 20
    metrics = pd.read_json(run / "metrics.jsonl", lines=True)
    assert list(metrics["epoch"]) == [0, 1]
    assert {"eval/time_at_goal", "train/critic_loss", "env_steps"} <= set(metrics.columns)
    assert (run / "metrics.csv").exists() and (run / "summary.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "point_uu"], "unknown env 'point_uu'. Did you mean point_u"),
        (["--depth", "6"], "depth must be a multiple of 4 in [4, 1024], got 6"),
        (["--actor-depth", "2048"], "actor_depth must be a multiple of 4"),
        (["--batch-size", "100000"], "batch_size (100000) is larger than the buffer holds"),
        (["--discount", "1.0"], "discount must be in (0, 1)"),
        (["--preset", "gpu"], "preset must be one of cpu, paper"),
    ],
)
def test_bad_input_gives_one_line_error_without_traceback(tmp_path, args, message):
    result = crl("train", *args, "--out-dir", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written, nothing compiled


def test_unknown_command_is_rejected():
    result = crl("trian")
    assert result.returncode == 2 and "unknown command 'trian'" in result.stderr
