"""Per-env fidelity figures, for one or more source trees side by side: env-steps/s of
`num_envs` batched envs under uniformly random actions, and the random policy's time at goal on
each env's evaluation env (`NAME_eval` where the tree registers one, else the env itself).

    git worktree add /tmp/before 38d6c49    # main before the paper-faithful envs (issue 10)
    XLA_FLAGS=--xla_cpu_use_fusion_emitters=false \
        python -m experiments.env_table --trees /tmp/before . --out /tmp/env_table.json

(the classic emitters: MJX physics runs ~80x slower on CPU without them).

Each (tree, env) is measured in a fresh process that imports that tree's `envs` package
(PYTHONPATH), through the registry API every version of crl has had: `envs.names`, `envs.make`,
`env.reset`, `env.step` (auto-reset; `done` and `metrics['at_goal']` describe the step taken).
Time at goal counts, per env, the steps within the goal radius of its first episode (up to and
including its first `done`: time limit or early termination), as crl's evaluation does; it is
out of the tree's own episode length, which the table prints. Trees are interleaved per env so
that a slow window of a shared machine hits both alike. Run it alone on the machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import tyro

# The worker runs as a plain script inside the measured tree: it may import only jax and `envs`.
WORKER = r"""
import json, sys, time
import jax, jax.numpy as jnp
import envs

name, num_envs, num_steps, num_eval_envs, seed = sys.argv[1], *map(int, sys.argv[2:6])
eval_name = name + "_eval" if name + "_eval" in envs.names() else name


def rollout(env, n, steps):
    def run(rng):
        reset_rng, action_rng = jax.random.split(rng)
        state = jax.vmap(env.reset)(jax.random.split(reset_rng, n))

        def body(state, key):
            action = jax.random.uniform(key, (n, env.action_size), minval=-1, maxval=1)
            state = jax.vmap(env.step)(state, action)
            return state, (state.metrics["at_goal"], state.done)

        _, (at_goal, done) = jax.lax.scan(body, state, jax.random.split(action_rng, steps))
        first = (jnp.cumsum(done, axis=0) - done) == 0  # steps of the first episode
        return jnp.sum(at_goal * first, axis=0), jnp.mean(done)

    start = time.perf_counter()
    compiled = jax.jit(run).lower(jax.random.PRNGKey(seed)).compile()
    return compiled, time.perf_counter() - start


env = envs.make(name)
speed, compile_s = rollout(env, num_envs, num_steps)
jax.block_until_ready(speed(jax.random.PRNGKey(seed + 1)))  # first-run allocations
start = time.perf_counter()
jax.block_until_ready(speed(jax.random.PRNGKey(seed + 2)))
run_s = time.perf_counter() - start

