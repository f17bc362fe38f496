"""Environment throughput: env-steps per second of `num_envs` batched envs stepping under a
jitted `lax.scan` with uniform random actions (auto-resets included), in unrolls of
`unroll_length` steps as training collects them.

    python -m experiments.env_speed --env-names point_open point_u --num-envs 1024 4096
    python -m experiments.env_speed --reset-share --env-names ant humanoid --num-envs 128

`--reset-share` times, in one run, four ways of stepping the same batch: `physics` (no
auto-reset at all: the floor), `vmap` (`jax.vmap(env.step)`, a reset computed for every env on
every step), `unnamed` (`envs.vector.step` under an unnamed seed vmap: its reset branch becomes
a select, as in training before the seed axis was named) and `vector` (what training runs), and
prints the share of each one's time spent beyond the physics floor. The four are compiled
first and then timed in interleaved rounds (best of `repeats`), so that a slow window of a
shared machine hits all of them alike. Like training, the rollout is vmapped over `num_seeds`
seeds (`crl.train.over_seeds`).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

import envs
from crl.train import SEED_AXIS
from envs import vector

STEPPINGS = ("physics", "vmap", "unnamed", "vector")


def compile_rollout(
    env_name: str,
    num_envs: int,
    num_steps: int,
    seed: int = 0,
    stepping: str = "vector",
    unroll_length: int = 62,
    num_seeds: int = 1,
) -> dict:
    """Compile `num_steps` batched steps (in unrolls of `unroll_length`) of `num_envs` copies of
    `env_name` for each of `num_seeds` vmapped seeds, stepped as `stepping` says (see the module
    docstring), and run it once (first-run allocations).

    Returns a dict with env, num_envs, num_seeds, num_steps, stepping, compile_seconds (trace +
    XLA compile), and under "run" a function `run(i)` that times the i-th fresh rollout (s).
    """
    if min(num_envs, num_steps, unroll_length, num_seeds) < 1:
        raise ValueError(
            "num_envs, num_steps, unroll_length and num_seeds must be >= 1, got "
            f"{num_envs}, {num_steps}, {unroll_length}, {num_seeds}"
        )
    if stepping not in STEPPINGS:
        raise ValueError(f"stepping must be one of {STEPPINGS}, got {stepping!r}")
    env = envs.make(env_name)
    num_unrolls = max(1, num_steps // unroll_length)
    num_steps = num_unrolls * unroll_length

    def step(state, spares, action):
        if stepping in ("vector", "unnamed"):
            return vector.step(env, state, action, spares, SEED_AXIS)
        if stepping == "vmap":
            return jax.vmap(env.step)(state, action), spares
        return jax.vmap(env.step_without_reset)(state, action), spares

    def unroll(state, key):
        spares = None
        if stepping in ("vector", "unnamed") and vector.uses_spares(env):
            state, spares = vector.prepare_spares(env, state)

        def body(carry, sub):
            state, spares = carry
            action = jax.random.uniform(sub, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
            state, spares = step(state, spares, action)
            return (state, spares), state.metrics["at_goal"].mean()

        keys = jax.random.split(key, unroll_length)
        (state, _), at_goal = jax.lax.scan(body, (state, spares), keys)
        return state, at_goal.mean()

    def rollout(rng: jax.Array) -> tuple[envs.EnvState, jax.Array]:
        reset_rng, action_rng = jax.random.split(rng)
        state = jax.vmap(env.reset)(jax.random.split(reset_rng, num_envs))
        state, at_goal = jax.lax.scan(unroll, state, jax.random.split(action_rng, num_unrolls))
        return state, at_goal.mean()  # outputs keep every step live under XLA's DCE

    # Seeds vmapped as in training; `unnamed` leaves the axis unnamed (vector.any_finished then
    # cannot reduce over it).
    seeds = jax.vmap(rollout, axis_name=None if stepping == "unnamed" else SEED_AXIS)
    rng = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    start = time.perf_counter()
    compiled = jax.jit(seeds).lower(rng).compile()
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(rng))  # warm-up: first-run allocations

    def run(i: int) -> float:
        key = jax.vmap(jax.random.fold_in, (0, None))(rng, i + 1)
        start = time.perf_counter()
        jax.block_until_ready(compiled(key))
        return time.perf_counter() - start

    return {
        "env": env_name, "num_envs": num_envs, "num_seeds": num_seeds, "num_steps": num_steps,
        "stepping": stepping, "compile_seconds": compile_seconds, "run": run,
    }


def time_interleaved(rollouts: list[dict], repeats: int) -> list[dict]:
    """Time compiled rollouts in `repeats` rounds, each round running every one of them once, so
    that a slow window of a shared machine hits all of them alike; keeps the best run of each.
    Returns rows with run_seconds and steps_per_second (the "run" function dropped)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best = [float("inf")] * len(rollouts)
    for i in range(repeats):
        for j, rollout in enumerate(rollouts):
            best[j] = min(best[j], rollout["run"](i))
    rows = []
    for rollout, run_seconds in zip(rollouts, best):
        row = {k: v for k, v in rollout.items() if k != "run"}
        row["run_seconds"] = run_seconds
        row["steps_per_second"] = row["num_seeds"] * row["num_envs"] * row["num_steps"] / run_seconds
        rows.append(row)
    return rows


