"""Environment throughput: env-steps per second of `num_envs` vmapped envs stepping under a
jitted `lax.scan` with uniform random actions (auto-resets included).

    python -m experiments.env_speed --env-names point_open point_u --num-envs 1024 4096
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

import envs


def measure_env_steps_per_second(
    env_name: str, num_envs: int, num_steps: int, seed: int = 0, repeats: int = 3
) -> dict:
    """Compile and time a scan of `num_steps` batched steps of `num_envs` copies of `env_name`.

    Returns a dict with env, num_envs, num_steps, compile_seconds (trace + XLA compile),
    run_seconds (best of `repeats` timed runs after one warm-up run) and steps_per_second
    (num_envs * num_steps / run_seconds).
    """
    if num_envs < 1 or num_steps < 1 or repeats < 1:
        raise ValueError(
            f"num_envs, num_steps and repeats must be >= 1, got {num_envs}, {num_steps}, {repeats}"
        )
    env = envs.make(env_name)
    reset = jax.vmap(env.reset)
    step = jax.vmap(env.step)

    def rollout(rng: jax.Array) -> tuple[envs.EnvState, jax.Array]:
        reset_rng, action_rng = jax.random.split(rng)
        state = reset(jax.random.split(reset_rng, num_envs))

        def body(carry, _):
            state, key = carry
            key, sub = jax.random.split(key)
            action = jax.random.uniform(sub, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
            state = step(state, action)
            return (state, key), state.metrics["at_goal"].mean()

        (state, _), at_goal = jax.lax.scan(body, (state, action_rng), None, length=num_steps)
        return state, at_goal.mean()  # outputs keep every step live under XLA's DCE

    rng = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    compiled = jax.jit(rollout).lower(rng).compile()
    compile_seconds = time.perf_counter() - start

    jax.block_until_ready(compiled(rng))  # warm-up: first-run allocations
    run_seconds = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.fold_in(rng, i + 1)))
        run_seconds = min(run_seconds, time.perf_counter() - start)
    return {
        "env": env_name,
        "num_envs": num_envs,
        "num_steps": num_steps,
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
        "steps_per_second": num_envs * num_steps / run_seconds,
    }


@dataclasses.dataclass(frozen=True)
class Args:
    """Throughput table for every (env, num_envs) pair."""

    env_names: tuple[str, ...] = ("point_open", "point_u", "point_big", "point_hardest")
    num_envs: tuple[int, ...] = (1024, 4096)
    num_steps: int = 1000
    seed: int = 0
    repeats: int = 3


def main(args: Args) -> list[dict]:
    """Measure every pair and print a table; returns the rows."""
    from rich.console import Console
    from rich.table import Table

    for name in args.env_names:
        envs.check_name(name)  # fail on a typo before compiling anything
    table = Table(title=f"env throughput on {jax.devices()[0].platform} ({args.num_steps} steps)")
    for column in ("env", "num_envs", "compile s", "run s", "env-steps/s"):
        table.add_column(column, justify="right")
    rows = []
    for name in args.env_names:
        for num_envs in args.num_envs:
            row = measure_env_steps_per_second(
                name, num_envs, args.num_steps, seed=args.seed, repeats=args.repeats
            )
            rows.append(row)
            table.add_row(
                name,
                str(num_envs),
                f"{row['compile_seconds']:.2f}",
                f"{row['run_seconds']:.3f}",
                f"{row['steps_per_second']:.3g}",
            )
    Console().print(table)
    return rows


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
