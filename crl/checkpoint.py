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
import errno
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
     "checkpoint_replay", "compilation_cache_dir", "logger", "wandb_project", "wandb_group", "wandb_mode",
     # when the programs compile, not what they compute
     "overlap_compiles",
     # how summary.json averages evaluations; when a diverging run stops
     "score_window", "divergence_threshold"}
    # The stability audit's thresholds only decide which warnings are printed (crl.audit).
    | {"audit_dead_layer_ratio", "audit_min_effective_rank", "audit_max_dead_units",
       "audit_churn_rises"}
)


class CheckpointError(RuntimeError):
    """No checkpoint of a run could be loaded and verified."""


class StorageError(RuntimeError):
    """The disk refused a write (full, read-only, no permission); one line naming the cause."""


# errno → what to call it; orbax re-raises some write errors without their OSError, so the
# strerror texts are matched too.
STORAGE_CAUSES = {
    errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "disk full",
    errno.EROFS: "out dir not writable", errno.EACCES: "out dir not writable",
    errno.EPERM: "out dir not writable",
}


def storage_cause(error: BaseException) -> tuple[str, str] | None:
    """(cause, detail) when `error` or an exception it chains is a refused write, else None."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in STORAGE_CAUSES:
            where = f": {e.filename}" if e.filename else ""
            return STORAGE_CAUSES[e.errno], f"{e.strerror}{where}"
        for code, cause in STORAGE_CAUSES.items():
            text = os.strerror(code)
            if text in str(e):
                return cause, text
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return None


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

    def __exit__(self, exc_type, exc, traceback) -> None:
        """Let pending writes commit even when training stops with an exception (whose report
        a failing background write must not replace)."""
        if exc is None:
            self.wait()
            self.close()
            return
        try:
            self.wait()
            self.close()
        except Exception:  # noqa: BLE001 — the exception in flight is the one to report
            pass

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
def checkpoint_metas(run_dir: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(epochs done, meta) of every completed checkpoint whose meta reads, newest first; read
    from the files without a CheckpointManager (which would create directories)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    found = []
    steps = sorted(
        (int(p.name) for p in directory.iterdir() if p.name.isdigit()), reverse=True
    ) if directory.is_dir() else []
    for step in steps:
        try:
            meta = json.loads((directory / str(step) / "meta" / "metadata").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
            found.append((step, meta))
    return found


def _config_from_dict(saved: Any, source: str) -> TrainConfig:
    """A TrainConfig from config.json's or a checkpoint's dict; ConfigError if it is not one."""
    from crl.config import check_types

    if not isinstance(saved, dict):
        raise ConfigError(f"{source} holds no config")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ConfigError(f"{source} was written with unknown config fields {unknown}")
    config = TrainConfig(**saved)
    check_types(config)
    return config


def _differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Fields (outside RESUMABLE_CHANGES) where two configs differ, as 'field: a vs b'."""
    return [
        f"{f.name}: {getattr(a, f.name)!r} vs {getattr(b, f.name)!r}"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(a, f.name) != getattr(b, f.name)
    ]


def saved_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run directory was trained with. The newest readable checkpoint's
    record wins over config.json for what changes the run (shapes, seeds, hyperparameters):
    a damaged or edited config.json must neither stop a resume nor make good checkpoints look
    damaged. Fields that may change on resume are taken from config.json when it reads."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    metas = checkpoint_metas(run_dir)
    if not path.exists() and not metas:
        raise ConfigError(f"resume: {run_dir} is not a run directory (no config.json)")
    from_file, problem = None, "config.json is missing"
    if path.exists():
        try:
            from_file = _config_from_dict(json.loads(path.read_text()).get("config"), "config.json")
        except ConfigError as e:
            if "unknown config fields" in str(e):
                raise ConfigError(f"resume: {run_dir}/{e}") from None
            problem = f"config.json is damaged ({e})"
        except (OSError, ValueError, AttributeError, TypeError) as e:
            problem = f"config.json is damaged ({type(e).__name__}: {str(e).splitlines()[0]})"
    if not metas:
        if from_file is None:
            raise ConfigError(f"resume: {run_dir}: {problem} and no checkpoint records the config")
        return from_file
    step, meta = metas[0]
    try:
        from_checkpoint = _config_from_dict(meta["config"], f"checkpoint {step}")
    except ConfigError as e:
        if from_file is None:
            raise ConfigError(f"resume: {run_dir}: {problem}; {e}") from None
        return from_file
    if from_file is None:
        warnings.warn(f"{run_dir}: {problem}; using the config recorded in checkpoint {step}",
                      stacklevel=2)
        return from_checkpoint
    differ = _differences(from_file, from_checkpoint)
    if differ:
        warnings.warn(
            f"{run_dir}: config.json differs from the config checkpoint {step} was trained with "
            f"({'; '.join(differ)}, file vs checkpoint); resuming with the checkpoint's",
            stacklevel=2,
        )
    return dataclasses.replace(
        from_checkpoint, **{f: getattr(from_file, f) for f in RESUMABLE_CHANGES
                            if hasattr(from_file, f)}
    )


