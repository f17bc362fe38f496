"""Time to first metrics: seconds from launching `crl train` to its first metrics row on disk,
and the process's peak resident memory up to then, for source trees side by side (e.g. a
checkout of an older commit against this one) and variants of the training flags, depths
interleaved so that a slow window of a shared machine hits every tree alike.

    python -m experiments.first_metrics --depths 4 16 64
    git worktree add /tmp/before <commit>
    python -m experiments.first_metrics --trees /tmp/before . --depths 4 16 64
    python -m experiments.first_metrics --variants='|--no-overlap-compiles' --no-warm

Each launch is a fresh process (`python -m crl train` run in the tree, so it imports that tree's
`crl` and `envs`) that is stopped once metrics.jsonl has its first row; what a newcomer waits
for — imports, env construction, compiles, prefill, one epoch and its evaluation — is all
counted. The first epoch's own wall time (training and evaluation) is printed beside it; the
difference ("before it") is the fixed cost — imports, compiles, prefill — that a shorter epoch
cannot remove. Each (tree, depth) is launched on an empty JAX compilation cache ("cold", a
first run) and again on the cache that launch filled ("warm": a rerun, a resume, another seed);
JAX_COMPILATION_CACHE_DIR points each launch at it, so trees without a cache setting of their
own use it too. Peak memory is the kernel's high-water mark of the launch's resident set
(VmHWM), read at its first metrics row: every compile, the prefill and one epoch are in it.
The first epoch's steady training throughput (its metrics row's env-steps/s, evaluation
excluded) is printed too, and every figure of a later tree or variant also as a ratio to the
first one's at the same depth and cache, so one run gives before/after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Args:
    """Launch `crl train` per (tree, depth) and time its first metrics row."""

    trees: tuple[str, ...] = (".",)
    """Source trees (directories holding crl/ and envs/) to compare."""
    depths: tuple[int, ...] = (4, 16, 64)
    train_args: str = ""
    """Extra `crl train` arguments as one string, e.g. --train-args='--env ant --num-envs 32'
    (with '=': the value starts with a dash)."""
    variants: str = ""
    """Flag sets compared side by side, separated by '|', each appended to train_args for its
    own launches: --variants='|--no-overlap-compiles' compares the defaults with one compile
    at a time."""
    repeats: int = 1
    warm: bool = True
    """After each launch on an empty compilation cache ("cold"), launch again on the cache it
    filled ("warm": what a rerun, a resume or another seed waits)."""
    timeout_s: float = 1800.0
    python: str = sys.executable


def first_row(metrics: Path) -> dict | None:
    """The first complete row of a metrics.jsonl being written, or None yet."""
    if not metrics.exists():
        return None
    line = metrics.read_text().split("\n", 1)
    if len(line) < 2:  # the first line is not finished yet
        return None
    return json.loads(line[0])


def peak_resident_gib(pid: int) -> float:
    """The kernel's high-water mark of a live process's resident set (Linux), GiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    raise RuntimeError(f"no VmHWM for process {pid}")


def time_first_metrics(tree: str, depth: int, variant: str, args: Args, cache_dir: str) -> dict:
    """Launch one training run in `tree` with the variant's flags, with JAX's compilation cache
    in `cache_dir`, and stop it at its first metrics row."""
    with tempfile.TemporaryDirectory(prefix="crl-first-metrics-") as out_dir:
        command = [
            args.python, "-m", "crl", "train", "--depth", str(depth), "--out-dir", out_dir,
            "--run-name", "run", *shlex.split(args.train_args), *shlex.split(variant),
        ]
        metrics = Path(out_dir) / "run" / "metrics.jsonl"
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(tree).resolve()),
                 "JAX_COMPILATION_CACHE_DIR": cache_dir},
        )
        try:
            while (row := first_row(metrics)) is None:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"crl train in {tree} (depth {depth}) exited with {process.returncode} "
                        f"before its first metrics row:\n{process.stderr.read()[-2000:]}"
                    )
                if time.perf_counter() - start > args.timeout_s:
                    raise TimeoutError(f"no metrics row after {args.timeout_s:.0f}s ({tree}, depth {depth})")
                time.sleep(0.05)
            seconds = time.perf_counter() - start
            peak = peak_resident_gib(process.pid)
        finally:
            process.kill()
            process.wait()
            process.stderr.close()
    return {
        "tree": tree, "depth": depth, "variant": variant, "first_metrics_seconds": seconds,
        "peak_resident_gib": peak,
        # The first epoch's training and evaluation (wall_time counts from the epoch's start).
        "first_epoch_seconds": row["wall_time"],
        # Steady training throughput of that epoch (the program was compiled before it ran).
        "env_steps_per_second": row["env_steps_per_second"],
    }