def measure_env_steps_per_second(
    env_name: str,
    num_envs: int,
    num_steps: int,
    seed: int = 0,
    repeats: int = 3,
    stepping: str = "vector",
    unroll_length: int = 62,
    num_seeds: int = 1,
) -> dict:
    """Compile and time one stepping (see `compile_rollout`); run_seconds is the best of
    `repeats` timed runs after one warm-up run, steps_per_second = num_seeds * num_envs *
    num_steps / run_seconds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rollout = compile_rollout(
        env_name, num_envs, num_steps, seed=seed, stepping=stepping,
        unroll_length=unroll_length, num_seeds=num_seeds,
    )
    return time_interleaved([rollout], repeats)[0]


@dataclasses.dataclass(frozen=True)
class Args:
    """Throughput table for every (env, num_envs) pair."""

    env_names: tuple[str, ...] = ("point_open", "point_u", "point_big", "point_hardest")
    num_envs: tuple[int, ...] = (1024, 4096)
    num_steps: int = 1000
    unroll_length: int = 62
    num_seeds: int = 1
    """Seeds vmapped in one program, as `crl train --num-seeds`."""
    seed: int = 0
    repeats: int = 3
    reset_share: bool = False
    """Time physics-only, vmap, unnamed and vector stepping in interleaved rounds; print the
    share of each one's time spent beyond the physics-only floor (1 - floor / run_seconds)."""


def main(args: Args) -> list[dict]:
    """Measure every pair and print a table; returns the rows."""
    from rich.console import Console
    from rich.table import Table

    for name in args.env_names:
        envs.check_name(name)  # fail on a typo before compiling anything
    steppings = STEPPINGS if args.reset_share else ("vector",)
    table = Table(title=f"env throughput on {jax.devices()[0].platform} ({args.num_steps} steps)")
    columns = ["env", "num_envs", "stepping", "compile s", "run s", "env-steps/s"]
    if args.reset_share:
        columns.append("beyond physics")
    for column in columns:
        table.add_column(column, justify="right")
    rows = []
    console = Console()
    for name in args.env_names:
        for num_envs in args.num_envs:
            rollouts = [
                compile_rollout(
                    name, num_envs, args.num_steps, seed=args.seed, stepping=stepping,
                    unroll_length=args.unroll_length, num_seeds=args.num_seeds,
                )
                for stepping in steppings
            ]
            pair_rows = time_interleaved(rollouts, args.repeats)
            floor = pair_rows[0]["run_seconds"] if args.reset_share else None
            for row in pair_rows:
                if floor is not None:
                    row["share_beyond_physics"] = 1.0 - floor / row["run_seconds"]
                rows.append(row)
                cells = [
                    name, str(num_envs), row["stepping"], f"{row['compile_seconds']:.2f}",
                    f"{row['run_seconds']:.3f}", f"{row['steps_per_second']:.3g}",
                ]
                if args.reset_share:
                    cells.append(f"{100 * row['share_beyond_physics']:+.1f}%")
                table.add_row(*cells)
                console.log(" ".join(cells))  # as it comes: slow envs take minutes each
    console.print(table)
    return rows


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
