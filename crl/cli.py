"""`crl` command line: `crl train`, `crl envs`, `crl render`.

`crl train` takes every TrainConfig field as a flag (tyro); `--preset paper` swaps the CPU
defaults for the paper's hyperparameters before the other flags apply.
"""

from __future__ import annotations

import sys
from typing import Callable

import tyro

from crl.config import PRESETS, ConfigError, TrainConfig

USAGE = """usage: crl COMMAND [ARGS]

commands:
  train    train a CRL agent (crl train --help; --preset paper for the paper's settings)
  envs     list the registered environments with their dims and backend
  render   write a short video of a random or trained policy in an env
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


def train_command(args: list[str]) -> None:
    from crl.run import train

    train(parse_train_config(args))


def envs_command(args: list[str]) -> None:
    from envs.__main__ import main as list_envs

    list_envs(args)


def render_command(args: list[str]) -> None:
    from envs.render import main as render_main

    render_main(args)


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "train": train_command,
    "envs": envs_command,
    "render": render_command,
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


if __name__ == "__main__":
    main()
