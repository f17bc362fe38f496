"""Experiments: seeds vmapped in one program, resumable depth sweeps and their tidy table,
collector/learner separation, ablation grids. Tiny sizes (point_u, width 16, depth 4–8)."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pandas as pd
import pytest

import crl.run
from crl.agent import CRLAgent
from crl.cli import main as cli_main
from crl.config import ConfigError, TrainConfig
from crl.run import train
from crl.run_dir import SUMMARY_FILE, load_metrics
from crl.train import Trainer
from experiments import ablations, collector_learner, depth_sweep
from experiments.collector_learner import AgentGroup, make_group_trainer
from experiments.depth_sweep import KEY_COLUMNS, depth_grid, run_sweep
from experiments.plots import critical_depth, final_performance


def tiny_config(out_dir, **changes) -> TrainConfig:
    """Two epochs of two iterations: 4 envs × 10 steps, 2 updates of batch 16 each."""
    base = TrainConfig(
        env="point_u", width=16, depth=4, num_envs=4, unroll_length=10, episode_length=20,
        batch_size=16, num_sgd_batches=2, replay_size=100, min_replay_size=20, num_epochs=2,
        total_env_steps=240, num_eval_envs=4, out_dir=str(out_dir),
    )
    return dataclasses.replace(base, **changes)


# ---- seeds in one program ----------------------------------------------------------------------
def test_vmapped_seeds_match_single_seed_runs(tmp_path):
    together = train(tiny_config(tmp_path, num_seeds=2, seed=3, run_name="together"), quiet=True)
    alone = train(tiny_config(tmp_path, num_seeds=1, seed=4, run_name="alone"), quiet=True)
    vmapped = load_metrics(together["run_dir"])
    single = load_metrics(alone["run_dir"])
    vmapped = vmapped[vmapped["seed"] == 4].reset_index(drop=True)
    assert len(vmapped) == len(single) == 2
    metric_columns = [c for c in single.columns if c.startswith(("train/", "eval/"))]
    assert "train/critic_loss" in metric_columns and "eval/time_at_goal" in metric_columns
    # The two programs round differently (~1e-6), which can flip a near-tied argmax: accuracy,
    # a count, may differ by one row of the batches an epoch averages (1 / (16 × 4)).
    config = tiny_config(tmp_path)
    one_row = 1 / (config.batch_size * config.num_sgd_batches * 2)
    for column in metric_columns + ["epoch", "env_steps"]:
        atol = one_row + 1e-6 if column.endswith("categorical_accuracy") else 1e-5
        np.testing.assert_allclose(vmapped[column], single[column], rtol=1e-4, atol=atol, err_msg=column)


# ---- depth sweep -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A finished 2-point sweep (depth 4 and 8, two vmapped seeds each)."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "tiny"
    base = tiny_config(sweep_dir, num_seeds=2)
    points = depth_grid(depths=(4, 8))
    table = run_sweep(base, points, sweep_dir, quiet=True)
    return base, points, sweep_dir, table


def test_sweep_table_is_tidy(tiny_sweep):
    base, points, sweep_dir, table = tiny_sweep
    assert list(table.columns[: len(KEY_COLUMNS)]) == KEY_COLUMNS
    assert len(table) == len(points) * base.num_seeds * base.num_epochs
    assert not table.duplicated(["run", "seed", "epoch"]).any()
    assert sorted(table["depth"].unique()) == [4, 8]
    assert set(table["seed"]) == {0, 1}
    assert (table.groupby("depth")["num_params"].first().diff().dropna() > 0).all()
    on_disk = pd.read_csv(sweep_dir / depth_sweep.RESULTS_FILE)
    assert list(on_disk.columns) == list(table.columns) and len(on_disk) == len(table)
    final = final_performance(table, by=["depth"])
    assert list(final["n"]) == [2, 2] and final["sem"].notna().all()


def test_sweep_resume_skips_finished_and_retrains_partial(tiny_sweep, monkeypatch):
    base, points, sweep_dir, table = tiny_sweep
    trained = []
    monkeypatch.setattr(crl.run, "train", lambda config, **kw: trained.append(config.run_name))
    again = run_sweep(base, points, sweep_dir, quiet=True)
    assert trained == []
    pd.testing.assert_frame_equal(again, table)

    # an interrupted run (no summary) is trained again; the finished one is still skipped
    (sweep_dir / "runs" / points[1].name / SUMMARY_FILE).unlink()
    monkeypatch.undo()
    again = run_sweep(base, points, sweep_dir, quiet=True)
    assert sorted(again["run"].unique()) == sorted(p.name for p in points)
    assert len(again) == len(table)


def test_sweep_refuses_a_changed_config_in_the_same_directory(tiny_sweep):
    base, points, sweep_dir, _ = tiny_sweep
    with pytest.raises(ConfigError, match="different config"):
        run_sweep(dataclasses.replace(base, batch_size=8), points, sweep_dir, quiet=True)


def test_sharding_splits_the_grid_exactly_once():
    points = depth_grid(depths=(4, 8, 16, 32, 64), widths=(32, 64))
    shards = [depth_sweep.shard(points, i, 3) for i in range(3)]
    assert sorted(p.name for s in shards for p in s) == sorted(p.name for p in points)
    with pytest.raises(ConfigError, match="shard_index"):
        depth_sweep.shard(points, 3, 3)


def test_grid_axes_and_names():
    grid = depth_grid(depths=(4, 1024), widths=(32, 64), batch_sizes=(128,))
    assert [p.name for p in grid] == [
        "base_d4_w32_b128", "base_d4_w64_b128", "base_d1024_w32_b128", "base_d1024_w64_b128"
    ]
    actor_critic = depth_grid(depths=(4, 8), critic_depths=(16,))
    assert [p.overrides for p in actor_critic] == [
        {"actor_depth": 4, "critic_depth": 16}, {"actor_depth": 8, "critic_depth": 16}
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--depths", "4", "6"], "depths"),
        (["--depth", "8"], "depth: set by the sweep"),
        (["--shard-index", "2", "--num-shards", "2"], "shard_index"),
        (["--env", "nope"], "env"),
    ],
)
def test_sweep_cli_bad_input_is_one_line_error(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["sweep", "--sweep-dir", str(tmp_path / "s"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_critical_depth_is_the_biggest_jump():
    final = pd.DataFrame({"depth": [4, 8, 16, 32], "mean": [1.0, 2.0, 30.0, 31.0]})
    assert critical_depth(final) == 16
    assert critical_depth(final.assign(mean=[4.0, 3.0, 2.0, 1.0])) is None
    # a jump within twice its standard error is noise, not a critical depth
    assert critical_depth(final.assign(sem=[1.0, 1.0, 15.0, 15.0])) is None
    assert critical_depth(final.assign(sem=[0.5, 0.5, 5.0, 5.0])) == 16


# ---- collector / learner -----------------------------------------------------------------------
def changed(before, after) -> bool:
    """Whether any leaf of two same-structure pytrees differs."""
    return any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


class NeverActs(CRLAgent):
    """A learner that fails the test if training ever asks it for an action."""

    def act(self, *args, **kwargs):
        raise AssertionError("a learner acted in the environment")


def test_learners_train_on_collector_data_only(tmp_path):
    config = tiny_config(tmp_path, depth=4)
    trainer = make_group_trainer(config, learner_depths=(8, 4))
    group = trainer.agent
    guarded = AgentGroup(
        collector=group.collector,
        learners=tuple(NeverActs(**{f.name: getattr(a, f.name) for f in dataclasses.fields(a)})
                       for a in group.learners),
    )
    trainer = dataclasses.replace(trainer, agent=guarded)
    rng = jax.random.PRNGKey(7)
    start = jax.jit(trainer.init)(rng)
    end, metrics = jax.jit(trainer.run_epoch)(start)

    # learners learn: every learner's parameters moved, and they report their own losses
    for before, after in zip(start.agent.learners, end.agent.learners):
        assert changed(before.actor_params, after.actor_params)
        assert changed(before.critic_params, after.critic_params)
    assert {"learner0/critic_loss", "learner1/critic_loss", "critic_loss"} <= set(metrics)

    # the buffer holds exactly what the collector, training alone from the same key, collects
    alone: Trainer = dataclasses.replace(trainer, agent=group.collector)
    alone_start = jax.jit(alone.init)(rng)
    alone_end, _ = jax.jit(alone.run_epoch)(alone_start)
    assert int(end.env_steps) == int(alone_end.env_steps)
    for key in ("state", "action", "step"):
        np.testing.assert_allclose(end.replay.data[key], alone_end.replay.data[key], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        jax.tree.leaves(end.agent.collector.critic_params)[0],
        jax.tree.leaves(alone_end.agent.critic_params)[0], rtol=1e-4, atol=1e-5,
    )


@pytest.mark.slow
def test_collector_learner_two_by_two_table(tmp_path):
    out_dir = tmp_path / "cl"
    base = tiny_config(out_dir, num_seeds=2)
    table = collector_learner.run_experiment(base, (8, 4), (8, 4), out_dir, quiet=True)
    assert list(table.columns[: len(KEY_COLUMNS)]) == KEY_COLUMNS
    assert {"collector_depth", "train/critic_loss"} <= set(table.columns)
    # per collector depth: the collector and two learners × 2 seeds × 2 epochs
    assert len(table) == 2 * 3 * 2 * 2
    learners = table[table["role"] == "learner"]
    assert sorted(set(zip(learners["collector_depth"], learners["depth"]))) == [(4, 4), (4, 8), (8, 4), (8, 8)]
    collectors = table[table["role"] == "collector"]
    assert (collectors["depth"] == collectors["collector_depth"]).all()
    # every agent of a run sees the same env-step count (only the collector steps the env)
    assert (table.groupby(["run", "epoch"])["env_steps"].nunique() == 1).all()
    # rerun: both collector depths are finished, nothing is retrained
    again = collector_learner.run_experiment(base, (8, 4), (8, 4), out_dir, quiet=True)
    assert len(again) == len(table)
    summary = json.loads((out_dir / "runs" / "collector_d8" / SUMMARY_FILE).read_text())
    assert set(summary["time_at_goal"]) == {"collector_d8", "learner_d8", "learner_d4"}


def test_collector_learner_refuses_diagnostics_before_training(tmp_path):
    base = dataclasses.replace(tiny_config(tmp_path), diagnostics_every=1)
    with pytest.raises(ConfigError, match="diagnostics_every"):
        collector_learner.run_experiment(base, (8, 4), (8, 4), tmp_path / "cl", quiet=True)
    assert not (tmp_path / "cl").exists()


# ---- ablations ---------------------------------------------------------------------------------
def test_ablation_grids(tmp_path):
    base = tiny_config(tmp_path, width=32)
    residual = ablations.ablation_grid("residual", base, (4, 8))
    assert [(p.variant, p.overrides) for p in residual] == [
        ("full", {"depth": 4}), ("full", {"depth": 8}),
        ("no_residual", {"depth": 4, "residual": False}), ("no_residual", {"depth": 8, "residual": False}),
    ]
    relu = ablations.ablation_grid("activation", base, (4,))
    assert relu[1].overrides == {"depth": 4, "activation": "relu"}
    assert len(ablations.ablation_grid("actor_critic", base, (4, 8))) == 4
    with pytest.raises(ConfigError, match="unknown ablation"):
        ablations.ablation_grid("dropout", base, (4,))


def test_width_vs_depth_matches_parameter_counts(tmp_path):
    base = tiny_config(tmp_path, width=32)
    grid = ablations.ablation_grid("width_vs_depth", base, (4, 16))
    deep = [p for p in grid if p.variant == "deeper"]
    wide = [p for p in grid if p.variant == "wider"]
    assert [p.overrides["depth"] for p in deep] == [4, 16]
    assert all(p.overrides["depth"] == 4 for p in wide)
    target = depth_sweep.count_parameters(dataclasses.replace(base, depth=16))
    matched = depth_sweep.count_parameters(dataclasses.replace(base, **wide[-1].overrides))
    assert wide[-1].overrides["width"] > base.width
    assert abs(matched - target) / target < 0.05
