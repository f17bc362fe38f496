"""experiments.env_table measures an env in a fresh process that imports the given tree's envs,
and refuses names no tree registers (no timing assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import env_table

REPO = str(Path(__file__).resolve().parents[1])


def test_env_table_row_comes_from_the_trees_own_envs(tmp_path):
    args = env_table.Args(trees=(REPO,), env_names=("point_snake3",), num_envs=2, num_steps=5,
                          num_eval_envs=3, out=str(tmp_path / "table.json"))
    (row,) = env_table.main(args)
    assert row["envs_file"] == str(Path(REPO) / "envs" / "__init__.py")
    assert row["eval_env"] == "point_snake3_eval"  # the paper's evaluation layout
    assert row["env_steps_per_s"] > 0
    # A random policy's time at goal: between 0 and one episode.
    assert 0 <= row["random_time_at_goal"] <= row["episode_length"]
    assert "| point_snake3 |" in env_table.markdown([row], args.trees)
    assert (tmp_path / "table.json").stat().st_size > 0


def test_env_table_refuses_unknown_envs_and_trees(tmp_path):
    with pytest.raises(SystemExit, match="no tree registers"):
        env_table.main(env_table.Args(trees=(REPO,), env_names=("nope",)))
    with pytest.raises(SystemExit, match="not a crl source tree"):
        env_table.main(env_table.Args(trees=(str(tmp_path),)))
