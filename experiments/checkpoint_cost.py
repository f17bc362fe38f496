"""Checkpoint size and save/restore time of the full training state, by network depth.

    python -m experiments.checkpoint_cost --depths 64 256 --out-dir /tmp/ckpt_cost

The state is the real TrainState of the chosen preset (parameters and Adam states of actor and
both critic encoders, α, env state, keys, counters, replay buffer) with its true shapes and
dtypes, every leaf filled with random values: mid-training parameters and Adam moments do not
compress, while a fresh init's all-zero moments would (orbax compresses), flattering the size.
Collecting a real buffer would take hours at depth 256 on a CPU. Prints a table and writes
results.csv.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import tyro

from crl import checkpoint
from crl.config import PRESETS
from crl.train import make_trainer, over_seeds


def random_like(abstract, rng: np.random.Generator):
    """A concrete array of the abstract leaf's shape and dtype with random contents."""
    if jnp.issubdtype(abstract.dtype, jnp.floating):
        return jnp.asarray(rng.standard_normal(abstract.shape), abstract.dtype)
    if abstract.dtype == jnp.bool_:
        return jnp.asarray(rng.integers(0, 2, abstract.shape).astype(bool))
    return jnp.asarray(rng.integers(0, 1000, abstract.shape), abstract.dtype)


def build_state(config):
    """A seed-vmapped TrainState (1 seed) of random values in the true shapes and dtypes."""
    trainer = make_trainer(config)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), 1)
    abstract = jax.eval_shape(over_seeds(trainer.init), keys)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda a: random_like(a, rng), abstract)


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def measure(depth: int, preset: str, include_replay: bool, repeats: int, out_dir: Path) -> dict:
    config = dataclasses.replace(PRESETS[preset], depth=depth, num_seeds=1)
    state = build_state(config)
    jax.block_until_ready(state)
    run_dir = out_dir / f"d{depth}_{'replay' if include_replay else 'noreplay'}"
    shutil.rmtree(run_dir, ignore_errors=True)
    blocking, total, restore = [], [], []
    with checkpoint.Checkpointer(run_dir, keep=1) as ckpt:
        for step in range(1, repeats + 1):
            start = time.perf_counter()
            ckpt.save(step, state, {"wall_time": 0.0, "random_time_at_goal": 0.0}, include_replay)
            blocking.append(time.perf_counter() - start)
            ckpt.wait()
            total.append(time.perf_counter() - start)
        for _ in range(repeats):
            start = time.perf_counter()
            fields, _ = ckpt.restore(ckpt.steps()[-1], state)
            jax.block_until_ready(fields)
            restore.append(time.perf_counter() - start)
    size = checkpoint.directory_size(run_dir / checkpoint.CHECKPOINT_DIR)
    return {
        "depth": depth,
        "preset": preset,
        "width": config.width,
        "replay_included": include_replay,
        "agent_mb": nbytes(state.agent) / 2**20,
        "replay_mb": nbytes(state.replay) / 2**20,
        "on_disk_mb": size / 2**20,
        "save_blocking_s": float(np.median(blocking)),
        "save_total_s": float(np.median(total)),
        "restore_s": float(np.median(restore)),
    }


@dataclass(frozen=True)
class CheckpointCostOptions:
    """Checkpoint size and save/restore time of the full training state, by network depth."""

    depths: tuple[int, ...] = (64, 256)
    preset: Literal["cpu", "paper"] = "cpu"
    repeats: int = 3
    """Saves (and restores) per case; medians are reported."""
    no_replay: bool = False
    """Also measure without the replay buffer."""
    out_dir: Path = Path("runs/checkpoint_cost")


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(CheckpointCostOptions, args=argv, prog="python -m experiments.checkpoint_cost")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for depth in args.depths:
        for include_replay in ([True, False] if args.no_replay else [True]):
            rows.append(measure(depth, args.preset, include_replay, args.repeats, args.out_dir))
            print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.3f"), flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out_dir / "results.csv", index=False)
    print(f"\n{frame.to_string(index=False, float_format='%.3f')}\n-> {args.out_dir / 'results.csv'}")


if __name__ == "__main__":
    main()
