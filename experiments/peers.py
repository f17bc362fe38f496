"""crl against the paper's own code (wang-kevin3290/scaling-crl), side by side in one run.

Both train the same configuration on the same machine, one process at a time, from an empty
compilation cache: the same env (brax's spring ant), envs × unroll, batch, SGD steps per
iteration, iterations per epoch, width, depth (residual blocks of 4 Dense layers) and
evaluation envs. Per depth the table shows what a user sees of each:

- seconds from launch to the first metrics (the first epoch's line of the authors' train.py,
  crl's first metrics.jsonl row; both come after that epoch's evaluation);
- steady training env-steps/s: epochs after the first, evaluation excluded. The authors' code
  reports this per epoch as `training/sps` (its first epoch includes its compiles, so it is
  left out on both sides);
- the process's peak resident memory (kernel high-water mark, read until it exits);

and every crl figure as a ratio to the authors' (above 1: crl is sooner, faster, smaller).

The authors' code pins JAX 0.4.23, brax 0.10.1 and mujoco 3.2.6, so it runs from its own
virtual environment. Set up once (their README's brax patch, as a one-line sed: brax 0.10.1
calls `mjx.ncon`, which mujoco 3.2.6 no longer has):

    git clone https://github.com/wang-kevin3290/scaling-crl /tmp/peer
    python3 -m venv /tmp/peer-venv
    /tmp/peer-venv/bin/pip install numpy==1.26.4 jax==0.4.23 jaxlib==0.4.23 flax==0.7.4 \
        brax==0.10.1 mujoco==3.2.6 tyro wandb==0.17.9 wandb-osh==1.2.2 mediapy==1.2.2 scipy==1.12.0
    sed -i 's/  ncon = mjx.ncon(sys)/  ncon = mjx.make_data(sys).ncon/' \
        /tmp/peer-venv/lib/python3.*/site-packages/brax/contact.py

then, alone on the machine:

    python -m experiments.peers --peer-tree /tmp/peer --peer-python /tmp/peer-venv/bin/python \
        --depths 4 16 64
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.first_metrics import first_row, peak_resident_gib

REPO_ROOT = Path(__file__).resolve().parents[1]

# The authors' train.py prints one line per epoch:
#   epoch 3 out of 5 complete. metrics: {..., 'training/sps': 301.2, ...}
PEER_EPOCH_LINE = re.compile(
    r"^epoch (\d+) out of \d+ complete\. metrics: .*'training/sps': ([0-9.eE+-]+)"
)


@dataclasses.dataclass(frozen=True)
class Args:
    """Train crl and the authors' code on one configuration and compare them."""

    peer_tree: str
    """A checkout of wang-kevin3290/scaling-crl (the directory holding its train.py)."""
    peer_python: str
    """The Python of the virtual environment the authors' code is installed in."""
    depths: tuple[int, ...] = (4, 16, 64)
    env: str = "ant"
    """An env both register under this name (ant, humanoid, ant_u_maze, ...)."""
    num_envs: int = 32
    unroll_length: int = 62
    batch_size: int = 256
    num_sgd_batches: int = 124
    """SGD steps per iteration (124 for 32 envs × 62: one per 16 env steps, the issue's setting)."""
    min_replay_size: int = 1_000
    iterations_per_epoch: int = 3
    num_epochs: int = 3
    """At least 2: the steady figures are the epochs after the first."""
    num_eval_envs: int = 8
    crl_args: str = ""
    """More `crl train` flags, e.g. --crl-args=--no-overlap-compiles (with '=': the value starts
    with a dash); they must leave the compared configuration as it is."""
    repeats: int = 1
    """Launches per (code, depth), the order alternating; the table keeps the fastest."""
    timeout_s: float = 3600.0


def crl_command(args: Args, depth: int, out_dir: str) -> list[str]:
    """`crl train` on the compared configuration, with an empty compilation cache of its own."""
    from crl.config import TrainConfig

    prefill_unrolls = TrainConfig(min_replay_size=args.min_replay_size,
                                  unroll_length=args.unroll_length).prefill_unrolls
    total = ((prefill_unrolls + args.num_epochs * args.iterations_per_epoch)
             * args.num_envs * args.unroll_length)
    return [
        sys.executable, "-m", "crl", "train", "--env", args.env, "--depth", str(depth),
        "--num-envs", str(args.num_envs), "--unroll-length", str(args.unroll_length),
        "--batch-size", str(args.batch_size), "--num-sgd-batches", str(args.num_sgd_batches),
        "--min-replay-size", str(args.min_replay_size), "--num-epochs", str(args.num_epochs),
        "--total-env-steps", str(total), "--num-eval-envs", str(args.num_eval_envs),
        "--checkpoint-every", "0", "--out-dir", out_dir, "--run-name", "run",
        "--compilation-cache-dir", str(Path(out_dir) / "xla"), *shlex.split(args.crl_args),
    ]


