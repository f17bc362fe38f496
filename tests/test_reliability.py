"""Checkpoints, exact resume after SIGKILL, damaged-checkpoint fallback, NaN guard, config
validation and determinism. Training runs use point_u with tiny nets and few iterations."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import struct

from crl import checkpoint, cli
from crl import run as crl_run
from crl.config import ConfigError, TrainConfig, validate
from crl.guard import NonFiniteError
from crl.run import train
from crl.run_dir import load_metrics
from crl.train import Trainer

REPO = Path(__file__).resolve().parent.parent
# 6 epochs × 3 iterations of 8 envs × 20 steps, 2 seeds trained together.
TINY = TrainConfig(
    env="point_u", num_seeds=2, total_env_steps=3200, num_epochs=6, num_envs=8, unroll_length=20,
    episode_length=50, batch_size=32, num_sgd_batches=4, replay_size=200, min_replay_size=40,
    width=32, depth=4, num_eval_envs=8, checkpoint_every=1, keep_checkpoints=2,
)
TIMING_COLUMNS = list(crl_run.TIMING_COLUMNS)


def tiny_flags(config: TrainConfig) -> list[str]:
    """CLI flags reproducing `config`."""
    flags = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value is None or value == getattr(TrainConfig(), field.name):
            continue
        flags += [f"--{field.name.replace('_', '-')}", str(value)]
    return flags


def comparable(run_dir: Path) -> pd.DataFrame:
    """Metrics without the timing columns, in (epoch, seed) order."""
    frame = load_metrics(run_dir).drop(columns=TIMING_COLUMNS)
    return frame.sort_values(["epoch", "seed"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted TINY run (the comparison point of the resume tests)."""
    out = tmp_path_factory.mktemp("reference")
    summary = train(dataclasses.replace(TINY, out_dir=str(out), run_name="ref"), quiet=True)
    return Path(summary["run_dir"])


# ---- validation (no compile) ------------------------------------------------------------------
BAD_CONFIGS = [
    ({"env": "point_uu"}, "env: unknown env 'point_uu'"),
    ({"depth": 6}, "depth must be a multiple of 4 in [4, 1024], got 6"),
    ({"depth": 2048}, "depth must be a multiple of 4 in [4, 1024], got 2048"),
    ({"critic_depth": 0}, "critic_depth must be a multiple of 4"),
    ({"batch_size": 4096}, "batch_size (4096) is larger than the buffer holds"),
    ({"num_devices": 2}, "num_devices must be in [1, 1]"),
    ({"num_devices": 0}, "num_devices must be in [1, 1]"),
    ({"checkpoint_every": -1}, "checkpoint_every must be >= 0"),
    ({"keep_checkpoints": 0}, "keep_checkpoints must be >= 1"),
    ({"min_replay_size": 500}, "min_replay_size (500) must be <= replay_size (200)"),
    ({"total_env_steps": 100}, "total_env_steps (100) must cover prefill"),
]


@pytest.mark.parametrize("changes, message", BAD_CONFIGS, ids=[next(iter(c)) + "=" + str(next(iter(c.values()))) for c, _ in BAD_CONFIGS])
def test_validation_errors_name_the_field(changes, message):
    with pytest.raises(ConfigError) as error:
        validate(dataclasses.replace(TINY, **changes))
    text = str(error.value)
    assert message in text and "\n" not in text
    assert text.startswith(next(iter(changes)))  # names the field first


def test_num_envs_and_batch_must_divide_over_devices(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 3)
    with pytest.raises(ConfigError, match=r"^num_envs \(8\) must be divisible by the number of devices \(3\)"):
        validate(TINY)
    with pytest.raises(ConfigError, match=r"^batch_size \(33\) must be divisible by the number of devices \(2\)"):
        validate(dataclasses.replace(TINY, num_envs=6, batch_size=32 + 1, num_devices=2))


def test_unwritable_run_directory_is_a_config_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"^out_dir: cannot write run directory"):
        train(dataclasses.replace(TINY, out_dir=str(blocker / "runs"), run_name="x"), quiet=True)