def main(args: Args) -> list[dict]:
    """Time every (tree, variant, depth) `repeats` times, interleaved; print the best of each
    (the fastest launch, with its peak memory and epoch throughput), and later trees and
    variants also as ratios to the first."""
    from rich.console import Console
    from rich.table import Table

    for tree in args.trees:
        if not (Path(tree) / "crl").is_dir():
            raise SystemExit(f"{tree}: not a crl source tree (no crl/ directory)")
    console = Console()
    caches = ("cold", "warm") if args.warm else ("cold",)
    best: dict[tuple[str, str, int, str], dict] = {}
    variants = [variant.strip() for variant in args.variants.split("|")]
    launches = [(tree, variant) for tree in args.trees for variant in variants]
    for _ in range(args.repeats):
        for depth in args.depths:
            for tree, variant in launches:
                with tempfile.TemporaryDirectory(prefix="crl-xla-cache-") as cache_dir:
                    for cache in caches:  # cold fills cache_dir, warm reads it
                        row = {**time_first_metrics(tree, depth, variant, args, cache_dir),
                               "cache": cache}
                        console.log(f"{tree} {variant!r} depth {depth} ({cache} cache): first "
                                    f"metrics after {row['first_metrics_seconds']:.1f}s, peak "
                                    f"{row['peak_resident_gib']:.2f} GiB")
                        key = (tree, variant, depth, cache)
                        if key not in best or (row["first_metrics_seconds"]
                                               < best[key]["first_metrics_seconds"]):
                            best[key] = row
    table = Table(title="time to first metrics (launch → first metrics.jsonl row), best of "
                        f"{args.repeats}; `crl train {args.train_args}`")
    columns = ("depth", "tree", "variant", "cache", "first metrics s", "first epoch s",
               "before it s", "epoch env-steps/s", "peak memory GiB")
    for column in columns:
        table.add_column(column, justify="right")
    keys = [(tree, variant, depth, cache)
            for depth in args.depths for tree, variant in launches for cache in caches]
    for key in keys:
        row = best[key]
        # Against the first tree and variant at the same depth and cache: how many times
        # sooner, faster and smaller this one is (none for the first itself).
        base = best[(*launches[0], key[2], key[3])]
        row["ratios"] = {} if row is base else {
            "first_metrics_seconds": base["first_metrics_seconds"] / row["first_metrics_seconds"],
            "env_steps_per_second": row["env_steps_per_second"] / base["env_steps_per_second"],
            "peak_resident_gib": base["peak_resident_gib"] / row["peak_resident_gib"],
        }

        def with_ratio(text: str, name: str) -> str:
            return f"{text} ({row['ratios'][name]:.2f}×)" if row["ratios"] else text

        table.add_row(
            str(row["depth"]), row["tree"], row["variant"] or "(defaults)", row["cache"],
            with_ratio(f"{row['first_metrics_seconds']:.1f}", "first_metrics_seconds"),
            f"{row['first_epoch_seconds']:.1f}",
            f"{row['first_metrics_seconds'] - row['first_epoch_seconds']:.1f}",
            with_ratio(f"{row['env_steps_per_second']:,.0f}", "env_steps_per_second"),
            with_ratio(f"{row['peak_resident_gib']:.2f}", "peak_resident_gib"),
        )
    console.print(table)
    return [best[key] for key in keys]


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