def peer_command(args: Args, depth: int) -> list[str]:
    """The authors' train.py on the compared configuration, without wandb, renders or
    checkpoints. It subtracts min_replay_size × num_envs from total_env_steps before dividing
    the rest into epochs of whole iterations."""
    total = (args.min_replay_size
             + args.num_epochs * args.iterations_per_epoch * args.unroll_length) * args.num_envs
    return [
        args.peer_python, "train.py", "--env-id", args.env, "--num-envs", str(args.num_envs),
        "--unroll-length", str(args.unroll_length), "--batch-size", str(args.batch_size),
        "--num-sgd-batches-per-training-step", str(args.num_sgd_batches),
        "--min-replay-size", str(args.min_replay_size), "--num-epochs", str(args.num_epochs),
        "--total-env-steps", str(total), "--num-eval-envs", str(args.num_eval_envs),
        # Their depth counts Dense layers too; a skip every 4 layers makes blocks of 4 like crl's.
        "--critic-depth", str(depth), "--actor-depth", str(depth),
        "--critic-skip-connections", "4", "--actor-skip-connections", "4",
        "--no-track", "--no-capture-vis", "--no-checkpoint",
    ]


def peer_epochs(stdout: str) -> dict[int, float]:
    """Epoch → `training/sps` from the authors' train.py output."""
    return {int(m[1]): float(m[2]) for m in map(PEER_EPOCH_LINE.match, stdout.splitlines()) if m}


def steady_env_steps_per_second(per_epoch: dict[int, float]) -> float:
    """Env steps over training seconds of every epoch after the first (each epoch trains the
    same number of env steps, so this is the harmonic mean of the per-epoch rates)."""
    later = [sps for epoch, sps in per_epoch.items() if epoch >= 1]
    if not later:
        raise ValueError("no epoch after the first was reported; run at least 2 epochs")
    return len(later) / sum(1 / sps for sps in later)


def watch(command: list[str], cwd: str, env: dict[str, str], has_first_metrics, timeout_s: float,
          stdout_path: Path) -> dict:
    """Run `command` to its end; note when `has_first_metrics()` first holds and the process's
    peak resident memory (polled: the high-water mark only grows, so the last reading before it
    exits is its peak up to then)."""
    start = time.perf_counter()
    first_metrics_seconds, peak = None, 0.0
    with stdout_path.open("w") as stdout:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            while True:
                if first_metrics_seconds is None and has_first_metrics():
                    first_metrics_seconds = time.perf_counter() - start
                if process.poll() is not None:
                    break
                try:
                    peak = max(peak, peak_resident_gib(process.pid))
                except (FileNotFoundError, ProcessLookupError, RuntimeError):
                    pass  # exited between poll() and the read
                if time.perf_counter() - start > timeout_s:
                    raise TimeoutError(f"{command[:4]} ran past {timeout_s:.0f}s")
                time.sleep(0.1)
        finally:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n"
                           f"{stdout_path.read_text()[-3000:]}")
    return {"first_metrics_seconds": first_metrics_seconds, "peak_resident_gib": peak,
            "wall_seconds": time.perf_counter() - start}


def measure_crl(args: Args, depth: int) -> dict:
    """Train crl once at `depth`; its first-metrics time, steady env-steps/s and peak memory."""
    with tempfile.TemporaryDirectory(prefix="crl-peers-") as out_dir:
        metrics = Path(out_dir) / "run" / "metrics.jsonl"
        result = watch(
            crl_command(args, depth, out_dir), cwd=str(REPO_ROOT),
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            has_first_metrics=lambda: first_row(metrics) is not None,
            timeout_s=args.timeout_s, stdout_path=Path(out_dir) / "stdout.txt",
        )
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    per_epoch = {row["epoch"]: row["env_steps_per_second"] for row in rows}
    return {**result, "env_steps_per_second": steady_env_steps_per_second(per_epoch)}