def write_fake_run(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config)}))


def test_resume_refuses_changed_fields_and_allows_harmless_ones(tmp_path):
    run_dir = tmp_path / "run"
    write_fake_run(run_dir, TINY)
    for field, value in [("batch_size", 16), ("depth", 8), ("seed", 1), ("critic_lr", 1e-3), ("env", "point_open")]:
        with pytest.raises(ConfigError, match=rf"^{field}: resumed run was trained with"):
            checkpoint.resume_config(run_dir, dataclasses.replace(TINY, **{field: value}))
    resumed = checkpoint.resume_config(run_dir, dataclasses.replace(TINY, keep_checkpoints=5, num_devices=1))
    assert resumed.keep_checkpoints == 5 and resumed.run_name == "run"
    with pytest.raises(ConfigError, match="is not a run directory"):
        checkpoint.resume_config(tmp_path / "nothing", None)


def test_cli_resume_errors_are_one_line_exit_2(tmp_path, capsys):
    run_dir = tmp_path / "run"
    write_fake_run(run_dir, TINY)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", str(run_dir), "--batch-size", "16"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crl train: error: batch_size: resumed run was trained with 32, got 16")
    assert "\n" not in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", str(run_dir)])  # a run dir without checkpoints
    assert exit_info.value.code == 3
    assert "no completed checkpoint to resume from" in capsys.readouterr().err


# ---- the checkpoint module on a toy state (fast) ------------------------------------------------
@struct.dataclass
class ToyState:
    params: dict
    replay: jax.Array
    rng: jax.Array
    step: jax.Array


def toy_state(value: float) -> ToyState:
    return ToyState(
        params={"w": jnp.full((4, 3), value), "b": jnp.arange(3.0) + value},
        replay=jnp.arange(100, dtype=jnp.int32) + int(value),
        rng=jax.random.PRNGKey(int(value)),
        step=jnp.asarray(int(value), jnp.int32),
    )


def assert_trees_equal(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checksum_sees_changes_and_swaps():
    x = jnp.arange(10.0)
    base = checkpoint.checksum_list({"x": x})
    assert checkpoint.checksum_list({"x": x.at[3].set(3.0000002)}) != base
    assert checkpoint.checksum_list({"x": x.at[2].set(3.0).at[3].set(2.0)}) != base
    assert checkpoint.checksum_list({"x": x}) == base
    assert checkpoint.checksum_list({"b": jnp.array([True, False]), "h": jnp.ones(3, jnp.bfloat16)})


def checkpoint_steps(run_dir: Path) -> list[int]:
    with checkpoint.Checkpointer(run_dir) as ckpt:  # closed: no orbax threads left behind
        return ckpt.steps()


def save_toy_steps(run_dir: Path, steps, keep=2, include_replay=True) -> checkpoint.Checkpointer:
    with checkpoint.Checkpointer(run_dir, keep=keep) as ckpt:
        for step in steps:
            ckpt.save(step, toy_state(float(step)), {"wall_time": 0.0}, include_replay)
    return checkpoint.Checkpointer(run_dir, keep=keep)


def test_keeps_last_m_and_restores_exactly(tmp_path):
    with save_toy_steps(tmp_path, [1, 2, 3]) as ckpt:
        assert ckpt.steps() == [2, 3]
        fields, meta = ckpt.restore_latest(toy_state(0.0))
        assert meta["epoch"] == 3 and meta["has_replay"]
        assert_trees_equal(ToyState(**fields), toy_state(3.0))


def test_replay_can_be_left_out(tmp_path):
    with save_toy_steps(tmp_path, [1], include_replay=False) as ckpt:
        fields, meta = ckpt.restore_latest(toy_state(0.0))
        assert "replay" not in fields and not meta["has_replay"]
        assert_trees_equal(fields["params"], toy_state(1.0).params)


def damage(step_dir: Path) -> None:
    """Overwrite every array data file of a checkpoint with garbage of the same length."""
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.stat().st_size > 0
             and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path):
    with save_toy_steps(tmp_path, [1, 2]) as ckpt:
        damage(tmp_path / "checkpoints" / "2")
        with pytest.warns(UserWarning, match="checkpoint 2 is damaged or incomplete"):
            fields, meta = ckpt.restore_latest(toy_state(0.0))
        assert meta["epoch"] == 1
        assert_trees_equal(ToyState(**fields), toy_state(1.0))
        assert ckpt.steps() == [1]  # moved aside, so step 2 can be written again
        assert len(list((tmp_path / checkpoint.CORRUPT_DIR).iterdir())) == 1


