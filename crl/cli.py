"""`crl` command line, built by tyro from the command dataclasses below: `crl --help` lists the
commands, `crl COMMAND --help` shows every flag, and `crl --tyro-write-completion bash|zsh|tcsh
PATH` writes a shell completion script for all of them.

Presets and resumed runs are defaults that the other flags override: `--preset paper` (or
`--resume RUN_DIR`, the run's saved config) is read in a first tyro pass, and the command line
is parsed again with those defaults, so `crl train --preset paper --help` shows the paper's
values and `--depth 64` overrides one of them.

Exit codes: 2 for bad input (a ConfigError prints one line `crl <cmd>: error: ...`; tyro
reports flags it cannot parse), 3 when training stops on non-finite values or no checkpoint
can be loaded, 4 when the disk refuses a write (full, read-only, no permission).
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, Union

import tyro

from crl.checkpoint import CheckpointError, StorageError
from crl.config import PRESETS, ConfigError, Preset, TrainConfig
from crl.guard import NonFiniteError
from envs.registry import UnknownEnvError
from experiments.ablations import AblationOptions
from experiments.bench import BENCH_PRESETS, BenchConfig
from experiments.collector_learner import CollectorLearnerOptions
from experiments.demo import DEMO_CONFIG, DemoOptions
from experiments.depth_sweep import SweepOptions

# TrainConfig fields that a sweep sets for each grid point itself.
SWEEP_SETS = ("out_dir", "run_name", "depth", "actor_depth", "critic_depth")


@dataclass(frozen=True)
class Command:
    verbose: bool = False
    """Show third-party import notices and library logging (silenced by default)."""


def _check_unset(config: TrainConfig, default: TrainConfig, fields: tuple[str, ...], owner: str) -> None:
    for field in fields:
        if getattr(config, field) != getattr(default, field):
            raise ConfigError(f"{field}: set by the {owner}; use the {owner}'s own flags")


@dataclass(frozen=True)
class Train(Command):
    """Train a CRL agent and write a run directory (config, metrics, checkpoints, summary).

    Every TrainConfig field is a flag; `--preset paper` gives the paper's hyperparameters and
    `--resume RUN_DIR` continues a run."""

    config: TrainConfig = PRESETS["cpu"]
    preset: Preset = "cpu"
    """Defaults the other flags override: cpu, or paper (the paper's hyperparameters)."""
    resume: str | None = None
    """Continue RUN_DIR from its newest valid checkpoint, with its saved config as defaults."""
    distributed: bool = False
    """Join a multi-process job first (jax.distributed.initialize; SLURM is detected)."""

    def defaults(self) -> "Train":
        if self.resume is not None:
            from crl.checkpoint import saved_config

            # Where the run is now (it may have been moved): other values conflict (resume_config).
            location = Path(self.resume)
            saved = dataclasses.replace(
                saved_config(self.resume), out_dir=str(location.parent), run_name=location.name
            )
            return Train(config=saved, preset=self.preset, resume=self.resume)
        return Train(config=PRESETS[self.preset], preset=self.preset)

    def execute(self, argv: list[str]) -> None:
        from crl.run import train

        if self.distributed:
            from crl.distributed import initialize

            initialize()
        train(self.config, resume=self.resume)


@dataclass(frozen=True)
class Envs(Command):
    """List the registered environments (dims, backend, episode length), or time them."""

    names: tyro.conf.Positional[tuple[str, ...]] = ()
    """Envs to list (default: all)."""
    bench: bool = False
    """Time a vmapped rollout of each env."""
    num_envs: int = 128
    num_steps: int = 100
    backend: str | None = None
    """Physics backend override for --bench (brax envs: spring, positional, generalized, mjx)."""

    def execute(self, argv: list[str]) -> None:
        from envs.__main__ import list_or_bench

        try:
            list_or_bench(self.names, self.bench, self.num_envs, self.num_steps, self.backend)
        except ValueError as error:  # unknown env or backend, bad sizes: one line
            raise ConfigError(str(error)) from None


@dataclass(frozen=True)
class Render(Command):
    """Film a trained run's deterministic policy (`--run RUN_DIR`) or a random one (ENV).

    Writes a GIF/MP4 with the goal drawn and, for brax envs, brax's interactive HTML viewer
    next to it."""

    env_name: Annotated[tyro.conf.Positional[str | None], tyro.conf.arg(metavar="ENV")] = None
    """Env to film a random policy in (`crl envs` lists them)."""
    run: str | None = None
    """Run directory whose trained policy to film (its saved config rebuilds the networks)."""
    checkpoint: int | None = None
    """Checkpoint of --run to load, in epochs done (default: the newest)."""
    seed_index: int = 0
    """Which of --run's vmapped seeds to film (0 = its first seed)."""
    env: str | None = None
    """With --run: film on this env instead (same observation and action sizes)."""
    out: str | None = None
    """Output .gif or .mp4 (default: ENV.gif; with --run: in RUN_DIR/videos/)."""
    num_steps: int | None = None
    """Steps to film (default: 200; with --run one episode)."""
    seed: int = 0
    """Seed of the episode's reset (start and goal)."""
    method: Literal["auto", "mujoco", "topdown"] = "auto"
    """mujoco: 3-D (needs OpenGL); topdown: matplotlib from above; auto: mujoco if it can."""
    width: int = 320
    height: int = 240
    fps: int = 20
    frame_every: int = 2
    """Keep every N-th step as a video frame."""
    html: bool = True
    """Also write brax's interactive viewer (.html next to the video) for brax envs."""

    def execute(self, argv: list[str]) -> None:
        options = dict(method=self.method, width=self.width, height=self.height, fps=self.fps,
                       frame_every=self.frame_every, seed=self.seed)
        if self.num_steps is not None and self.num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.out is not None:
            check_writable_file(self.out, "out")
        try:
            if self.run is not None:
                from crl.policy import film

                if self.env_name is not None and self.env is not None and self.env_name != self.env:
                    raise ConfigError(f"env: given twice ({self.env_name!r} and {self.env!r})")
                written = film(
                    self.run, self.out, self.checkpoint, self.seed_index,
                    self.env or self.env_name, self.num_steps, self.html, **options,
                )
            else:
                written = self._random(options)
        except ValueError as error:  # bad sizes, formats, methods: one line
            raise ConfigError(str(error)) from None
        except OSError as error:
            raise ConfigError(f"out: cannot write {error.filename or self.out}: {error.strerror}") from None
        files = " and ".join(p for p in (written["video"], written["html"]) if p)
        policy = (
            f"trained policy of {self.run} (epoch {written['epoch']}, seed {written['seed']})"
            if self.run is not None else "random policy"
        )
        print(f"wrote {files}: {policy} on {written['env']} ({written['renderer']} renderer)")

    def _random(self, options: dict) -> dict:
        from envs import registry
        from envs.render import has_brax_viewer, render

        name = self.env_name or self.env
        if name is None:
            raise ConfigError("env: give an ENV for a random policy, or --run RUN_DIR")
        out = self.out or f"{name}.gif"
        html = None
        if self.html and has_brax_viewer(registry.make(name)):
            html = str(Path(out).with_suffix(".html"))
        num_steps = 200 if self.num_steps is None else self.num_steps
        renderer = render(name, out, num_steps=num_steps, html_path=html, **options)
        return {"video": out, "html": html, "renderer": renderer, "env": name}


def check_writable_file(path: str, field: str) -> None:
    """ConfigError unless `path`'s directory can be made and takes a new file: tried before
    minutes of rendering, not after."""
    import tempfile

    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ConfigError(f"{field}: cannot write {path}: {e.strerror}") from None


@dataclass(frozen=True)
class Sweep(Command):
    """Depth sweep: one `crl train` run per grid point, collected in a tidy results.csv.

    The grid is depths (and widths / batch sizes / actor × critic depths); each point's seeds
    are vmapped in one program. The other flags are `crl train` flags and set the base
    config."""

    options: SweepOptions = SweepOptions()
    config: TrainConfig = PRESETS["cpu"]
    preset: Preset = "cpu"
    """Base config defaults: cpu or paper."""

    def defaults(self) -> "Sweep":
        return Sweep(config=PRESETS[self.preset], preset=self.preset)

    def execute(self, argv: list[str]) -> None:
        from experiments.depth_sweep import run_command

        _check_unset(self.config, PRESETS[self.preset], SWEEP_SETS, "sweep")
        run_command(self.options, self.config)


@dataclass(frozen=True)
class Ablate(Command):
    """Architecture ablations, each a sweep (residual, layer_norm, activation, width vs depth).

    Ablations: residual, layer_norm, activation, width_vs_depth, actor_critic. The other flags
    are `crl train` flags and set the base config."""

    options: AblationOptions = AblationOptions()
    config: TrainConfig = PRESETS["cpu"]
    preset: Preset = "cpu"
    """Base config defaults: cpu or paper."""

    def defaults(self) -> "Ablate":
        return Ablate(config=PRESETS[self.preset], preset=self.preset)

    def execute(self, argv: list[str]) -> None:
        from experiments.ablations import run_command

        _check_unset(self.config, PRESETS[self.preset], SWEEP_SETS, "ablation")
        run_command(self.options, self.config)


COLLECTOR_LEARNER_DIR = "runs/collector_learner"


@dataclass(frozen=True)
class CollectorLearner(Command):
    """Collector/learner: learners train only on a collector's replay data.

    Exploration vs expressivity: learners of other depths update on the collector's batches and
    never act. `--out-dir` is the experiment directory; the other flags are `crl train` flags
    and set the collector's config."""

    options: CollectorLearnerOptions = CollectorLearnerOptions()
    config: TrainConfig = dataclasses.replace(PRESETS["cpu"], out_dir=COLLECTOR_LEARNER_DIR)
    preset: Preset = "cpu"
    """Base config defaults: cpu or paper."""

    def defaults(self) -> "CollectorLearner":
        base = dataclasses.replace(PRESETS[self.preset], out_dir=COLLECTOR_LEARNER_DIR)
        return CollectorLearner(config=base, preset=self.preset)

    def execute(self, argv: list[str]) -> None:
        from experiments.collector_learner import run_command

        _check_unset(self.config, PRESETS[self.preset], SWEEP_SETS[1:], "collector/learner experiment")
        run_command(self.options, self.config)


@dataclass(frozen=True)
class Demo(Command):
    """Show what depth does on a CPU: `crl demo threshold` (a depth sweep judged by the
    pre-registered criterion) or `crl demo collector-learner` (the 2×2 on the same task).

    Defaults are the configuration the search chose (docs/depth_threshold_search.md); every
    other flag is a `crl train` flag and overrides it."""

    which: tyro.conf.Positional[Literal["threshold", "collector-learner"]] = "threshold"
    """Which demonstration to run."""
    options: DemoOptions = DemoOptions()
    config: TrainConfig = DEMO_CONFIG

    def execute(self, argv: list[str]) -> None:
        from experiments.demo import run_command

        _check_unset(self.config, DEMO_CONFIG, SWEEP_SETS, "demo")
        run_command(self.which, self.options, self.config)


@dataclass(frozen=True)
class Bench(Command):
    """Benchmarks: compile time, throughput, memory, vmapped seeds and bf16 against depth."""

    bench: BenchConfig = BENCH_PRESETS["cpu"]
    preset: Literal["cpu", "gpu"] = "cpu"
    """Sizes: cpu (< ~10 min on 2 cores) or gpu (the paper's)."""

    def defaults(self) -> "Bench":
        return Bench(bench=BENCH_PRESETS[self.preset], preset=self.preset)

    def execute(self, argv: list[str]) -> None:
        from experiments.bench import check_bench_config, run

        try:
            check_bench_config(self.bench)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        run(self.bench, self.preset, command="crl " + " ".join(argv))


COMMANDS: dict[str, type] = {
    "train": Train,
    "envs": Envs,
    "render": Render,
    "sweep": Sweep,
    "ablate": Ablate,
    "collector-learner": CollectorLearner,
    "demo": Demo,
    "bench": Bench,
}


def command_type(defaults: dict[str, Command]) -> type:
    """The Union of subcommands tyro builds the parser from, with these default instances."""
    return Union[tuple(
        Annotated[cls, tyro.conf.subcommand(name, default=defaults.get(name, cls()),
                                            description=" ".join((cls.__doc__ or "").split("\n\n")[0].split()))]
        for name, cls in COMMANDS.items()
    )]


def command_name(command: Command) -> str:
    return next(name for name, cls in COMMANDS.items() if isinstance(command, cls))


CLI_MARKERS = (tyro.conf.OmitArgPrefixes,)


def parse(argv: list[str]) -> Command:
    """Two tyro passes: the first finds the command and its preset/resume run (ignoring help
    and errors), the second parses argv with those defaults (and prints help or errors)."""
    defaults: dict[str, Command] = {}
    try:
        # Help flags are left out of this pass (a positional could otherwise take them).
        first, _ = tyro.cli(
            command_type({}), args=[a for a in argv if a not in ("-h", "--help")], prog="crl",
            config=CLI_MARKERS, add_help=False,
            return_unknown_args=True, console_outputs=False,
        )
    except SystemExit:
        first = None  # the second pass reports it
    if first is not None and hasattr(first, "defaults"):
        defaults[command_name(first)] = first.defaults()
    return tyro.cli(command_type(defaults), args=argv, prog="crl", config=CLI_MARKERS)


def _one_line_warnings(command: Callable[[], str]) -> Callable:
    """crl's own warnings (damaged files recovered, ...) as one line each, once each; returns
    the formatter it replaced. (The formatter, not showwarning: recording warnings, as
    pytest.warns does, keeps working.)"""
    shown: set[str] = set()
    default = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None):
        if not str(filename).startswith(CRL_SOURCES):
            return default(message, category, filename, lineno, line)
        if str(message) in shown:
            return ""
        shown.add(str(message))
        return f"crl {command()}: warning: {message}\n"

    warnings.formatwarning = format_warning
    return default


CRL_SOURCES = tuple(
    str(Path(__file__).resolve().parent.parent / package) for package in ("crl", "envs", "experiments")
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = ["--help"]
    name = argv[0]
    previous_format = _one_line_warnings(lambda: name)
    try:
        command = parse(argv)
        name = command_name(command)
        if not command.verbose:
            from crl.quiet import silence_third_party

            silence_third_party()
        command.execute(argv)
    except (ConfigError, UnknownEnvError) as e:
        print(f"crl {name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (NonFiniteError, CheckpointError) as e:
        print(f"crl {name}: error: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    except StorageError as e:
        print(f"crl {name}: error: {e}", file=sys.stderr)
        raise SystemExit(4) from None
    except OSError as e:  # a file the command reads or writes: one line naming it
        from crl.checkpoint import storage_cause

        cause = storage_cause(e)
        what = f"{cause[0]}: " if cause else ""
        where = f": {e.filename}" if e.filename else ""
        print(f"crl {name}: error: {what}{e.strerror or e}{where}", file=sys.stderr)
        raise SystemExit(4) from None
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    main()
