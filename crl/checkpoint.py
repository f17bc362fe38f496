"""Checkpoints of the complete training state with orbax, and what resuming a run needs.

A checkpoint is one orbax step directory `RUN_DIR/checkpoints/<epochs done>/` holding two items:
`state` (every TrainState field: parameters, optimiser states, α, env state, RNG keys,
counters, and the replay buffer unless `checkpoint_replay=False`) and `meta` (JSON: epoch,
config, driver values and a checksum of `state`). Orbax writes a step into a temporary
directory and renames it when complete, so a kill during a write leaves no step that looks
finished; the checksum additionally catches a finished step whose files were later damaged.
`restore_latest` walks back from the newest step to the newest one that loads and verifies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from crl.config import ConfigError, TrainConfig

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints.corrupt"
FORMAT_VERSION = 1

# Fields that may differ between a run and its resumption: they change where things are
# written, how often checkpoints are kept, or how the same program is laid out on devices —
# never the numbers the run computes.
RESUMABLE_CHANGES = frozenset(
    {"out_dir", "run_name", "num_devices", "checkpoint_every", "keep_checkpoints",
     "checkpoint_replay", "logger", "wandb_project", "wandb_group", "wandb_mode",
     "score_window"}  # score_window only changes how summary.json averages evaluations
    # The stability audit's thresholds only decide which warnings are printed (crl.audit).
    | {"audit_dead_layer_ratio", "audit_min_effective_rank", "audit_max_dead_units",
       "audit_churn_rises"}
)


class CheckpointError(RuntimeError):
    """No checkpoint of a run could be loaded and verified."""


# ---- checksum ---------------------------------------------------------------------------------
def _words(x: jax.Array) -> jax.Array:
    """The bits of an array as a flat uint32 vector (any dtype)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32).ravel()
    size = x.dtype.itemsize
    if size < 4:
        unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
        return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()
    return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()


def _leaf_checksum(x: jax.Array) -> jax.Array:
    """Two wrapping uint32 sums: of the words, and of the words mixed with their position
    (so swapped or shifted data changes it too)."""
    w = _words(x)
    if w.size == 0:
        return jnp.zeros((2,), jnp.uint32)
    index = jnp.arange(w.size, dtype=jnp.uint32)
    mixed = (w ^ (index * jnp.uint32(0x9E3779B9))) * jnp.uint32(0x85EBCA6B)
    mixed = mixed ^ (mixed >> 13)
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(mixed, dtype=jnp.uint32)])


@jax.jit
def tree_checksum(tree: Any) -> jax.Array:
    """[num_leaves, 2] uint32 fingerprint of every leaf's bits; computed on device (works for
    sharded arrays, the reductions become collectives)."""
    leaves = jax.tree.leaves(tree)
    return jnp.stack([_leaf_checksum(x) for x in leaves]) if leaves else jnp.zeros((0, 2))


def checksum_list(tree: Any) -> list[list[int]]:
    return np.asarray(jax.device_get(tree_checksum(tree))).astype(np.int64).tolist()


# ---- what is saved ----------------------------------------------------------------------------
def _is_empty(x: Any) -> bool:
    return x is not None and int(np.prod(x.shape)) == 0


def drop_empty(tree: Any) -> Any:
    """`tree` with zero-size leaves (e.g. MJX's `physics.act` for actuators without activation
    state) replaced by None: orbax refuses to write them, and they carry no data — their
    shape and dtype come back from the restore template (`refill_empty`)."""
    return jax.tree.map(lambda x: None if _is_empty(x) else x, tree)


def refill_empty(restored: Any, template: Any) -> Any:
    """`restored` (the output of restoring a `drop_empty` tree) with the zero-size leaves of
    `template` (arrays or ShapeDtypeStructs, with shardings where given) rebuilt as zeros."""

    def rebuild(x: Any) -> Any:
        sharding = getattr(x, "sharding", None)
        zeros = np.zeros(x.shape, x.dtype)
        return jax.device_put(zeros, sharding) if sharding is not None else jnp.asarray(zeros)

    marked = jax.tree.map(lambda x: rebuild(x) if _is_empty(x) else None, template)
    # Both trees have the template's structure once None is treated as a leaf.
    return jax.tree.map(
        lambda empty, value: value if empty is None else empty,
        marked, restored, is_leaf=lambda x: x is None,
    )


def saved_fields(state: Any, include_replay: bool) -> dict[str, Any]:
    """The TrainState fields that go into a checkpoint, as a dict (replay optional)."""
    return {
        f.name: getattr(state, f.name)
        for f in dataclasses.fields(state)
        if include_replay or f.name != "replay"
    }


