"""Data parallelism over several devices (and hosts) with `jax.sharding`.

One `Mesh` with a single "data" axis spans the devices used. The training state keeps its
layout: everything with a `num_envs` axis (the env state and the replay buffer) is split along
that axis across devices, everything else (parameters, optimiser states, α, keys, counters) is
replicated. Each SGD batch is split along its batch axis. The program stays the single-device
program: `jit` + these shardings let XLA's SPMD partitioner insert the collectives (gradient
all-reduce, the gather of replay rows held by other devices) inside the same compiled loop, so
random draws — and so results, up to the order of floating-point sums — do not depend on the
number of devices.

Multi-host: every process calls `initialize()` (one process per host or per GPU), then builds
the same mesh over all global devices; `jax.distributed` handles discovery (SLURM, Open MPI,
or explicit JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables).
"""

from __future__ import annotations

import os
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

DATA_AXIS = "data"

# Position of the num_envs axis in the leaves of a seed-vmapped TrainState, by field path:
# env_state leaves are [seeds, num_envs, ...], replay data leaves [seeds, capacity, num_envs, ...].
ENV_AXIS_BY_PATH = {("env_state",): 1, ("replay", "data"): 2}


def initialize() -> None:
    """Join a multi-process JAX job (call before any other JAX call, once per process).

    Uses JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES and JAX_PROCESS_ID when set;
    otherwise `jax.distributed` detects the cluster (SLURM, Open MPI, Kubernetes...)."""
    kwargs: dict[str, Any] = {}
    if "JAX_NUM_PROCESSES" in os.environ:
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in os.environ:
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)


def is_primary() -> bool:
    """True on the process that writes the run directory (process 0)."""
    return jax.process_index() == 0


def resolve_num_devices(num_devices: int | None) -> int:
    """The configured device count, or every device of the job (all hosts) when None."""
    return jax.device_count() if num_devices is None else num_devices


def make_mesh(num_devices: int | None) -> Mesh:
    """A 1-D "data" mesh over the first `num_devices` devices (all of them when None)."""
    devices = jax.devices()[: resolve_num_devices(num_devices)]
    return Mesh(devices, (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding | SingleDeviceSharding:
    """Every device holds the whole array (the one device itself on a 1-device mesh)."""
    if mesh.size == 1:
        return SingleDeviceSharding(mesh.devices.flat[0])
    return NamedSharding(mesh, PartitionSpec())


def jit_shardings(mesh: Mesh, **shardings: Any) -> dict[str, Any]:
    """`jax.jit` sharding arguments, or none on one device: explicit annotations change XLA's
    fusion (and so float rounding), and single-device results must stay those of plain jit."""
    return shardings if mesh.size > 1 else {}


def split_axis(mesh: Mesh, axis: int) -> NamedSharding:
    """Sharding that splits `axis` across the mesh and replicates the other axes."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def _field_path(path) -> tuple[str, ...]:
    return tuple(getattr(k, "name", getattr(k, "key", str(k))) for k in path)


def train_state_sharding(state: Any, mesh: Mesh) -> Any:
    """Shardings for a seed-vmapped TrainState (arrays or ShapeDtypeStructs): the num_envs axis
    of env state and replay data split across devices, every other leaf replicated. On one
    device: plain single-device placement (no annotations, so the compiled program is exactly
    the unsharded one)."""
    if mesh.size == 1:
        single = SingleDeviceSharding(mesh.devices.flat[0])
        return jax.tree.map(lambda _: single, state)

    def sharding(path, leaf) -> NamedSharding:
        fields = _field_path(path)
        for prefix, axis in ENV_AXIS_BY_PATH.items():
            if fields[: len(prefix)] == prefix and len(leaf.shape) > axis:
                return split_axis(mesh, axis)
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(sharding, state)


def constrain_leading(tree: Any, mesh: Mesh | None) -> Any:
    """Inside a jitted function: split axis 0 of every leaf (the env or batch axis) across the
    mesh. A no-op without a mesh, on one device, or when axis 0 does not divide evenly. Under a
    seed `vmap` JAX keeps the seed axis unsplit."""
    if mesh is None or mesh.size == 1:
        return tree

    def constrain(x):
        if x.ndim == 0 or x.shape[0] % mesh.size:
            return x
        return jax.lax.with_sharding_constraint(x, split_axis(mesh, 0))

    return jax.tree.map(constrain, tree)
