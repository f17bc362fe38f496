"""experiments.peers compares like with like: both commands train the same configuration, the
authors' printed epochs are read right, and the crl side runs end to end. (The authors' code
itself needs its own virtual environment with JAX 0.4.23, so it is not run here.)"""

from __future__ import annotations

import dataclasses

import pytest

from crl.cli import parse
from crl.config import validate
from experiments import peers

ARGS = peers.Args(peer_tree="/nonexistent", peer_python="/nonexistent")

# Two lines as the authors' train.py prints them (cut short), between other output.
PEER_OUTPUT = """\
starting training....
buffer_state.data[:, envs_idxs, :].shape: (10000, 32, 43)
epoch 0 out of 3 complete. metrics: {'eval/walltime': 12.81, 'training/sps': 131.69846870028846, 'training/walltime': 45.19, 'training/actor_loss': Array(-0.78, dtype=float32)}
Time elapsed: 0.016 hours
epoch 1 out of 3 complete. metrics: {'eval/walltime': 13.39, 'training/sps': 305.0361611428819, 'training/walltime': 64.70}
epoch 2 out of 3 complete. metrics: {'eval/walltime': 13.95, 'training/sps': 3.0e2, 'training/walltime': 84.48}
"""


def peer_flags(command: list[str]) -> dict[str, str]:
    """`--flag value` pairs of the authors' command line (boolean flags map to '')."""
    flags, name = {}, None
    for word in command[2:]:
        if word.startswith("--"):
            name = word[2:]
            flags[name] = ""
        else:
            flags[name] = word
    return flags


@pytest.mark.parametrize("depth, iterations, epochs, min_replay, crl_args", [
    (4, 3, 3, 1000, ""), (64, 2, 5, 300, "--no-overlap-compiles")])
def test_both_commands_train_the_same_configuration(tmp_path, depth, iterations, epochs, min_replay,
                                                    crl_args):
    args = dataclasses.replace(ARGS, iterations_per_epoch=iterations, num_epochs=epochs,
                               min_replay_size=min_replay, crl_args=crl_args)
    config = parse(peers.crl_command(args, depth, str(tmp_path))[3:]).config
    validate(config)
    theirs = peer_flags(peers.peer_command(args, depth))

    assert config.iterations_per_epoch == iterations and config.num_epochs == epochs
    assert config.depth == depth and int(theirs["critic-depth"]) == int(theirs["actor-depth"]) == depth
    assert theirs["critic-skip-connections"] == theirs["actor-skip-connections"] == "4"  # crl's blocks
    for ours, their_name in [("env", "env-id"), ("num_envs", "num-envs"),
                             ("unroll_length", "unroll-length"), ("batch_size", "batch-size"),
                             ("num_sgd_batches", "num-sgd-batches-per-training-step"),
                             ("min_replay_size", "min-replay-size"), ("num_epochs", "num-epochs"),
                             ("num_eval_envs", "num-eval-envs")]:
        assert str(getattr(config, ours)) == theirs[their_name], ours
    # Their train.py: iterations per epoch = (total − min_replay_size × num_envs) //
    # (num_epochs × num_envs × unroll_length).
    per_iteration = config.num_envs * config.unroll_length
    their_iterations = ((int(theirs["total-env-steps"]) - min_replay * config.num_envs)
                        // (epochs * per_iteration))
    assert their_iterations == iterations
    assert {"no-track", "no-capture-vis", "no-checkpoint"} <= theirs.keys()
    # crl starts from an empty compilation cache of its own, as the authors' code does.
    assert config.compilation_cache_dir.startswith(str(tmp_path))
    assert config.overlap_compiles == (crl_args == "")


def test_the_authors_epochs_are_read_from_their_output():
    per_epoch = peers.peer_epochs(PEER_OUTPUT)
    assert per_epoch == {0: 131.69846870028846, 1: 305.0361611428819, 2: 300.0}
    # Steady: epochs after the first (its time holds the compiles), env steps over seconds.
    assert peers.steady_env_steps_per_second(per_epoch) == pytest.approx(
        2 / (1 / 305.0361611428819 + 1 / 300.0))
    with pytest.raises(ValueError, match="at least 2 epochs"):
        peers.steady_env_steps_per_second({0: 131.7})


@pytest.mark.parametrize("change, message", [
    ({}, "no train.py"),
    ({"num_epochs": 1}, "at least 2"),
    ({"depths": (4, 6)}, "depth 6: crl rejects"),
    ({"batch_size": 10**6}, "batch_size"),
    ({"env": "no_such_env"}, "no_such_env"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path, change, message):
    (tmp_path / "train.py").write_text("")
    good = dataclasses.replace(ARGS, peer_tree=str(tmp_path), peer_python=__file__)
    args = dataclasses.replace(ARGS if not change else good, **change)
    with pytest.raises(SystemExit, match=message):
        peers.check(args)
    peers.check(good)


def test_the_crl_side_runs_end_to_end():
    args = dataclasses.replace(
        ARGS, env="point_u", num_envs=4, unroll_length=10, batch_size=16, num_sgd_batches=2,
        min_replay_size=20, iterations_per_epoch=2, num_epochs=2, num_eval_envs=2,
    )
    row = peers.measure_crl(args, depth=4)
    assert 0 < row["first_metrics_seconds"] <= row["wall_seconds"]
    assert row["env_steps_per_second"] > 0
    assert row["peak_resident_gib"] > 0.1  # JAX alone holds more than that