class Checkpointer:
    """Keeps the last `keep` checkpoints of a run; saves are asynchronous (the device→host copy
    happens before `save` returns, the file writes in the background)."""

    def __init__(self, run_dir: str | Path, keep: int = 2):
        self.run_dir = Path(run_dir).absolute()
        self.directory = self.run_dir / CHECKPOINT_DIR
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=True
            ),
        )

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        """Let pending writes commit even when training stops with an exception."""
        self.wait()
        self.close()

    def last_good(self, run_dir: str | Path) -> str:
        """Where to continue from, for error messages."""
        steps = self.steps()
        if not steps:
            return "no checkpoint was saved yet"
        return (
            f"last good checkpoint: after epoch {steps[-1] - 1} "
            f"(resume with: crl train --resume {run_dir})"
        )

    def steps(self) -> list[int]:
        """Completed checkpoints (epochs done), oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, epoch: int, state: Any, meta: dict[str, Any], include_replay: bool) -> None:
        """Checkpoint `state` after `epoch` completed epochs. `meta` is stored as JSON with the
        checksum of the saved arrays added."""
        item = drop_empty(saved_fields(state, include_replay))
        meta = {
            **meta,
            "format": FORMAT_VERSION,
            "epoch": epoch,
            "has_replay": include_replay,
            "checksum": checksum_list(item),
        }
        self.manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(item), meta=ocp.args.JsonSave(meta)
            ),
        )

    def wait(self) -> None:
        """Block until background writes are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def restore(self, epoch: int, template: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Load checkpoint `epoch` into the shapes/shardings of `template` (a TrainState of arrays
        or ShapeDtypeStructs) and verify its checksum; returns (fields dict, meta)."""
        meta = self.manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]
        target = saved_fields(template, meta["has_replay"])
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            drop_empty(target),
        )
        item = self.manager.restore(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
        if checksum_list(item) != meta["checksum"]:
            raise CheckpointError(f"checkpoint {epoch}: checksum mismatch (data damaged)")
        return refill_empty(item, target), meta

    def restore_subtree(self, epoch: int, target: dict[str, Any]) -> dict[str, Any]:
        """Only the saved fields named in `target` (nested dicts of ShapeDtypeStructs, e.g.
        {"agent": {"actor_params": ...}}) of checkpoint `epoch`: the rest (replay, optimiser
        states) is not read. Not checksummed (the checksum covers the whole state)."""
        present = drop_empty(target)
        restored = self.manager.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=present,
                    restore_args=jax.tree.map(
                        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), present
                    ),
                    partial_restore=True,
                )
            ),
        )["state"]
        return refill_empty(restored, target)

    def restore_latest(self, template: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The newest checkpoint that loads and verifies. Damaged newer ones are moved to
        RUN_DIR/checkpoints.corrupt/ (with a warning) so new saves can take their place."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: no completed checkpoint to resume from")
        for epoch in reversed(steps):
            try:
                return self.restore(epoch, template)
            except Exception as e:  # noqa: BLE001 — any failure to load means "not usable"
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                warnings.warn(
                    f"checkpoint {epoch} is damaged or incomplete ({reason}); trying an older one",
                    stacklevel=2,
                )
                self.quarantine(epoch)
        raise CheckpointError(f"{self.directory}: none of the checkpoints {steps} could be loaded")

    def quarantine(self, epoch: int) -> None:
        """Move a damaged checkpoint out of the manager's directory."""
        if jax.process_index() == 0:
            destination = self.run_dir / CORRUPT_DIR / f"{epoch}-{int(time.time())}"
            destination.parent.mkdir(exist_ok=True)
            shutil.move(str(self.directory / str(epoch)), destination)
        self.manager.reload()


# ---- resuming ---------------------------------------------------------------------------------
def saved_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run directory was started with."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError(f"resume: {run_dir} is not a run directory (no config.json)")
    saved = json.loads(path.read_text())["config"]
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ConfigError(f"resume: {run_dir} was written with unknown config fields {unknown}")
    return TrainConfig(**saved)


def check_resumable(saved: TrainConfig, given: TrainConfig) -> None:
    """ConfigError naming the first field that differs in a way that changes the run."""
    for field in dataclasses.fields(TrainConfig):
        if field.name in RESUMABLE_CHANGES:
            continue
        old, new = getattr(saved, field.name), getattr(given, field.name)
        if old != new:
            raise ConfigError(
                f"{field.name}: resumed run was trained with {old!r}, got {new!r}; only "
                f"{', '.join(sorted(RESUMABLE_CHANGES))} may change on resume"
            )


def resume_config(run_dir: str | Path, given: TrainConfig | None) -> TrainConfig:
    """The config to continue `run_dir` with: `given` (or the saved one) checked against the
    saved config, with out_dir/run_name pointing at `run_dir`."""
    run_dir = Path(run_dir)
    saved = saved_config(run_dir)
    config = given or saved
    check_resumable(saved, config)
    return dataclasses.replace(config, out_dir=str(run_dir.parent), run_name=run_dir.name)


def rewind_metrics(run_dir: str | Path, epoch: int) -> list[dict[str, Any]]:
    """Keep only metrics rows of epochs < `epoch` (later ones are recomputed after a resume;
    a line cut by a kill mid-write is dropped). Atomic rewrite; returns the kept rows."""
    path = Path(run_dir) / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("epoch", epoch) < epoch:
                rows.append(row)
    if jax.process_index() == 0:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
    return rows


def directory_size(path: str | Path) -> int:
    """Bytes under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
