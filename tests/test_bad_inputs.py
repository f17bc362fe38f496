"""Bad input and damaged files (issue 14): every bad value ends in one ConfigError line that
names the field (Python API and CLI), configs that cannot fit are refused before compiling and
before a run directory exists, and damaged run files are recovered from the checkpoints' own
record or refused in one line. Training runs are tiny (point_u, 2 envs, 20-step episodes)."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

import crl.memory
from crl import checkpoint, cli, guard
from crl.checkpoint import CheckpointError, StorageError
from crl.config import ConfigError, TrainConfig, validate
from crl.run import train

TINY = TrainConfig(
    env="point_u", num_envs=2, episode_length=20, width=16, depth=4, unroll_length=10,
    min_replay_size=20, replay_size=100, batch_size=16, num_sgd_batches=1, total_env_steps=100,
    num_epochs=3, num_eval_envs=2, keep_checkpoints=2,
)
GIB = 2**30
HUGE_ENVS = {"num_envs": 100_000_000, "total_env_steps": 2**31 - 1}


@pytest.fixture(autouse=True)
def sixteen_gib(monkeypatch):
    """The memory check sees a 16 GiB machine, so the refusals do not depend on the host."""
    monkeypatch.setattr(crl.memory, "available_bytes", lambda: (16 * GIB, "test RAM"))


# ---- the Python API: (changes, field named first, text in the message) -------------------------
BAD = [
    # wrong types (the API gets no parsing; bool is not an int, an int is not a bool)
    ({"depth": "8"}, "depth", "must be an int"),
    ({"env": None}, "env", "must be a string, got None"),
    ({"activation": "tanh"}, "activation", "one of 'swish', 'relu'"),
    ({"seed": 1.5}, "seed", "must be an int"),
    ({"batch_size": 64.0}, "batch_size", "must be an int"),
    ({"width": True}, "width", "must be an int, got True"),
    ({"residual": "no"}, "residual", "must be a bool, got 'no'"),
    ({"layer_norm": 1}, "layer_norm", "must be a bool"),
    ({"remat": "yes"}, "remat", "must be a bool"),
    ({"multi_skip": 0}, "multi_skip", "must be a bool"),
    ({"checkpoint_replay": "false"}, "checkpoint_replay", "must be a bool"),
    ({"matmul_dtype": "float16"}, "matmul_dtype", "'float32', 'bfloat16'"),
    ({"num_envs": "64"}, "num_envs", "must be an int"),
    ({"discount": "0.99"}, "discount", "must be a float"),
    ({"actor_lr": None}, "actor_lr", "must be a float"),
    ({"isotropy_weight": "0.1"}, "isotropy_weight", "must be a float"),
    ({"audit_churn_rises": 1.0}, "audit_churn_rises", "must be an int"),
    ({"episode_length": 20.5}, "episode_length", "an int or None"),
    ({"num_devices": "all"}, "num_devices", "an int or None"),
    ({"logger": "jsonl"}, "logger", "a tuple of"),
    ({"logger": ("jsonl", "mlflow")}, "logger", "a tuple of"),
    ({"wandb_mode": "sometimes"}, "wandb_mode", "'online', 'offline', 'disabled'"),
    ({"out_dir": None}, "out_dir", "must be a string"),
    ({"run_name": 5}, "run_name", "a string or None"),
    ({"wandb_project": 3}, "wandb_project", "must be a string"),
    # non-finite floats
    ({"critic_lr": math.inf}, "critic_lr", "finite"),
    ({"actor_lr": math.nan}, "actor_lr", "finite"),
    ({"discount": math.nan}, "discount", "finite"),
    ({"target_entropy_scale": -math.inf}, "target_entropy_scale", "finite"),
    ({"logsumexp_penalty": math.inf}, "logsumexp_penalty", "finite"),
    ({"isotropy_weight": math.inf}, "isotropy_weight", "finite"),
    ({"divergence_threshold": math.nan}, "divergence_threshold", "finite"),
    ({"divergence_threshold": 0.0}, "divergence_threshold", "> 0"),
    # ranges
    ({"seed": 99_999_999_999}, "seed", "in [0, 2147483647]"),
    ({"seed": -1}, "seed", "in [0, 2147483647]"),
    ({"seed": 2**31 - 1, "num_seeds": 2}, "seed", "exceed 2147483647"),
    ({"num_seeds": 0}, "num_seeds", ">= 1"),
    ({"num_epochs": 0}, "num_epochs", ">= 1"),
    ({"num_envs": 0}, "num_envs", ">= 1"),
    ({"unroll_length": 0}, "unroll_length", ">= 1"),
    ({"batch_size": 1}, "batch_size", ">= 2"),
    ({"num_sgd_batches": 0}, "num_sgd_batches", ">= 1"),
    ({"replay_size": 0}, "replay_size", ">= 1"),
    ({"min_replay_size": 2}, "min_replay_size", ">= 3"),
    ({"width": 0}, "width", ">= 1"),
    ({"width": -5}, "width", ">= 1"),
    ({"repr_size": -1}, "repr_size", ">= 1"),
    ({"depth": 0}, "depth", "multiple of 4"),
    ({"actor_depth": 3}, "actor_depth", "multiple of 4"),
    ({"episode_length": 1}, "episode_length", ">= 2"),
    ({"discount": 1.0}, "discount", "in (0, 1)"),
    ({"discount": 0}, "discount", "in (0, 1)"),
    ({"actor_lr": 0.0}, "actor_lr", "> 0"),
    ({"alpha_lr": -1e-3}, "alpha_lr", "> 0"),
    ({"logsumexp_penalty": -0.1}, "logsumexp_penalty", ">= 0"),
    ({"diagnostics_every": -1}, "diagnostics_every", ">= 0"),
    ({"checkpoint_every": -1}, "checkpoint_every", ">= 0"),
    ({"keep_checkpoints": 0}, "keep_checkpoints", ">= 1"),
    ({"num_eval_envs": 0}, "num_eval_envs", ">= 1"),
    ({"total_env_steps": 2**40}, "total_env_steps", "int32"),
    ({"env": "point_uu"}, "env", "unknown env 'point_uu'"),
    # run directory outside out_dir
    ({"run_name": "../x"}, "run_name", "single directory name"),
    ({"run_name": "a/b"}, "run_name", "single directory name"),
    ({"run_name": ""}, "run_name", "single directory name"),
    ({"run_name": ".."}, "run_name", "single directory name"),
]
# Cannot fit on the 16 GiB test machine: refused with the estimate. The CPU preset is the
# base, as in the report.
MEMORY_BAD = [
    ({"width": 1_000_000}, "width", "GiB per device but test RAM is 16.0 GiB"),
    (HUGE_ENVS, "num_envs", "the largest part is replay"),
    ({"num_envs": 100_000_000}, "num_envs", "GiB per device"),
    ({"num_seeds": 100_000}, "num_seeds", "GiB per device"),
    ({"replay_size": 1_000_000_000}, "replay_size", "GiB per device"),
    ({"episode_length": 100_000_000}, "episode_length", "the largest part is eval_episode"),
    ({"num_eval_envs": 100_000_000}, "num_eval_envs", "GiB per device"),
    ({"width": 100_000, "depth": 1024}, "width", "the largest part is parameters"),
]


def _id(changes: dict) -> str:
    return ",".join(f"{k}={v!r}"[:40] for k, v in changes.items())


@pytest.mark.parametrize("changes, field, text", BAD, ids=[_id(c) for c, _, _ in BAD])
def test_bad_value_is_one_config_error_naming_the_field(changes, field, text):
    with pytest.raises(ConfigError) as error:
        validate(dataclasses.replace(TINY, **changes))
    message = str(error.value)
    assert message.startswith(field) and text in message and "\n" not in message, message


@pytest.mark.parametrize("changes, field, text", MEMORY_BAD, ids=[_id(c) for c, _, _ in MEMORY_BAD])
def test_config_that_cannot_fit_is_refused_with_the_estimate(changes, field, text):
    with pytest.raises(ConfigError) as error:
        validate(dataclasses.replace(TrainConfig(), **changes))
    message = str(error.value)
    assert message.startswith(f"{field}: this config needs at least ") and text in message, message
    assert "\n" not in message


def test_at_least_sixty_bad_inputs():
    assert len(BAD) + len(MEMORY_BAD) >= 60


@pytest.mark.parametrize("config", [None, "point_u", {"env": "point_u"}])
def test_train_refuses_what_is_not_a_config(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^config must be a TrainConfig"):
        train(config, quiet=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("changes", [{"width": 1_000_000}, HUGE_ENVS, {"run_name": "../x"}])
def test_refused_configs_leave_no_run_directory(changes, tmp_path):
    config = dataclasses.replace(TINY, out_dir=str(tmp_path / "runs"), **{"run_name": "r", **changes})
    with pytest.raises(ConfigError):
        train(config, quiet=True)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()


def test_good_values_of_other_types_still_pass(tmp_path):
    """Numpy ints, int for float, a Path out_dir, lists from JSON, inf threshold."""
    import numpy as np

    validate(dataclasses.replace(
        TINY, width=np.int64(16), discount=1 - 1e-2, actor_lr=1, out_dir=tmp_path,
        logger=["jsonl"], divergence_threshold=math.inf,
    ))
    assert dataclasses.replace(TINY, out_dir=tmp_path).out_dir == str(tmp_path)


def test_memory_estimate_grows_with_what_it_names():
    base = crl.memory.estimate_bytes(TINY)
    assert 0 < base["total"] < GIB
    assert crl.memory.estimate_bytes(dataclasses.replace(TINY, replay_size=200))["replay"] == 2 * base["replay"]
    assert crl.memory.estimate_bytes(TINY, num_devices=2)["replay"] == base["replay"] // 2
    # the default CPU preset and the paper preset fit on the 16 GiB test machine
    validate(TrainConfig())


# ---- the CLI: one line on stderr, exit code 2 ------------------------------------------------------
def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip()


def fake_run(run_dir: Path, config: TrainConfig = TINY) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config)}))
    return run_dir


CLI_CASES = [
    (["train", "--seed", "99999999999"], "seed must be in [0, 2147483647]"),
    (["train", "--width", "1000000"], "width: this config needs at least"),
    (["train", "--num-envs", "100000000", "--total-env-steps", "2147483647"], "num_envs: this config needs"),
    (["train", "--num-seeds", "100000"], "num_seeds: this config needs"),
    (["train", "--replay-size", "1000000000"], "replay_size: this config needs"),
    (["train", "--episode-length", "100000000"], "episode_length: this config needs"),
    (["train", "--num-eval-envs", "100000000"], "num_eval_envs: this config needs"),
    (["train", "--run-name", "../x"], "run_name must be a single directory name"),
    (["train", "--critic-lr", "inf"], "critic_lr must be finite"),
    (["train", "--divergence-threshold", "-1"], "divergence_threshold must be > 0"),
    (["render", "nope_env"], "unknown env 'nope_env'"),
    (["render", "point_u", "--out", "{tmp}/a.txt"], "video must end in .gif or .mp4"),
    (["render", "point_u", "--num-steps", "0", "--out", "{tmp}/a.gif"], "num_steps must be >= 1, got 0"),
    (["render", "point_u", "--width", "-5", "--out", "{tmp}/a.gif"], "width must be an int >= 1, got -5"),
    (["render", "point_u", "--out", "{tmp}/afile/a.gif"], "out: cannot write"),
    (["envs", "nope"], "unknown env 'nope'"),
    (["sweep", "--depths", "--sweep-dir", "{tmp}/sweep"], "depths: empty"),
    (["sweep", "--summarize-only", "--sweep-dir", "{tmp}/missing"], "does not exist"),
    (["sweep", "--sweep-dir", "{tmp}/afile", "--depths", "4"], "is a file, not a directory"),
    (["sweep", "--final-epochs", "0", "--sweep-dir", "{tmp}/sweep"], "final_epochs must be >= 1"),
    (["sweep", "--widths", "0", "--sweep-dir", "{tmp}/sweep"], "widths must be >= 1"),
    (["train", "--resume", "{tmp}/run", "--run-name", "x"], "run_name: --resume"),
    (["train", "--resume", "{tmp}/run", "--out-dir", "{tmp}/elsewhere"], "out_dir: --resume"),
    (["train", "--resume", "{tmp}/nothing"], "is not a run directory"),
]


@pytest.mark.parametrize("argv, text", CLI_CASES, ids=[" ".join(a[:3]) for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2(argv, text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file")
    fake_run(tmp_path / "run")
    code, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 2 and text in err and "\n" not in err, err
    assert err.startswith(f"crl {argv[0]}: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "run"]  # nothing created


def test_resume_of_a_moved_run_keeps_working_location(tmp_path):
    """A run directory moved elsewhere resumes in place: its saved out_dir is stale, not a
    conflicting request."""
    run_dir = fake_run(tmp_path / "moved" / "run", dataclasses.replace(TINY, out_dir="old", run_name="run"))
    config = checkpoint.resume_config(run_dir, None)
    assert (config.out_dir, config.run_name) == (str(run_dir.parent), "run")
    with pytest.raises(ConfigError, match=r"^run_name: --resume"):
        checkpoint.resume_config(run_dir, dataclasses.replace(TINY, out_dir="old", run_name="other"))


# ---- the divergence threshold ---------------------------------------------------------------------
def test_huge_finite_loss_counts_as_diverged():
    rows = [{"seed": 0, "train/critic_loss": 1e21, "train/actor_loss": 1.0}]
    with pytest.raises(guard.NonFiniteError, match=r"^diverged at epoch 2 — seed 0: critic_loss 1e\+21"):
        guard.check_epoch(2, rows, "no checkpoint was saved yet", divergence_threshold=1e10)
    guard.check_epoch(2, rows, "", divergence_threshold=math.inf)  # off
    guard.check_epoch(2, [{"seed": 0, "train/critic_loss": -5.0}], "", 1e10)


# ---- damaged run files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    train(dataclasses.replace(TINY, out_dir=str(out), run_name="run"), quiet=True)
    return out / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    return run_dir


def assert_consistent(run_dir: Path, reference: Path) -> None:
    """metrics.jsonl has every epoch again, metrics.csv agrees with it, and summary.json
    matches the last checkpointed epoch of the reference run."""
    jsonl = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    expected = pd.read_json(reference / "metrics.jsonl", lines=True)
    pd.testing.assert_frame_equal(jsonl, expected)
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "metrics.csv"), pd.read_csv(reference / "metrics.csv"))
    summary = json.loads((run_dir / "summary.json").read_text())
    last = expected[expected.epoch == expected.epoch.max()]
    assert summary["time_at_goal"] == pytest.approx(last["eval/time_at_goal"].mean())
    assert summary["env_steps"] == int(last.env_steps.iloc[0])
    assert not (run_dir / checkpoint.CORRUPT_DIR).exists()  # good checkpoints stay


def test_checkpoints_record_the_metrics_rows(finished_run):
    (step, meta), *_ = checkpoint.checkpoint_metas(finished_run)
    rows = pd.read_json(finished_run / "metrics.jsonl", lines=True)
    assert step == 3 and len(meta["metrics"]) == len(rows) == 3
    assert meta["resolved"]["episode_length"] == 20


@pytest.mark.parametrize("damage", ["truncated", "garbled", "deleted", "emptied"])
def test_damaged_metrics_are_rebuilt_from_the_checkpoint(damage, run_copy, finished_run):
    path = run_copy / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    if damage == "truncated":
        lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
        path.write_text("".join(lines))
    elif damage == "garbled":
        lines[0] = "\x00\x01 not json at all\n"
        path.write_text("".join(lines))
    elif damage == "deleted":
        path.unlink()
    else:
        path.write_text("")
    with pytest.warns(UserWarning, match="rebuilt from the rows recorded in checkpoint 3"):
        train(None, quiet=True, resume=run_copy)
    assert_consistent(run_copy, finished_run)


@pytest.mark.parametrize("damage", ["not json", "no config key", "wrong type", "deleted"])
def test_damaged_config_json_is_taken_from_the_checkpoint(damage, run_copy, finished_run):
    path = run_copy / "config.json"
    saved = json.loads(path.read_text())
    if damage == "not json":
        path.write_text(path.read_text()[:50])
    elif damage == "no config key":
        path.write_text("{}")
    elif damage == "wrong type":
        saved["config"]["width"] = "sixteen"
        path.write_text(json.dumps(saved))
    else:
        path.unlink()
    with pytest.warns(UserWarning, match="using the config recorded in checkpoint 3"):
        config = checkpoint.saved_config(run_copy)
    assert config == dataclasses.replace(TINY, out_dir=config.out_dir, run_name="run")


def test_edited_config_json_does_not_quarantine_good_checkpoints(run_copy, finished_run):
    path = run_copy / "config.json"
    saved = json.loads(path.read_text())
    saved["config"]["width"] = 32  # would change every parameter's shape
    path.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match=r"config.json differs .*width: 32 vs 16.*resuming with the checkpoint's"):
        train(None, quiet=True, resume=run_copy)
    assert_consistent(run_copy, finished_run)
    assert checkpoint.checkpoint_metas(run_copy)[0][0] == 3
    assert json.loads(path.read_text())["config"]["width"] == 16  # repaired for later readers


def test_all_checkpoints_damaged_is_one_line_exit_3(run_copy, capsys):
    for step in (2, 3):
        for f in (run_copy / "checkpoints" / str(step) / "state").rglob("*"):
            if f.is_file() and f.stat().st_size > 0:
                f.write_bytes(b"\x00" * f.stat().st_size)
    with pytest.warns(UserWarning):  # each damaged checkpoint is named as it is set aside
        code, err = run_cli(["train", "--resume", str(run_copy)], capsys)
    assert code == 3 and "\n" not in err, err
    assert err.startswith("crl train: error: ") and "could be loaded" in err


def test_disk_full_while_saving_is_one_line_exit_4(tmp_path, monkeypatch, capsys):
    real_save = checkpoint.Checkpointer.save

    def save(self, epoch, *args):
        if epoch == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / "2"))
        return real_save(self, epoch, *args)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    config = dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="full")
    with pytest.raises(StorageError) as error:
        train(config, quiet=True)
    message = str(error.value)
    assert message.startswith("disk full while saving checkpoint 2 in ") and "\n" not in message
    assert "resume with: crl train --resume" in message and "after epoch 0" in message


def test_read_only_run_directory_is_named(run_copy, monkeypatch, capsys):
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == run_copy else real_access(p, mode, **kw))
    code, err = run_cli(["train", "--resume", str(run_copy)], capsys)
    assert code == 4 and err == f"crl train: error: out dir not writable: {run_copy}"


@pytest.mark.slow
def test_real_write_failure_in_orbax_is_one_line_exit_4(tmp_path):
    """Files larger than RLIMIT_FSIZE fail with EFBIG inside orbax's background threads (like a
    full disk, but possible without root): one line on stderr, not orbax's tracebacks."""
    import os
    import resource
    import subprocess
    import sys

    flags = ["--env", "point_u", "--num-envs", "2", "--episode-length", "20", "--width", "16",
             "--unroll-length", "10", "--min-replay-size", "20", "--replay-size", "100",
             "--batch-size", "16", "--num-sgd-batches", "1", "--total-env-steps", "100",
             "--num-epochs", "3", "--num-eval-envs", "2"]
    limit = 100_000  # below the size of orbax's state metadata file of this config (~110 kB)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "crl", "train", *flags, "--out-dir", str(tmp_path), "--run-name", "r",
         "--compilation-cache-dir", "None"],
        preexec_fn=small_files, capture_output=True, text=True, timeout=600,
        # no compilation cache: its files would hit the limit too
        env={k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},
    )
    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stderr.strip() == (
        f"crl train: error: disk full while saving checkpoint 1 in {tmp_path / 'r'} (File too "
        f"large); no checkpoint was saved; free space, delete {tmp_path / 'r'} and start again"
    )


def test_recorded_rows_with_nan_match_the_file_without_a_warning(tmp_path):
    rows = [{"epoch": 0, "seed": 0, "diag/x": math.nan}, {"epoch": 1, "seed": 0, "diag/x": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = checkpoint.rewind_metrics(tmp_path, 2, json.loads(json.dumps(rows)))  # no warning
    assert len(kept) == 2 and math.isnan(kept[0]["diag/x"])
    assert pd.read_csv(tmp_path / "metrics.csv").shape == (2, 3)