def repair_config_file(run_dir: str | Path, config: TrainConfig, resolved: dict[str, Any]) -> bool:
    """Rewrite a damaged, missing or edited config.json from the config the run resumed with
    (notebooks and sweep tables read it); True if it was rewritten."""
    path = Path(run_dir) / "config.json"
    try:
        on_disk = _config_from_dict(json.loads(path.read_text()).get("config"), "config.json")
        if not _differences(on_disk, config):
            return False
    except (OSError, ValueError, AttributeError, TypeError):  # ConfigError is a ValueError
        pass
    payload = {"config": dataclasses.asdict(config), "resolved": resolved}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
    return True


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


def check_location(run_dir: Path, saved: TrainConfig, given: TrainConfig) -> None:
    """A resumed run stays where it is: an out_dir or run_name that differs both from where
    the run directory is and from what it was saved with is a conflicting request, not one
    to ignore silently."""
    if given.run_name not in (None, saved.run_name, run_dir.name):
        raise ConfigError(
            f"run_name: --resume {run_dir} continues that directory; it cannot be renamed to "
            f"{given.run_name!r} (drop --run-name, or copy the directory first)"
        )
    wanted = Path(given.out_dir).absolute()
    if wanted not in (Path(saved.out_dir).absolute(), run_dir.parent.absolute()):
        raise ConfigError(
            f"out_dir: --resume {run_dir} continues that directory in {run_dir.parent}; it "
            f"cannot move to {given.out_dir!r} (drop --out-dir, or copy the directory first)"
        )


def resume_config(run_dir: str | Path, given: TrainConfig | None) -> TrainConfig:
    """The config to continue `run_dir` with: `given` (or the saved one) checked against the
    saved config, with out_dir/run_name pointing at `run_dir`."""
    run_dir = Path(run_dir)
    saved = saved_config(run_dir)
    config = given or saved
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    check_resumable(saved, config)
    check_location(run_dir, saved, config)
    return dataclasses.replace(config, out_dir=str(run_dir.parent), run_name=run_dir.name)


def rewind_metrics(
    run_dir: str | Path, epoch: int, recorded: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Keep only metrics rows of epochs < `epoch` (later ones are recomputed after a resume).
    `recorded`: the rows the checkpoint of `epoch` recorded; they are the truth, and a damaged,
    truncated or deleted metrics.jsonl is rebuilt from them (with a warning). Without them
    (checkpoints from before rows were recorded) unreadable lines are dropped. Rewrites
    metrics.jsonl atomically and metrics.csv to match; returns the kept rows."""
    path = Path(run_dir) / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    damaged = 0
    if path.exists():
        text = path.read_text(errors="replace")
        lines = text.splitlines()
        for i, line in enumerate(lines):
            try:
                row = json.loads(line)
                usable = isinstance(row, dict) and isinstance(row.get("epoch"), int)
            except json.JSONDecodeError:
                usable = False
            if not usable:
                # A last line without its newline was cut by a kill mid-write: expected.
                damaged += not (i == len(lines) - 1 and not text.endswith("\n"))
                continue
            if row["epoch"] < epoch:
                rows.append(row)
    if recorded is not None:
        expected = [r for r in recorded if r["epoch"] < epoch]
        if json.dumps(rows) != json.dumps(expected):  # (NaN != NaN as floats)
            state = "missing" if not path.exists() else "damaged or incomplete"
            warnings.warn(
                f"{path} is {state} ({len(rows)} of {len(expected)} rows of epochs < {epoch} "
                f"read back); rebuilt from the rows recorded in checkpoint {epoch}",
                stacklevel=2,
            )
        rows = expected
    elif damaged:
        warnings.warn(f"{path}: dropped {damaged} unreadable line(s)", stacklevel=2)
    if jax.process_index() == 0:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)
        if rows:
            from crl.run_dir import METRICS_CSV, load_metrics

            load_metrics(run_dir).to_csv(Path(run_dir) / METRICS_CSV, index=False)
    return rows


def directory_size(path: str | Path) -> int:
    """Bytes under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
