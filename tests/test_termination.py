"""Early termination end to end, on a point maze whose episodes end at pseudo-random places
(tests/terminating_env.py): variable-length episodes in replay, first-episode evaluation, the
evaluation env (eval_env) and an exact resume."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import envs
import terminating_env
from crl.config import ConfigError, TrainConfig, validate
from crl.run import TIMING_COLUMNS, train
from crl.run_dir import load_metrics
from crl.train import Trainer, eval_env_name, make_agent, make_trainer

TINY = TrainConfig(
    env=terminating_env.NAME, num_seeds=1, total_env_steps=3 * 4 * 10 + 2 * 4 * 10, num_epochs=3,
    num_envs=4, unroll_length=10, episode_length=20, batch_size=8, num_sgd_batches=2,
    replay_size=40, min_replay_size=20, width=16, depth=4, num_eval_envs=4, checkpoint_every=1,
    keep_checkpoints=3, score_window=2,
)


@pytest.fixture
def terminating():
    with terminating_env.registered() as name:
        yield name


def test_episodes_end_early_and_replay_holds_variable_lengths(terminating):
    trainer = make_trainer(TINY)
    assert trainer.env.terminate_when_unhealthy
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    steps = np.asarray(state.replay.data["step"])  # [rows, envs]: prefill, in time order
    ends = steps[:-1][steps[1:] == 0]  # the step index of each episode's last transition
    assert len(ends) and ends.min() < TINY.episode_length - 1  # terminated before the limit


def test_evaluation_counts_only_the_first_episode(terminating):
    # Goal radius so large that every step is "at goal": time at goal = first episode's length.
    env = envs.make(terminating, episode_length=20, goal_radius=1e6)
    config = dataclasses.replace(TINY, num_eval_envs=64)
    trainer = Trainer(config=config, env=env, agent=make_agent(config, env))
    rng = jax.random.PRNGKey(3)
    metrics = jax.jit(lambda r: trainer.evaluate(None, r, random_policy=True))(rng)
    # The same rollout by hand: random actions, first done per env.
    reset_rng, action_rng = jax.random.split(rng)
    state = jax.vmap(env.reset)(jax.random.split(reset_rng, 64))
    done = []
    for step_rng in jax.random.split(action_rng, env.episode_length):
        action = jax.random.uniform(step_rng, (64, env.action_size), minval=-1, maxval=1)
        state = jax.vmap(env.step)(state, action)
        done.append(np.asarray(state.done))
    first_length = np.argmax(np.array(done), axis=0) + 1
    assert first_length.min() < env.episode_length  # some first episodes were terminated
    assert float(metrics["time_at_goal"]) == pytest.approx(first_length.mean())
    assert float(metrics["success"]) == 1.0


def test_eval_env_defaults_to_a_registered_eval_variant(terminating):
    assert eval_env_name(TrainConfig(env="point_u")) == "point_u"
    envs.registry.register("point_u_eval", "envs.point_maze:make_big")
    try:
        assert envs.registry.default_eval_env("point_u") == "point_u_eval"
        assert eval_env_name(TrainConfig(env="point_u")) == "point_u_eval"
        assert eval_env_name(TrainConfig(env="point_u", eval_env="point_open")) == "point_open"
        assert make_trainer(TrainConfig(env="point_u")).eval_env.name == "point_u_eval"
    finally:
        envs.registry.unregister("point_u_eval")
    assert eval_env_name(TrainConfig(env="point_u")) == "point_u"
    with pytest.raises(ValueError, match="already registered"):
        envs.registry.register("point_u", "envs.point_maze:make_u")


def test_eval_env_must_be_registered_and_of_the_same_sizes():
    with pytest.raises(ConfigError, match="eval_env: unknown env 'point_uu'"):
        validate(TrainConfig(eval_env="point_uu"))
    with pytest.raises(ConfigError, match="eval_env: 'arm_reach' has state_size"):
        make_trainer(TrainConfig(env="point_u", eval_env="arm_reach", episode_length=20))


def comparable(run_dir: Path) -> pd.DataFrame:
    frame = load_metrics(run_dir).drop(columns=list(TIMING_COLUMNS))
    return frame.sort_values(["epoch", "seed"]).reset_index(drop=True)


@pytest.mark.slow
def test_terminating_env_trains_and_resumes_exactly(terminating, tmp_path):
    # Its default eval env is a registered `{env}_eval` variant (here: without termination).
    with terminating_env.registered(terminating + "_eval", "envs.point_maze:make_u"):
        summary = train(dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="ref"), quiet=True)
        reference = Path(summary["run_dir"])
        resumed = tmp_path / "resumed"
        shutil.copytree(reference, resumed)
        shutil.rmtree(resumed / "checkpoints" / "3")  # as if killed after epoch 2
        again = train(None, quiet=True, resume=resumed)
    frame = comparable(resumed)
    assert list(frame.epoch) == [0, 1, 2]
    assert np.isfinite(frame.select_dtypes("number").to_numpy()).all()
    pd.testing.assert_frame_equal(comparable(reference), frame, check_exact=True)
    # The eval env is recorded; the score is the mean of the last score_window evaluations.
    config = json.loads((reference / "config.json").read_text())
    assert config["resolved"]["eval_env"] == summary["eval_env"] == terminating + "_eval"
    tag = list(frame["eval/time_at_goal"])
    assert summary["time_at_goal"] == pytest.approx(np.mean(tag[-2:]))
    assert summary["last_eval_time_at_goal"] == pytest.approx(tag[-1])
    assert again["time_at_goal"] == summary["time_at_goal"]


def test_early_termination_is_switched_from_the_config():
    from crl.train import make_env

    ant = dataclasses.replace(TINY, env="ant", episode_length=None)
    assert make_env(ant).terminate_when_unhealthy  # the references' default
    off = dataclasses.replace(ant, terminate_when_unhealthy=False)
    validate(off)
    assert not make_env(off).terminate_when_unhealthy
    assert make_env(dataclasses.replace(ant, terminate_when_unhealthy=True)).terminate_when_unhealthy
    # an env that cannot fall refuses the switch before anything is built for training
    with pytest.raises(ConfigError, match="terminate_when_unhealthy: env point_u"):
        validate(dataclasses.replace(TINY, env="point_u", terminate_when_unhealthy=False))