def measure_peer(args: Args, depth: int) -> dict:
    """Train the authors' code once at `depth`; the same figures from its printed epochs."""
    with tempfile.TemporaryDirectory(prefix="crl-peers-") as out_dir:
        stdout_path = Path(out_dir) / "stdout.txt"
        result = watch(
            peer_command(args, depth), cwd=args.peer_tree,
            # Not crl's PYTHONPATH: their train.py imports its own `envs` package.
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            has_first_metrics=lambda: bool(peer_epochs(stdout_path.read_text())),
            timeout_s=args.timeout_s, stdout_path=stdout_path,
        )
        per_epoch = peer_epochs(stdout_path.read_text())
    if len(per_epoch) != args.num_epochs:
        raise RuntimeError(f"the authors' code reported {len(per_epoch)} of {args.num_epochs} epochs")
    return {**result, "env_steps_per_second": steady_env_steps_per_second(per_epoch)}


def check(args: Args) -> None:
    """Refuse bad input before anything is launched: the peer's paths, and the configuration
    as crl's own CLI and validation see it (depth, sizes, env, --crl-args)."""
    from crl.cli import parse
    from crl.config import ConfigError, validate

    if not (Path(args.peer_tree) / "train.py").is_file():
        raise SystemExit(f"--peer-tree {args.peer_tree}: no train.py (a scaling-crl checkout?)")
    if not Path(args.peer_python).is_file():
        raise SystemExit(f"--peer-python {args.peer_python}: no such file")
    if args.num_epochs < 2:
        raise SystemExit("--num-epochs must be at least 2: the first epoch holds the compiles")
    for depth in args.depths:
        try:
            validate(parse(crl_command(args, depth, tempfile.gettempdir())[3:]).config)
        except ConfigError as error:
            raise SystemExit(f"depth {depth}: crl rejects the configuration: {error}") from None


def main(args: Args) -> list[dict]:
    """Launch crl and the authors' code at every depth, one process at a time, and print one
    table with crl's figures as ratios to theirs."""
    from rich.console import Console
    from rich.table import Table

    check(args)
    console = Console()
    best: dict[tuple[str, int], dict] = {}
    for repeat in range(args.repeats):
        for depth in args.depths:
            order = ("crl", "authors") if repeat % 2 == 0 else ("authors", "crl")
            for code in order:
                measure = measure_crl if code == "crl" else measure_peer
                row = measure(args, depth)
                console.log(f"{code} depth {depth}: first metrics after "
                            f"{row['first_metrics_seconds']:.1f}s, {row['env_steps_per_second']:,.0f}"
                            f" env-steps/s, peak {row['peak_resident_gib']:.2f} GiB")
                if (code, depth) not in best or (row["env_steps_per_second"]
                                                  > best[(code, depth)]["env_steps_per_second"]):
                    best[(code, depth)] = row
    table = Table(title=f"crl vs the authors' code (scaling-crl): {args.env}, {args.num_envs} envs × "
                        f"{args.unroll_length}, batch {args.batch_size}, {args.num_sgd_batches} SGD "
                        f"steps per iteration, {args.iterations_per_epoch} iterations per epoch"
                        f"{'; crl ' + args.crl_args if args.crl_args else ''}; "
                        f"best of {args.repeats}, ratios crl / authors'")
    for column in ("depth", "first metrics s: crl", "authors'", "sooner",
                   "env-steps/s: crl", "authors'", "faster", "peak GiB: crl", "authors'", "smaller"):
        table.add_column(column, justify="right")
    rows = []
    for depth in args.depths:
        ours, theirs = best[("crl", depth)], best[("authors", depth)]
        row = {
            "depth": depth, "crl": ours, "authors": theirs,
            "sooner": theirs["first_metrics_seconds"] / ours["first_metrics_seconds"],
            "faster": ours["env_steps_per_second"] / theirs["env_steps_per_second"],
            "smaller": theirs["peak_resident_gib"] / ours["peak_resident_gib"],
        }
        rows.append(row)
        table.add_row(
            str(depth), f"{ours['first_metrics_seconds']:.1f}", f"{theirs['first_metrics_seconds']:.1f}",
            f"{row['sooner']:.2f}×", f"{ours['env_steps_per_second']:,.0f}",
            f"{theirs['env_steps_per_second']:,.0f}", f"{row['faster']:.2f}×",
            f"{ours['peak_resident_gib']:.2f}", f"{theirs['peak_resident_gib']:.2f}",
            f"{row['smaller']:.2f}×",
        )
    console.print(table)
    return rows


if __name__ == "__main__":
    import tyro

    from crl.quiet import silence_third_party

    silence_third_party()  # check() builds envs' dims: no brax/MJX notices around its errors
    main(tyro.cli(Args))