def test_checksum_catches_data_that_loads_but_is_wrong(tmp_path, monkeypatch):
    with save_toy_steps(tmp_path, [1, 2]) as ckpt:
        meta_file = next((tmp_path / "checkpoints" / "2" / "meta").glob("metadata"))
        meta = json.loads(meta_file.read_text())
        meta["checksum"][0][0] += 1  # as if a bit had flipped in the stored arrays
        meta_file.write_text(json.dumps(meta))
        with pytest.warns(UserWarning, match="checksum mismatch"):
            _, meta = ckpt.restore_latest(toy_state(0.0))
        assert meta["epoch"] == 1


def test_unfinished_write_is_ignored(tmp_path):
    save_toy_steps(tmp_path, [1]).close()
    # What a kill in the middle of orbax's write leaves behind: a temporary directory.
    partial = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "junk").write_bytes(b"\0" * 100)
    with checkpoint.Checkpointer(tmp_path, keep=2) as ckpt:
        assert ckpt.steps() == [1]
        _, meta = ckpt.restore_latest(toy_state(0.0))
        assert meta["epoch"] == 1


def test_rewind_metrics_drops_later_and_cut_rows(tmp_path):
    rows = [{"epoch": e, "seed": s} for e in range(3) for s in range(2)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 3, "se'
    (tmp_path / "metrics.jsonl").write_text(text)
    kept = checkpoint.rewind_metrics(tmp_path, 2)
    assert kept == rows[:4]
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in rows[:4])


# ---- whole runs ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_same_metrics(reference_run, tmp_path):
    summary = train(dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="again"), quiet=True)
    pd.testing.assert_frame_equal(comparable(reference_run), comparable(Path(summary["run_dir"])), check_exact=True)
    assert checkpoint_steps(reference_run) == [5, 6]


@pytest.mark.slow
def test_eval_every_skips_evaluations_and_changes_nothing_else(reference_run, tmp_path):
    """--eval-every 4 over 6 epochs evaluates at epochs 3 and 5 only (no timing is asserted):
    training rows are the reference run's, evaluated epochs have the reference's numbers (evaluation has its own
    per-epoch key and never touches training), the others have no eval/ fields, and the score
    averages the evaluations there were."""
    summary = train(
        dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="sparse", eval_every=4),
        quiet=True,
    )
    reference, sparse = comparable(reference_run), comparable(Path(summary["run_dir"]))
    evaluated = sparse["epoch"].isin([3, 5])
    eval_columns = [c for c in reference.columns if c.startswith("eval/")]
    assert sparse.loc[~evaluated, eval_columns].isna().all().all()
    pd.testing.assert_frame_equal(
        reference[evaluated].reset_index(drop=True), sparse[evaluated].reset_index(drop=True),
        check_exact=True, check_dtype=False,  # columns with NaN rows are float
    )
    pd.testing.assert_frame_equal(
        reference.drop(columns=eval_columns), sparse.drop(columns=eval_columns), check_exact=True
    )
    per_seed = [
        reference[(reference["seed"] == seed) & evaluated]["eval/time_at_goal"].mean()
        for seed in (0, 1)
    ]
    assert summary["time_at_goal_per_seed"] == pytest.approx(per_seed)


