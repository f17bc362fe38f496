"""`crl` command line: `crl train`, `crl envs`, `crl render`.

`crl train` takes every TrainConfig field as a flag (tyro); `--preset paper` swaps the CPU
defaults for the paper's hyperparameters before the other flags apply.
"""

from __future__ import annotations

import sys
from typing import Callable

import tyro

from crl.checkpoint import CheckpointError
from crl.config import PRESETS, ConfigError, TrainConfig
from crl.guard import NonFiniteError

USAGE = """usage: crl COMMAND [ARGS]

commands:
  train    train a CRL agent (crl train --help; --preset paper for the paper's settings)
  envs     list the registered environments with their dims and backend
  render   write a short video of a random or trained policy in an env
  sweep    depth sweep: grid over depths/widths/batch sizes, seeds vmapped, tidy results.csv
  ablate   architecture ablations (residual, layer_norm, activation, width_vs_depth, actor_critic)
  collector-learner  learners train only on a collector's replay data (exploration vs expressivity)
  bench    compile time, throughput, memory, vmapped seeds, bf16 vs depth (--preset cpu|gpu)
"""


def pop_preset(args: list[str]) -> tuple[str, list[str]]:
    """Take `--preset NAME` / `--preset=NAME` out of args (tyro parses the rest)."""
    rest, preset, i = [], "cpu", 0
    while i < len(args):
        if args[i] == "--preset" and i + 1 < len(args):
            preset, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--preset="):
            preset = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return preset, rest


def parse_train_config(args: list[str]) -> TrainConfig:
    preset, rest = pop_preset(args)
    return tyro.cli(
        TrainConfig,
        default=PRESETS[preset],
        args=rest,
        prog="crl train",
        description=f"{TrainConfig.__doc__}\n\nPreset in use: {preset} (choose with --preset cpu|paper).",
    )


def pop_resume(args: list[str]) -> tuple[str | None, bool, list[str]]:
    """Take `--resume RUN_DIR` and `--distributed` out of args."""
    rest, resume, distributed, i = [], None, False, 0
    while i < len(args):
        if args[i] == "--resume" and i + 1 < len(args):
            resume, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--resume="):
            resume = args[i].split("=", 1)[1]
        elif args[i] == "--distributed":
            distributed = True
        else:
            rest.append(args[i])
        i += 1
    return resume, distributed, rest


def train_command(args: list[str]) -> None:
    """`crl train [--resume RUN_DIR] [--distributed] [--preset P] [FLAGS]`: with --resume the
    run's saved config is the default and FLAGS may change only what does not alter the run;
    --distributed joins a multi-process job (jax.distributed.initialize) first."""
    from crl.run import train

    resume, distributed, rest = pop_resume(args)
    if distributed:
        from crl.distributed import initialize

        initialize()
    if resume is None:
        train(parse_train_config(rest))
        return
    from crl.checkpoint import saved_config

    config = tyro.cli(TrainConfig, default=saved_config(resume), args=rest, prog="crl train --resume RUN_DIR")
    train(config, resume=resume)


def envs_command(args: list[str]) -> None:
    from envs.__main__ import main as list_envs

    list_envs(args)


def render_command(args: list[str]) -> None:
    from envs.render import main as render_main

    render_main(args)


def sweep_command(args: list[str]) -> None:
    from experiments.depth_sweep import main as sweep_main

    sweep_main(args)


def ablate_command(args: list[str]) -> None:
    from experiments.ablations import main as ablations_main

    ablations_main(args)


def collector_learner_command(args: list[str]) -> None:
    from experiments.collector_learner import main as collector_learner_main

    collector_learner_main(args)


def bench_command(args: list[str]) -> None:
    from experiments.bench import main as bench_main

    bench_main(args)


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "train": train_command,
    "envs": envs_command,
    "render": render_command,
    "sweep": sweep_command,
    "ablate": ablate_command,
    "collector-learner": collector_learner_command,
    "bench": bench_command,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"crl: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    try:
        COMMANDS[command](rest)
    except ConfigError as e:
        print(f"crl {command}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (NonFiniteError, CheckpointError) as e:
        print(f"crl {command}: error: {e}", file=sys.stderr)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
