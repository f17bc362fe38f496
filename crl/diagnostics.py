"""Stability diagnostics: per-layer instruments that show *how* deep RL training stays stable.

At log points (every `TrainConfig.diagnostics_every` epochs, off when 0) one jitted, seed-vmapped
function measures, on a fresh replay batch drawn with the diagnostics' own key (not a batch any
update used) and on a fixed probe set of states that never enter replay:

- per-layer gradient norms of the actor and both critic encoders (input, block0/layer0..3, ...,
  output; a "layer" is one Dense with its LayerNorm),
- representation geometry: singular values, effective rank (Roy & Vetterli 2007) and top-k
  variance fraction of φ(s, a), ψ(g) and every encoder's last hidden layer,
- dead units: per hidden layer, the fraction of units that are constant (or ~0) across the batch,
- update sparsity: per layer, the fraction of parameters that moved less than a tolerance since
  the previous log point (since init at the first one),
- policy churn: mean change of the deterministic action on the probe states per epoch,
- off-policy drift: Monte-Carlo KL(behaviour ‖ current) from the behaviour log-probabilities
  stored with each transition (the trainer stores them only when diagnostics are on), by
  Schulman's k1, k2 and k3 estimators side by side, with their spread (`kl_estimates`),
- held-out critic health (InfoNCE accuracy, positive/negative logits, logsumexp),
- exploration, for maze envs (`GoalEnv.maze_grid`): the share of the replay buffer's states in
  each maze cell (`coverage/cells`, flat row-major) and the fraction of free cells visited at
  all (`coverage/visited_fraction`) — what the collector has seen recently.

Diagnostics use their own random key and never touch the training state, so turning them on does
not change training. Results are extra `diag/...` fields of the metrics.jsonl rows (arrays as
lists); `load(run_dir)` turns them back into arrays [log point, layer].
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from crl import buffer, losses
from crl.agent import Batch, CRLAgent
from crl.networks import LAYERS_PER_BLOCK, DenseNormAct, NetworkConfig, ResidualBlock
from envs import maze_layouts

if TYPE_CHECKING:
    from crl.train import Trainer, TrainState

PREFIX = "diag/"
ENCODERS = ("actor", "critic_sa", "critic_goal")
FEATURES = ("phi", "psi", "hidden_actor", "hidden_critic_sa", "hidden_critic_goal")
DEAD_TOLERANCE = 1e-5
"""A unit is dead when its activation's standard deviation across the batch is at most this."""
UPDATE_TOLERANCE = 1e-6
"""A parameter counts as not updated when |θ_now − θ_before| is at most this."""
TOP_K = 5
"""Top-k components for the variance-fraction metric."""
PROBE_ENVS = 16
PROBE_SIZE = 256
"""Fixed probe states for policy churn, from a uniformly random rollout that never enters replay."""
KEY_SALT = 0xD1A6
"""Folded into each seed's key so the diagnostics' randomness is disjoint from training's."""
BEHAVIOUR_FIELDS = ("policy_goal", "behaviour_log_prob")


# ---- replay extension for off-policy drift ---------------------------------------------------
def behaviour_record(
    agent: CRLAgent, actor_params: dict, state: jax.Array, goal: jax.Array, action: jax.Array
) -> dict[str, jax.Array]:
    """Extra replay fields for a collected step: the goal the policy was conditioned on and the
    behaviour policy's log-density of the action it took (same clipped formula as the current
    policy's log-density below, so the drift is exactly 0 when the policy has not changed)."""
    mean, log_std = agent.actor.apply(actor_params, state, goal)
    return {
        "policy_goal": goal,
        "behaviour_log_prob": losses.tanh_gaussian_log_prob(mean, log_std, action),
    }


def behaviour_example(num_envs: int, goal_size: int) -> dict[str, jax.Array]:
    """Per-step example arrays for `behaviour_record`'s fields (for `buffer.init`)."""
    return {
        "policy_goal": jnp.zeros((num_envs, goal_size)),
        "behaviour_log_prob": jnp.zeros((num_envs,)),
    }