def wait_for(predicate, process: subprocess.Popen, timeout: float = 600.0) -> None:
    start = time.monotonic()
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"training exited early:\n{process.stderr.read().decode()[-3000:]}")
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out waiting for the run to reach a checkpoint")
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(reference_run, tmp_path):
    config = dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="killed")
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "crl", "train", *tiny_flags(config)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "2").is_dir(), process)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert not (run_dir / "summary.json").exists(), "the run finished before it was killed"
    done_before = {(r["epoch"], r["seed"]) for _, r in load_metrics(run_dir).iterrows()}
    assert len(done_before) < 12

    resumed = subprocess.run(
        [sys.executable, "-m", "crl", "train", "--resume", str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after" in resumed.stdout
    frame = comparable(run_dir)
    assert list(zip(frame.epoch, frame.seed)) == [(e, s) for e in range(6) for s in (0, 1)]
    pd.testing.assert_frame_equal(comparable(reference_run), frame, check_exact=True)
    wall = load_metrics(run_dir).sort_values(["epoch", "seed"]).wall_time.to_numpy()
    assert np.all(np.diff(wall[::2]) > 0)  # wall time continues across the resume
    assert pd.read_csv(run_dir / "metrics.csv").shape[0] == 12


@pytest.mark.slow
def test_resume_after_damaged_latest_checkpoint(reference_run, tmp_path):
    run_dir = tmp_path / "damaged"
    shutil.copytree(reference_run, run_dir)
    damage(run_dir / "checkpoints" / "6")
    with pytest.warns(UserWarning, match="checkpoint 6 is damaged or incomplete"):
        train(None, quiet=True, resume=run_dir)
    pd.testing.assert_frame_equal(comparable(reference_run), comparable(run_dir), check_exact=True)
    assert checkpoint_steps(run_dir) == [5, 6]


NAN_CONFIG = dataclasses.replace(TINY, num_seeds=1, num_epochs=4, total_env_steps=2240)


@pytest.mark.slow
def test_diverging_learning_rate_stops_with_clear_message(tmp_path):
    config = dataclasses.replace(NAN_CONFIG, critic_lr=1e30, out_dir=str(tmp_path), run_name="nan")
    with pytest.raises(NonFiniteError) as error:
        train(config, quiet=True)
    message = str(error.value)
    assert message.startswith("non-finite values at epoch 0 — seed 0: loss, gradients")
    assert "critic_loss" in message and "no checkpoint was saved yet" in message
    assert checkpoint_steps(tmp_path / "nan") == []


class PoisonedTrainer(Trainer):
    """Sets one entry of every critic weight to NaN before training iteration `POISON_AT`
    (0-based; 3 iterations per epoch, so inside epoch 1). Test-only."""

    POISON_AT = 5

    def train_iteration(self, state):
        poison = state.iteration >= self.POISON_AT
        critic = jax.tree.map(lambda x: jnp.where(poison, x.at[(0,) * x.ndim].set(jnp.nan), x),
                              state.agent.critic_params)
        state = state.replace(agent=state.agent.replace(critic_params=critic))
        return super().train_iteration(state)


@pytest.mark.slow
def test_nan_parameters_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    import crl.run
    from crl.train import make_agent, make_env

    def make_poisoned(config, mesh=None):
        env = make_env(config)
        return PoisonedTrainer(config=config, env=env, agent=make_agent(config, env), mesh=mesh)

    monkeypatch.setattr(crl.run, "make_trainer", make_poisoned)
    config = dataclasses.replace(NAN_CONFIG, out_dir=str(tmp_path), run_name="poisoned")
    with pytest.raises(NonFiniteError) as error:
        train(config, quiet=True)
    message = str(error.value)
    assert message.startswith("non-finite values at epoch 1 — seed 0: ")
    assert "parameters" in message and "last good checkpoint: after epoch 0" in message
    with checkpoint.Checkpointer(tmp_path / "poisoned") as ckpt:
        assert ckpt.steps() == [1]
        template = jax.eval_shape(jax.vmap(make_poisoned(config).init), jax.random.split(jax.random.PRNGKey(0), 1))
        fields, meta = ckpt.restore_latest(template)  # loads and verifies its checksum
        assert meta["epoch"] == 1
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(fields["agent"]))