eval_env = envs.make(eval_name)
episode, _ = rollout(eval_env, num_eval_envs, eval_env.episode_length)
time_at_goal, done_fraction = jax.block_until_ready(episode(jax.random.PRNGKey(seed + 3)))
print("ROW", json.dumps({
    "env": name, "eval_env": eval_name, "envs_file": envs.__file__,
    "env_steps_per_s": num_envs * num_steps / run_s, "compile_s": compile_s,
    "obs": int(env.observation_size), "goal": int(env.goal_size),
    "episode_length": int(eval_env.episode_length),
    "random_time_at_goal": float(jnp.mean(time_at_goal)),
    "random_success": float(jnp.mean(time_at_goal > 0)),
    "done_fraction": float(done_fraction),
}))
"""


@dataclasses.dataclass(frozen=True)
class Args:
    """Measure every env of every tree; print and save one row per (tree, env)."""

    trees: tuple[str, ...] = (".",)
    """Source trees (directories holding envs/) to compare."""
    env_names: tuple[str, ...] = ()
    """Envs to measure (default: every training env of the last tree, i.e. not `*_eval`)."""
    num_envs: int = 128
    """Batched envs for env-steps/s."""
    num_steps: int = 100
    """Steps per env in the timed rollout (one `lax.scan`, auto-resets included)."""
    num_eval_envs: int = 32
    """Episodes of the random policy per env for its time at goal."""
    seed: int = 0
    timeout_s: float = 1800.0
    """Per (tree, env) measurement."""
    out: str | None = None
    """Also write the rows as JSON here."""


def tree_environment(tree: str) -> dict[str, str]:
    """This process's environment, with imports resolving to `tree`'s packages."""
    return {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}


def measure(tree: str, name: str, args: Args) -> dict:
    """One env of one tree in a fresh process; its row, or the error it died with."""
    command = [sys.executable, "-c", WORKER, name, str(args.num_envs), str(args.num_steps),
               str(args.num_eval_envs), str(args.seed)]
    result = subprocess.run(
        command, cwd=tree, capture_output=True, text=True, timeout=args.timeout_s,
        env=tree_environment(tree),
    )
    rows = [line[4:] for line in result.stdout.splitlines() if line.startswith("ROW ")]
    if result.returncode != 0 or not rows:
        return {"tree": tree, "env": name, "error": result.stderr.strip().splitlines()[-1:]}
    return {"tree": tree, **json.loads(rows[0])}


def tree_env_names(tree: str) -> list[str]:
    """The training envs (not `*_eval`) that `tree` registers."""
    listing = subprocess.run(
        [sys.executable, "-c", "import envs; print(' '.join(envs.names()))"], cwd=tree,
        capture_output=True, text=True, check=True, env=tree_environment(tree),
    )
    return [name for name in listing.stdout.split() if not name.endswith("_eval")]


def main(args: Args) -> list[dict]:
    """Measure, print a markdown table (one row per env, one column group per tree), return rows."""
    for tree in args.trees:
        if not (Path(tree) / "envs").is_dir():
            raise SystemExit(f"{tree}: not a crl source tree (no envs/ directory)")
    if min(args.num_envs, args.num_steps, args.num_eval_envs) < 1:
        raise SystemExit("num_envs, num_steps and num_eval_envs must be >= 1")
    registered = {tree: tree_env_names(tree) for tree in args.trees}
    names = list(args.env_names) or registered[args.trees[-1]]
    unknown = [name for name in names if not any(name in found for found in registered.values())]
    if unknown:
        raise SystemExit(f"no tree registers {', '.join(unknown)}")
    rows = []
    for name in names:
        for tree in args.trees:
            if name not in registered[tree]:
                continue  # an env this tree does not have
            row = measure(tree, name, args)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": dataclasses.asdict(args), "rows": rows}, indent=1))
    print(markdown(rows, args.trees))
    return rows


def markdown(rows: list[dict], trees: tuple[str, ...]) -> str:
    """env | per tree: env-steps/s, random time at goal / episode length (eval env) | and, for
    two or more trees, the last tree's env-steps/s over the first's."""
    by_key = {(row["tree"], row["env"]): row for row in rows}
    ratio = len(trees) > 1
    header = "| env | " + " | ".join(f"{t}: env-steps/s | {t}: random time at goal (eval env)" for t in trees)
    header += f" | env-steps/s {trees[-1]} / {trees[0]} |" if ratio else " |"
    lines = [header, "|---|" + "---|---|" * len(trees) + ("---|" if ratio else "")]
    for name in dict.fromkeys(row["env"] for row in rows):
        cells = []
        for tree in trees:
            row = by_key.get((tree, name))
            if row is None:
                cells += ["—", "—"]
            elif "error" in row:
                cells += ["error", " ".join(row["error"])[:60]]
            else:
                cells += [f"{row['env_steps_per_s']:.0f}",
                          f"{row['random_time_at_goal']:.1f}/{row['episode_length']} ({row['eval_env']})"]
        if ratio:
            first, last = by_key.get((trees[0], name)), by_key.get((trees[-1], name))
            both = first and last and "error" not in first and "error" not in last
            cells.append(f"{last['env_steps_per_s'] / first['env_steps_per_s']:.2f}" if both else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(tyro.cli(Args))