# ---- per-layer reductions --------------------------------------------------------------------
def layer_names(depth: int) -> list[str]:
    """Network-order names of the Dense layers of one encoder: input, b0.l0 … , output."""
    blocks = [
        f"b{b}.l{l}" for b in range(depth // LAYERS_PER_BLOCK) for l in range(LAYERS_PER_BLOCK)
    ]
    return ["input", *blocks, "output"]


def _block_layer_keys(blocks: dict) -> list[str]:
    """Sub-module names inside a block ('DenseNormAct_0'…), in call order."""
    return sorted(blocks, key=lambda name: int(name.rsplit("_", 1)[1]))


def per_layer_sum(encoder_tree: dict) -> jax.Array:
    """Sum of all entries of each Dense layer (with its LayerNorm) of one encoder's pytree
    (params, grads or elementwise indicators), in network order → [depth + 2].

    The scanned 'blocks' subtree has a leading block axis; it is unstacked into block0/layer0..3,
    block1/layer0..3, ….
    """
    total = lambda tree: sum(jnp.sum(x) for x in jax.tree.leaves(tree))
    blocks = encoder_tree["blocks"]
    per_block = jnp.stack(
        [
            sum(jnp.sum(x.reshape(x.shape[0], -1), axis=1) for x in jax.tree.leaves(blocks[k]))
            for k in _block_layer_keys(blocks)
        ],
        axis=1,
    )  # [num_blocks, LAYERS_PER_BLOCK]
    return jnp.concatenate(
        [
            total(encoder_tree["input"])[None],
            per_block.reshape(-1),
            total(encoder_tree["output"])[None],
        ]
    )


def layer_grad_norms(encoder_grads: dict) -> jax.Array:
    """L2 norm of each layer's gradient → [depth + 2]."""
    return jnp.sqrt(per_layer_sum(jax.tree.map(jnp.square, encoder_grads)))


def update_sparsity(new: dict, old: dict, tolerance: float = UPDATE_TOLERANCE) -> jax.Array:
    """Fraction of each layer's parameters with |new − old| ≤ tolerance → [depth + 2]."""
    unchanged = jax.tree.map(
        lambda a, b: (jnp.abs(a - b) <= tolerance).astype(jnp.float32), new, old
    )
    counts = per_layer_sum(jax.tree.map(jnp.ones_like, new))
    return per_layer_sum(unchanged) / counts


# ---- activations -----------------------------------------------------------------------------
def _module_kwargs(module_cls: type, network: NetworkConfig) -> dict[str, Any]:
    """The NetworkConfig fields a layer module takes (so this keeps up with new switches)."""
    names = {f.name for f in dataclasses.fields(module_cls)} - {"parent", "name"}
    return {
        f.name: getattr(network, f.name) for f in dataclasses.fields(network) if f.name in names
    }


def hidden_activations(network: NetworkConfig, encoder_params: dict, x: jax.Array) -> jax.Array:
    """Every hidden activation of one ResidualMLP, in network order → [depth + 1, batch, width]:
    the input layer's output, then each block layer's output (before the block's skip is added).
    The last hidden layer (input to the output Dense) is the last block's output plus its skip.

    nn.scan drops captured intermediates, so the blocks are re-applied here one at a time with the
    network's own modules over the stacked block parameters.
    """
    layer = DenseNormAct(**_module_kwargs(DenseNormAct, network))
    block = ResidualBlock(**_module_kwargs(ResidualBlock, network))
    h = layer.apply({"params": encoder_params["input"]}, x)
    captures = lambda module, _: isinstance(module, DenseNormAct)
    skip = h if network.multi_skip else None  # the multi-skip global input of every block

    def one_block(h, block_params):
        (out, _), state = block.apply(
            {"params": block_params},
            h,
            skip,
            capture_intermediates=captures,
            mutable=["intermediates"],
        )
        inter = state["intermediates"]
        return out, jnp.stack([inter[k]["__call__"][0] for k in _block_layer_keys(inter)])

    last, acts = jax.lax.scan(one_block, h, encoder_params["blocks"])
    return jnp.concatenate([h[None], acts.reshape(-1, *h.shape)]), last


def dead_unit_fraction(activations: jax.Array, tolerance: float = DEAD_TOLERANCE) -> jax.Array:
    """activations [layers, batch, units] → per layer, the fraction of units whose value is
    constant (std ≤ tolerance) across the batch; an always-zero unit is the common case."""
    return jnp.mean(jnp.std(activations, axis=1) <= tolerance, axis=-1)


# ---- representation geometry -----------------------------------------------------------------
def effective_rank(singular_values: jax.Array) -> jax.Array:
    """Roy & Vetterli (2007): exp of the entropy of the L1-normalised singular values; between 1
    and the number of values (0 for an all-zero matrix)."""
    total = jnp.sum(singular_values)
    p = singular_values / jnp.where(total > 0, total, 1.0)
    entropy = -jnp.sum(jax.scipy.special.xlogy(p, p))
    return jnp.where(total > 0, jnp.exp(entropy), 0.0)


def top_k_variance(singular_values: jax.Array, k: int = TOP_K) -> jax.Array:
    """Fraction of Σσ² in the k largest singular values (values sorted descending)."""
    energy = singular_values**2
    return jnp.sum(energy[:k]) / jnp.maximum(jnp.sum(energy), 1e-30)


def singular_values(features: jax.Array) -> jax.Array:
    """Singular values (descending) of [..., batch, dim] matrices. On CPU they are computed by
    numpy on the host: jaxlib's batched LAPACK SVD (the measurement is vmapped over seeds) fans
    out into the XLA:CPU thread pool it already runs on and waits, which deadlocked a 2-core
    run mid-training. Diagnostics run only at log points, so the round trip costs nothing."""
    if jax.default_backend() != "cpu":
        return jnp.linalg.svd(features, compute_uv=False)
    shape = jax.ShapeDtypeStruct((*features.shape[:-2], min(features.shape[-2:])), features.dtype)
    host_svd = lambda x: np.linalg.svd(np.asarray(x), compute_uv=False).astype(x.dtype)
    return jax.pure_callback(host_svd, shape, features, vmap_method="expand_dims")


def geometry(features: jax.Array, k: int = TOP_K) -> dict[str, jax.Array]:
    """Singular values of a [batch, dim] feature matrix (uncentred) and their summaries."""
    s = singular_values(features)
    return {
        "singular_values": s,
        "effective_rank": effective_rank(s),
        f"top{k}_variance": top_k_variance(s, k),
    }


# ---- off-policy drift ------------------------------------------------------------------------
KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimates(behaviour_log_prob: jax.Array, current_log_prob: jax.Array) -> dict[str, jax.Array]:
    """Schulman's three Monte-Carlo estimators of KL(behaviour ‖ current) from actions drawn by
    the behaviour policy, with log r = log π_current(a) − log π_behaviour(a):
    k1 = −log r (unbiased, high variance, can go negative), k2 = ½(log r)² (biased, low
    variance, ≥ 0), k3 = (r − 1) − log r (unbiased and ≥ 0, but r is unbounded). They agree
    when the policies are close; `offpolicy_kl_spread` (max − min of the three) says when they
    do not, which no single estimator shows. `offpolicy_kl` stays k1 (the earlier metric)."""
    log_r = current_log_prob - behaviour_log_prob
    estimates = {
        "k1": jnp.mean(-log_r),
        "k2": jnp.mean(0.5 * log_r**2),
        "k3": jnp.mean(jnp.expm1(log_r) - log_r),
    }
    stacked = jnp.stack([estimates[k] for k in KL_ESTIMATORS])
    return {
        "offpolicy_kl": estimates["k1"],
        **{f"offpolicy_kl_{k}": v for k, v in estimates.items()},
        "offpolicy_kl_spread": jnp.max(stacked) - jnp.min(stacked),
    }


# ---- exploration -----------------------------------------------------------------------------
def coverage(env: Any, replay: buffer.ReplayState) -> dict[str, jax.Array]:
    """Visited-cell histogram of the stored states of a maze env (empty dict otherwise): the
    share of filled replay rows whose achieved (x, y) lies in each cell [rows·cols], and the
    fraction of free cells with at least one stored state."""
    grid = env.maze_grid()
    if grid is None:
        return {}
    walls, cell_size = grid
    xy = env.achieved_goal(replay.data["state"])[..., :2]  # [capacity, num_envs, 2]
    cell = maze_layouts.flat_cell_index(xy, walls.shape, cell_size)
    filled = (jnp.arange(replay.capacity) < replay.size)[:, None] & (cell >= 0)
    counts = jnp.zeros(walls.size).at[jnp.maximum(cell, 0)].add(filled.astype(jnp.float32))
    free = jnp.asarray(~walls.reshape(-1))
    return {
        "coverage/cells": counts / jnp.maximum(jnp.sum(counts), 1.0),
        "coverage/visited_fraction": jnp.sum((counts > 0) & free) / jnp.sum(free),
    }


# ---- the diagnostics step ----------------------------------------------------------------------
@struct.dataclass
class DiagState:
    """What diagnostics carry between log points (per seed): parameters at the previous log point,
    the fixed probe states and the diagnostics' own random key."""

    prev_actor_params: dict
    prev_critic_params: dict
    probe_state: jax.Array
    probe_goal: jax.Array
    rng: jax.Array


def encoder_subtrees(actor_tree: dict, critic_tree: dict) -> dict[str, dict]:
    """The three ResidualMLP subtrees (params or grads) by encoder name."""
    return {
        "actor": actor_tree["params"]["ResidualMLP_0"],
        "critic_sa": critic_tree["params"]["sa_encoder"],
        "critic_goal": critic_tree["params"]["goal_encoder"],
    }


def probe_states(trainer: Trainer, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(state, goal) pairs from one uniformly random episode of PROBE_ENVS fresh envs — states the
    agent never trains on — subsampled to PROBE_SIZE."""
    env = trainer.env
    reset_rng, action_rng, pick_rng = jax.random.split(rng, 3)
    env_state = jax.vmap(env.reset)(jax.random.split(reset_rng, PROBE_ENVS))

    def one_step(env_state, step_rng):
        action = jax.random.uniform(step_rng, (PROBE_ENVS, env.action_size), minval=-1, maxval=1)
        return jax.vmap(env.step)(env_state, action), env_state.obs

    _, obs = jax.lax.scan(one_step, env_state, jax.random.split(action_rng, env.episode_length))
    obs = obs.reshape(-1, obs.shape[-1])
    obs = jax.random.permutation(pick_rng, obs)[: min(PROBE_SIZE, obs.shape[0])]
    return trainer.split_obs(obs)


def init(trainer: Trainer, train_state: TrainState, rng: jax.Array) -> DiagState:
    """Diagnostics state for one seed: a copy of the initial parameters and the probe set."""
    probe_rng, rng = jax.random.split(rng)
    state, goal = probe_states(trainer, probe_rng)
    return DiagState(
        prev_actor_params=train_state.agent.actor_params,
        prev_critic_params=train_state.agent.critic_params,
        probe_state=state,
        probe_goal=goal,
        rng=rng,
    )


def measure(
    trainer: Trainer, diag: DiagState, train_state: TrainState, epochs_since: jax.Array
) -> tuple[DiagState, dict[str, jax.Array]]:
    """All diagnostics for one seed at a log point; `epochs_since` is the number of epochs since
    the previous log point. Pure; never changes the training state."""
    agent, config = trainer.agent, trainer.config
    actor_params, critic_params = train_state.agent.actor_params, train_state.agent.critic_params
    rng, batch_rng, actor_rng = jax.random.split(diag.rng, 3)

    now, future, _ = buffer.sample_with_future(
        train_state.replay, batch_rng, config.batch_size, config.discount
    )
    batch = Batch(
        state=now["state"], action=now["action"], goal=trainer.env.achieved_goal(future["state"])
    )

    (_, (critic_health, goal_repr)), critic_grads = jax.value_and_grad(
        agent.critic_loss, has_aux=True
    )(critic_params, batch)
    actor_grads, _ = jax.grad(agent.actor_loss, has_aux=True)(
        actor_params, critic_params, train_state.agent.log_alpha, batch, actor_rng, goal_repr
    )
    params = encoder_subtrees(actor_params, critic_params)
    grads = encoder_subtrees(actor_grads, critic_grads)
    prev = encoder_subtrees(diag.prev_actor_params, diag.prev_critic_params)
    inputs = {
        "actor": jnp.concatenate([batch.state, batch.goal], axis=-1),
        "critic_sa": jnp.concatenate([batch.state, batch.action], axis=-1),
        "critic_goal": batch.goal,
    }
    networks = {
        "actor": agent.actor_network,
        "critic_sa": agent.critic_network,
        "critic_goal": agent.critic_network,
    }

    metrics: dict[str, jax.Array] = {}
    features = {}
    for name in ENCODERS:
        metrics[f"grad_norm/{name}"] = layer_grad_norms(grads[name])
        metrics[f"update_sparsity/{name}"] = update_sparsity(params[name], prev[name])
        hidden, last = hidden_activations(networks[name], params[name], inputs[name])
        metrics[f"dead_units/{name}"] = dead_unit_fraction(hidden)
        features[f"hidden_{name}"] = last
    features["phi"], features["psi"] = agent.critic.apply(
        critic_params, batch.state, batch.action, batch.goal
    )
    for name in FEATURES:
        for key, value in geometry(features[name]).items():
            metrics[f"{key}/{name}"] = value

    # Policy churn on the fixed probe states, per epoch between log points.
    act_now = agent.act(actor_params, diag.probe_state, diag.probe_goal, None)
    act_before = agent.act(diag.prev_actor_params, diag.probe_state, diag.probe_goal, None)
    metrics["policy_churn"] = (
        jnp.mean(jnp.linalg.norm(act_now - act_before, axis=-1)) / epochs_since
    )

    # Off-policy drift: KL(β ‖ π) on the stored actions, by three estimators side by side.
    if "behaviour_log_prob" in now:
        mean, log_std = agent.actor.apply(actor_params, now["state"], now["policy_goal"])
        current = losses.tanh_gaussian_log_prob(mean, log_std, now["action"])
        metrics.update(kl_estimates(now["behaviour_log_prob"], current))

    for key in ("categorical_accuracy", "logits_pos", "logits_neg", "logsumexp", "infonce"):
        metrics[f"heldout/{key}"] = critic_health[key]
    metrics.update(coverage(trainer.env, train_state.replay))
    new_diag = diag.replace(
        prev_actor_params=actor_params, prev_critic_params=critic_params, rng=rng
    )
    return new_diag, {PREFIX + k: v for k, v in metrics.items()}


# ---- the driver hook ---------------------------------------------------------------------------
def is_log_point(epoch: int, every: int, num_epochs: int) -> bool:
    """Every `every` epochs (1-based) and always at the last epoch."""
    return every > 0 and ((epoch + 1) % every == 0 or epoch == num_epochs - 1)


def _fresh_copy(tree: Any) -> Any:
    """Copies made inside a jitted function, so the outputs never alias the training state's
    buffers (jit forwards an input returned unchanged) and donating that state later cannot
    free what diagnostics keep. Called inside the jitted measurement: one program, not one
    dispatch per leaf."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def rows_per_seed(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """{name: [num_seeds, ...]} → one {name: float | list} dict per seed (JSON-ready)."""
    host = jax.device_get(metrics)
    num_seeds = len(next(iter(host.values())))
    to_json = lambda v: float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64).tolist()
    return [{k: to_json(v[i]) for k, v in host.items()} for i in range(num_seeds)]


def make_hook(
    trainer: Trainer, train_state: TrainState, seeds: jax.Array, start_epoch: int = 0
) -> Callable[[int, TrainState], list[dict[str, Any]]]:
    """The run driver's per-epoch call: `hook(epoch, state)` returns one dict of extra row fields
    per seed — empty except at log points, and always empty when diagnostics are off. Call it
    right after `trainer.init` or a restore (before the state is donated to the epoch function);
    `start_epoch` is the first epoch still to run (the reference point for churn and sparsity)."""
    config = trainer.config
    num_seeds = len(seeds)
    if config.diagnostics_every <= 0:
        return lambda epoch, state: [{} for _ in range(num_seeds)]
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), KEY_SALT))(seeds)
    diag = jax.jit(jax.vmap(lambda s, k: _fresh_copy(init(trainer, s, k))))(train_state, keys)

    def measure_and_copy(diag, state, since):
        new_diag, metrics = measure(trainer, diag, state, since)
        return _fresh_copy(new_diag), metrics

    step = jax.jit(jax.vmap(measure_and_copy, in_axes=(0, 0, None)))
    last_epoch = start_epoch - 1

    def hook(epoch: int, state: TrainState) -> list[dict[str, Any]]:
        nonlocal diag, last_epoch
        if not is_log_point(epoch, config.diagnostics_every, config.num_epochs):
            return [{} for _ in range(num_seeds)]
        since = epoch - last_epoch
        diag, metrics = step(diag, state, jnp.float32(since))
        last_epoch = epoch
        return rows_per_seed(
            {**metrics, PREFIX + "epochs_since_last": jnp.full(num_seeds, float(since))}
        )

    return hook


# ---- reading and plotting ----------------------------------------------------------------------
HEALTH_KEYS = (
    "train/categorical_accuracy",
    "train/logits_pos",
    "train/logits_neg",
    "train/logsumexp",
)


def load(run_dir: str | Path, seed: int | None = None) -> dict[str, Any]:
    """Diagnostics of one run and seed (default: the first) as arrays over log points:
    'epoch', 'env_steps' [T]; each `diag/` field without its prefix, e.g. 'grad_norm/critic_sa'
    [T, depth + 2], 'effective_rank/phi' [T]; the epoch-averaged critic health 'train/...' [T];
    'layers' {encoder: layer names}; 'config' (the run's TrainConfig fields)."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    rows = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line
    ]
    seed = config["seed"] if seed is None else seed
    rows = [r for r in rows if r["seed"] == seed and any(k.startswith(PREFIX) for k in r)]
    if not rows:
        raise ValueError(
            f"{run_dir}: no diagnostics for seed {seed} (train with --diagnostics-every N)"
        )
    out: dict[str, Any] = {
        "epoch": np.array([r["epoch"] for r in rows]),
        "env_steps": np.array([r["env_steps"] for r in rows]),
    }
    for key in rows[-1]:
        if key.startswith(PREFIX) or key in HEALTH_KEYS:
            name = key.removeprefix(PREFIX)
            out[name] = np.array([r.get(key, np.nan) for r in rows], dtype=np.float64)
    depth = {
        "actor": config["actor_depth"] or config["depth"],
        "critic": config["critic_depth"] or config["depth"],
    }
    out["layers"] = {
        "actor": layer_names(depth["actor"]),
        "critic_sa": layer_names(depth["critic"]),
        "critic_goal": layer_names(depth["critic"]),
    }
    out["config"] = config
    return out


def seeds_of(run_dir: str | Path) -> list[int]:
    """The seeds a run trained (config seed, seed+1, …)."""
    config = json.loads((Path(run_dir) / "config.json").read_text())["config"]
    return [config["seed"] + i for i in range(config["num_seeds"])]


def coverage_map(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A maze run's exploration at its last log point: (wall mask [rows, cols], share of replay
    states per cell averaged over seeds [rows, cols], visited fraction of free cells per seed)."""
    import envs

    seeds = [load(run_dir, seed) for seed in seeds_of(run_dir)]
    if "coverage/cells" not in seeds[0]:
        raise ValueError(f"{run_dir}: no coverage diagnostics (not a maze env?)")
    walls, _ = envs.make(seeds[0]["config"]["env"]).maze_grid()
    share = np.mean([d["coverage/cells"][-1] for d in seeds], axis=0).reshape(walls.shape)
    visited = np.array([d["coverage/visited_fraction"][-1] for d in seeds])
    return walls, share, visited


def plot_coverage(
    ax, walls: np.ndarray, share: np.ndarray, title: str = "", vmin: float = 1e-5, vmax: float = 1.0
):
    """Maze heatmap of the share of stored states per cell, log scale from vmin to vmax (walls
    grey, free cells never visited white)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    visited = np.where(walls | (share <= 0), np.nan, np.clip(share, vmin, vmax))
    image = ax.imshow(visited, cmap=cmap, norm=LogNorm(vmin=vmin, vmax=vmax))
    ax.imshow(np.where(walls, 0.5, np.nan), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return image


def final_summary(data: dict[str, Any]) -> dict[str, Any]:
    """Last-log-point numbers of one loaded run, for reports: per-encoder gradient norms (first,
    median, last layer), mean dead-unit fraction, mean update sparsity; effective ranks; churn."""
    summary: dict[str, Any] = {"epoch": int(data["epoch"][-1])}
    for name in ENCODERS:
        g = data[f"grad_norm/{name}"][-1]
        summary[f"grad_norm/{name}"] = {
            "input": g[0],
            "median": float(np.median(g)),
            "output": g[-1],
            "min": g.min(),
            "max": g.max(),
        }
        summary[f"dead_units/{name}"] = float(np.mean(data[f"dead_units/{name}"][-1]))
        summary[f"update_sparsity/{name}"] = float(np.mean(data[f"update_sparsity/{name}"][-1]))
    for name in FEATURES:
        summary[f"effective_rank/{name}"] = float(data[f"effective_rank/{name}"][-1])
    for key in (
        "policy_churn", "offpolicy_kl", "offpolicy_kl_k2", "offpolicy_kl_k3",
        "offpolicy_kl_spread", "heldout/categorical_accuracy",
    ):
        if key in data:
            summary[key] = float(data[key][-1])
    return summary


def plot_grad_heatmap(ax, data: dict[str, Any], encoder: str = "critic_sa", vmin=None, vmax=None):
    """Layer × log-point heatmap of log10 gradient norms (dead layers dark, exploding bright)."""
    grid = np.log10(np.maximum(data[f"grad_norm/{encoder}"].T, 1e-12))
    image = ax.imshow(
        grid,
        aspect="auto",
        origin="upper",
        cmap="magma",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    layers = data["layers"][encoder]
    ticks = sorted({0, len(layers) - 1, *range(0, len(layers), max(1, len(layers) // 8))})
    ax.set_yticks(ticks, [layers[i] for i in ticks])
    columns = range(0, len(data["epoch"]), -(-len(data["epoch"]) // 8))  # ≤ 8 labels
    ax.set_xticks(list(columns), [str(data["epoch"][i]) for i in columns])
    ax.set_xlabel("epoch")
    ax.set_ylabel("layer (input at top)")
    return image


def plot_comparison(runs: dict[str, dict[str, Any]], encoder: str = "critic_sa"):
    """One figure comparing loaded runs {label: load(...)}. Top: a layer × epoch gradient-norm
    heatmap per run (shared colour scale), then dead-unit fraction and update sparsity per layer
    at the last log point. Bottom: per-layer gradient norms at the last log point, effective rank
    of φ and of the last hidden layer over time, policy churn, off-policy KL."""
    import matplotlib.pyplot as plt

    grids = [np.log10(np.maximum(d[f"grad_norm/{encoder}"], 1e-12)) for d in runs.values()]
    vmin, vmax = min(g.min() for g in grids), max(g.max() for g in grids)
    ncols = len(runs) + 2
    fig, axes = plt.subplots(2, ncols, figsize=(4.2 * ncols, 8.0), squeeze=False)
    for ax, (label, data) in zip(axes[0], runs.items()):
        image = plot_grad_heatmap(ax, data, encoder, vmin, vmax)
        ax.set_title(f"{label}\nlog10 grad norm ({encoder})", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.05)

    def per_layer_panel(ax, key, title, offset):
        for label, data in runs.items():
            values = data[f"{key}/{encoder}"][-1]
            ax.plot(np.arange(offset, offset + len(values)), values, ".-", label=label)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("layer index (0 = input)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)

    per_layer_panel(
        axes[0, -2], "dead_units", "dead-unit fraction per hidden layer (last log point)", 0
    )
    per_layer_panel(
        axes[0, -1],
        "update_sparsity",
        "fraction of parameters unchanged since previous log point",
        0,
    )

    ax = axes[1, 0]
    for label, data in runs.items():
        ax.semilogy(data[f"grad_norm/{encoder}"][-1], ".-", label=label)
    ax.set_xlabel("layer index (0 = input)")
    ax.set_title("grad norm per layer (last log point)", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    for label, data in runs.items():
        (line,) = ax.plot(data["epoch"], data["effective_rank/phi"], "o-", label=f"{label}: φ(s,a)")
        ax.plot(
            data["epoch"],
            data[f"effective_rank/hidden_{encoder}"],
            "s--",
            color=line.get_color(),
            label=f"{label}: last hidden",
        )
    ax.set_xlabel("epoch")
    ax.set_title("effective rank", fontsize=9)
    ax.legend(fontsize=7)

    for ax, key, title in (
        (axes[1, 2], "policy_churn", "policy churn: mean |Δ action| per epoch (probe states)"),
        (
            axes[1, 3] if ncols > 3 else None,
            "offpolicy_kl",
            "off-policy drift: KL(behaviour ‖ current)",
        ),
    ):
        if ax is None:
            continue
        for label, data in runs.items():
            if key == "offpolicy_kl" and "offpolicy_kl_k3" in data:  # the three estimators
                (line,) = ax.plot(data["epoch"], data["offpolicy_kl_k1"], "o-", label=f"{label}: k1")
                for k, style in (("k2", "s--"), ("k3", "^:")):
                    ax.plot(data["epoch"], data[f"offpolicy_kl_{k}"], style,
                            color=line.get_color(), label=f"{label}: {k}")
            elif key in data:
                ax.plot(data["epoch"], data[key], "o-", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[1, 4:]:
        ax.axis("off")
    fig.suptitle(" vs ".join(runs))
    fig.tight_layout()
    return fig


def plot(
    runs: Sequence[str], out: str, labels: Sequence[str] | None = None, encoder: str = "critic_sa"
) -> None:
    """Compare the diagnostics of run directories and save the figure to `out`; prints each run's
    final numbers as JSON."""
    import matplotlib

    matplotlib.use("Agg")
    labels = list(labels) if labels else [Path(r).name for r in runs]
    loaded = {label: load(r) for label, r in zip(labels, runs)}
    for label, data in loaded.items():
        print(label, json.dumps(final_summary(data), default=float, indent=1))
    fig = plot_comparison(loaded, encoder)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"saved {out}")


if __name__ == "__main__":
    import tyro

    tyro.cli(plot)
