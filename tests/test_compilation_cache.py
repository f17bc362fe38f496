"""The persistent compilation cache: a second run with the same shapes compiles nothing."""

import dataclasses

import jax
import numpy as np
from jax.experimental.compilation_cache import compilation_cache

from crl.config import TrainConfig
from crl.run import train
from crl.run_dir import load_metrics


def test_second_identical_run_loads_every_program_from_the_cache(tmp_path):
    cache = tmp_path / "xla"
    config = TrainConfig(
        env="point_u", num_envs=4, unroll_length=10, total_env_steps=480, num_epochs=2,
        min_replay_size=20, replay_size=100, batch_size=16, num_sgd_batches=2, width=16,
        num_eval_envs=2, episode_length=20, checkpoint_every=0, out_dir=str(tmp_path),
        compilation_cache_dir=str(cache),
    )
    # Cache every program, however fast it compiles: otherwise one that took 0.9 s in the first
    # run and 1.1 s in a second (miss) run would look like a cache miss only some of the time.
    # The given directory beats JAX_COMPILATION_CACHE_DIR (set for the whole suite by conftest),
    # and the suite's cache is put back afterwards.
    suite_cache = jax.config.jax_compilation_cache_dir
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    try:
        first = train(dataclasses.replace(config, run_name="first"), quiet=True)
        written = sorted(p.name for p in cache.iterdir())
        second = train(dataclasses.replace(config, run_name="second"), quiet=True)
        after = sorted(p.name for p in cache.iterdir())
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
        jax.config.update("jax_compilation_cache_dir", suite_cache)
        compilation_cache.reset_cache()
    programs = {name.split("-")[0] for name in written}
    assert {"jit_init", "jit_run_epoch", "jit_evaluate"} <= programs, programs
    assert after == written  # every program of the second run was a cache hit
    for column in ("train/critic_loss", "eval/time_at_goal"):
        np.testing.assert_array_equal(
            load_metrics(first["run_dir"])[column], load_metrics(second["run_dir"])[column]
        )
