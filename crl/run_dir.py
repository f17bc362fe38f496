"""A run directory: the resolved config, metrics as JSONL (appended per epoch) and CSV, and a
final summary. Everything a notebook needs to plot a run is in here."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from crl.config import ConfigError, TrainConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY_FILE = "summary.json"


def default_run_name(config: TrainConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{config.env}_d{config.depth}_s{config.seed}_{stamp}"


def create(config: TrainConfig, resolved: dict[str, Any]) -> Path:
    """Make a new run directory and write config.json (the config plus `resolved` values such as
    the env's dims and episode length). Refuses to reuse a directory that already has metrics."""
    run_dir = Path(config.out_dir) / (config.run_name or default_run_name(config))
    if (run_dir / METRICS_FILE).exists():
        raise ConfigError(f"run_name: {run_dir} already holds a run; choose another run_name")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        payload = {"config": dataclasses.asdict(config), "resolved": resolved}
        (run_dir / CONFIG_FILE).write_text(json.dumps(payload, indent=2))
    except OSError as e:
        raise ConfigError(f"out_dir: cannot write run directory {run_dir}: {e.strerror}") from None
    return run_dir


def append_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Append one epoch's rows (one per seed) to metrics.jsonl and refresh metrics.csv."""
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
    load_metrics(run_dir).to_csv(run_dir / METRICS_CSV, index=False)


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per (epoch, seed)."""
    return pd.read_json(Path(run_dir) / METRICS_FILE, lines=True)


def load_config(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text())


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
