"""Experiment trackers: where a run's resolved config, per-epoch metrics and final summary go.

`jsonl` is always on (the run directory's metrics.jsonl/csv and summary.json, see
crl.run_dir); `tensorboard` writes event files under RUN_DIR/tensorboard/seed_<s>/ (one
TensorBoard run per seed, x-axis = env steps) and `wandb` makes one W&B run per seed, grouped
by `wandb_group` (default: the run name; sweeps group by sweep) in project `wandb_project`,
with its files under RUN_DIR/wandb/ (`wandb_mode="offline"` needs no account; upload later
with `wandb sync`). The drivers (crl.run.train, the collector/learner experiment) call a
`Loggers` at three points: `start(...)` with the resolved config, `log_epoch(rows)` per epoch,
`finish(summary)` at the end.

The clients are optional extras (`pip install -e '.[tensorboard]'`, `'.[wandb]'`);
`check_installed` names the missing one in a one-line ConfigError before anything compiles.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import secrets
from pathlib import Path
from typing import Any, Literal

from crl import run_dir as run_dir_lib
from crl.config import ConfigError, TrainConfig

LoggerName = Literal["jsonl", "tensorboard", "wandb"]
LOGGERS: tuple[str, ...] = ("jsonl", "tensorboard", "wandb")
# The module each tracker needs, and the extra that installs it.
CLIENTS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}
TENSORBOARD_DIR = "tensorboard"
TRACKING_FILE = "tracking.json"  # ids that let a resumed run continue its tracker runs
# Row keys without a "/" that are metrics (the others are coordinates or config columns).
PLAIN_METRICS = frozenset(
    {"wall_time", "env_steps_per_second", "env_steps_per_second_with_eval", "eval_seconds"}
)


def check_installed(config: TrainConfig) -> None:
    """ConfigError naming the first unknown logger or missing client (cheap: finds modules
    without importing them)."""
    for name in config.logger:
        if name not in LOGGERS:
            raise ConfigError(f"logger: unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        if name in CLIENTS:
            module, extra = CLIENTS[name]
            if importlib.util.find_spec(module) is None:
                raise ConfigError(
                    f"logger: {name} needs the {module} package: pip install -e '.[{extra}]'"
                )
    if config.wandb_mode not in (None, "online", "offline", "disabled"):
        raise ConfigError(
            f"wandb_mode must be online, offline, disabled or None, got {config.wandb_mode!r}"
        )


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a metrics row (train/*, eval/*, diag/*, timings), without its
    coordinates (epoch, seed, env steps) or config columns. Rows of several agents trained in
    one run (collector/learner) are told apart by a `<role>_d<depth>/` prefix."""
    prefix = f"{row['role']}_d{row['depth']}/" if "agent" in row else ""
    return {
        prefix + key: float(value)
        for key, value in row.items()
        if ("/" in key or key in PLAIN_METRICS)
        and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def summary_numbers(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a summary, nested dicts flattened with "/" (lists and strings dropped)."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update(summary_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = float(value)
    return out


def flat_config(config: TrainConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    """The config and the resolved env values as one flat JSON-able dict."""
    values = {**dataclasses.asdict(config), **{f"resolved/{k}": v for k, v in resolved.items()}}
    return json.loads(json.dumps(values, default=str))


class JsonlLogger:
    """The run directory's own files (always on): metrics.jsonl/csv per epoch, summary.json.
    config.json is written by crl.run_dir.create when the directory is claimed."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def log_epoch(self, rows: list[dict[str, Any]]) -> None:
        run_dir_lib.append_metrics(self.run_dir, rows)

    def finish(self, summary: dict[str, Any]) -> None:
        run_dir_lib.write_summary(self.run_dir, summary)

    def close(self, failed: bool = False) -> None:
        pass


class TensorBoardLogger:
    """Event files per seed (tensorboardX, no TensorFlow): scalars at step = env steps, the
    config as text, the summary's numbers as `summary/*` scalars at the last step."""

    def __init__(self, run_dir: Path, config: TrainConfig, resolved: dict[str, Any],
                 seeds: list[int], purge_step: int | None):
        from tensorboardX import SummaryWriter

        text = "```\n" + json.dumps(flat_config(config, resolved), indent=2) + "\n```"
        self.writers = {}
        for seed in seeds:
            writer = SummaryWriter(
                str(run_dir / TENSORBOARD_DIR / f"seed_{seed}"), purge_step=purge_step,
                flush_secs=30,
            )
            writer.add_text("config", text, 0)
            self.writers[seed] = writer
        self.last_step = 0

    def log_epoch(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            writer = self.writers[int(row["seed"])]
            self.last_step = int(row["env_steps"])
            for key, value in scalars(row).items():
                if math.isfinite(value):
                    writer.add_scalar(key, value, self.last_step)
            writer.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        for writer in self.writers.values():
            for key, value in summary_numbers(summary).items():
                writer.add_scalar(f"summary/{key}", value, self.last_step)
        self.close()

    def close(self, failed: bool = False) -> None:
        for writer in self.writers.values():
            writer.close()


class WandbLogger:
    """One W&B run per seed (`reinit="create_new"`: several live runs in one process), named
    <run name>_s<seed>, grouped, with the config, per-epoch metrics and the summary."""

    def __init__(self, run_dir: Path, config: TrainConfig, resolved: dict[str, Any],
                 seeds: list[int], ids: dict[str, str]):
        import wandb

        values = flat_config(config, resolved)
        self.runs = {}
        for seed in seeds:
            self.runs[seed] = wandb.init(
                project=config.wandb_project,
                group=config.wandb_group or run_dir.name,
                name=f"{run_dir.name}_s{seed}",
                id=ids[str(seed)],
                resume="allow",
                dir=str(run_dir),
                mode=config.wandb_mode,
                config={**values, "seed": seed},
                reinit="create_new",
                settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
            )
            self.runs[seed].define_metric("*", step_metric="env_steps")

    def log_epoch(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.runs[int(row["seed"])].log(
                {**scalars(row), "env_steps": int(row["env_steps"]), "epoch": int(row["epoch"])}
            )

    def finish(self, summary: dict[str, Any]) -> None:
        for run in self.runs.values():
            run.summary.update(summary_numbers(summary))
        self.close()

    def close(self, failed: bool = False) -> None:
        for run in self.runs.values():
            run.finish(exit_code=1 if failed else 0)
        self.runs = {}


class Loggers:
    """Every logger of a run behind the driver's three calls; a context manager that closes
    them (marking tracker runs failed) if training raises."""

    def __init__(self, loggers: list[Any]):
        self.loggers = loggers

    def log_epoch(self, rows: list[dict[str, Any]]) -> None:
        for logger in self.loggers:
            logger.log_epoch(rows)

    def finish(self, summary: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.finish(summary)
        self.loggers = []

    def __enter__(self) -> "Loggers":
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is not None:
            for logger in self.loggers:
                logger.close(failed=True)
            self.loggers = []


def tracker_ids(run_dir: Path, seeds: list[int]) -> dict[str, str]:
    """W&B run ids per seed: made once and kept in RUN_DIR/tracking.json, so a resumed run
    continues the same W&B runs instead of starting new ones."""
    path = run_dir / TRACKING_FILE
    saved = json.loads(path.read_text()) if path.exists() else {}
    ids = saved.get("wandb_ids", {})
    missing = [str(s) for s in seeds if str(s) not in ids]
    if missing:
        ids.update({s: secrets.token_hex(8) for s in missing})
        path.write_text(json.dumps({**saved, "wandb_ids": ids}, indent=2))
    return ids


def start(
    config: TrainConfig,
    run_dir: str | Path,
    resolved: dict[str, Any],
    seeds: list[int],
    kept_rows: list[dict[str, Any]] = (),
    primary: bool = True,
) -> Loggers:
    """Open the loggers `config.logger` names (jsonl always) for a run directory and send them
    the resolved config. `kept_rows`: metrics rows kept from before a resume; trackers drop
    anything they hold after those (the rows that follow are recomputed). Processes other than
    the primary one of a multi-process job log nothing."""
    if not primary:
        return Loggers([])
    run_dir = Path(run_dir)
    loggers: list[Any] = [JsonlLogger(run_dir)]
    seeds = [int(s) for s in seeds]
    if "tensorboard" in config.logger:
        purge_step = max((int(r["env_steps"]) for r in kept_rows), default=-1) + 1
        loggers.append(TensorBoardLogger(run_dir, config, resolved, seeds, purge_step))
    if "wandb" in config.logger:
        loggers.append(WandbLogger(run_dir, config, resolved, seeds, tracker_ids(run_dir, seeds)))
    return Loggers(loggers)
