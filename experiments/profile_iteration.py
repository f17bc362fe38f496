"""Where one training iteration's time goes: each phase of `Trainer.train_iteration` compiled on
its own (for one seed, as training runs it), timed in interleaved rounds, and set against the
whole iteration.

    python -m experiments.profile_iteration                      # ant, 64 envs × 62, batch 256
    python -m experiments.profile_iteration --depths 16 --env humanoid

Phases (per iteration): `collect` (unroll_length steps of num_envs envs with the stochastic
policy, auto-resets included), `insert` (the unroll into the replay buffer, donated as in
training), `sample` (num_sgd_batches relabelled batches), `critic`, `actor` and `alpha` (each's
num_sgd_batches Adam steps on those batches; `update` is the three as training fuses them), and
`eval` (one evaluation, a full episode on every eval env, amortised over the epoch's
iterations). `iteration` is the real fused iteration; `iteration − collect − insert − sample −
update` is what fusing wins or loses. With `--before` (default), `critic (before)` and
`iteration (before)` are the same programs with the critic's logits computed as crl did before
(and the public code does): every difference φ_i − ψ_j materialised (losses.energy_matrix_direct).
With `--seed-vmap`, the learner phases and the iteration are also timed under a vmap over the
one seed, as crl ran a single seed before `crl.train.over_seeds` called it directly. With
`--psi-twice`, `update (psi twice)` and `iteration (psi twice)` are the update and the iteration
with the actor step computing the goal encoder's ψ(g) itself, as before the update reused the
critic step's.

GFLOP: XLA's cost analysis counts a loop body once, also the scan over residual blocks, so the
learner phases (critic, actor, update and their "before") use the analytic matmul count of
`experiments.bench.update_matmul_flops` × SGD steps; the other phases use XLA's count × their
trip count (unroll steps, SGD steps, episode steps) — a lower bound past depth 4, where the
policy's blocks are scanned; the iteration's is the sum of its parts.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp

from crl import buffer, losses
from crl.agent import CRLAgent
from crl.config import TrainConfig, validate
from crl.train import SEED_AXIS, Trainer, make_trainer, over_seeds
from experiments.bench import update_matmul_flops

PHASES = ("collect", "insert", "sample", "critic", "actor", "alpha", "update", "eval", "iteration")
BEFORE = ("critic (before)", "iteration (before)")
# The learner and the iteration as crl ran a single seed before 25e2a47: under a size-1 vmap.
SEED_VMAP = ("critic (seed vmap)", "actor (seed vmap)", "update (seed vmap)",
             "iteration (seed vmap)")
PSI_TWICE = ("update (psi twice)", "iteration (psi twice)")


@dataclasses.dataclass(frozen=True)
class Args:
    """The paper preset scaled to a CPU: 64 envs × 62 steps and the paper's ratio of SGD steps to
    env steps (800 per 512 × 62 → 100 per 64 × 62)."""

    env: str = "ant"
    depths: tuple[int, ...] = (4, 16, 64)
    num_envs: int = 64
    unroll_length: int = 62
    batch_size: int = 256
    num_sgd_batches: int = 100
    width: int = 256
    num_eval_envs: int = 64
    iterations_per_epoch: int = 31
    """Iterations per evaluation (the paper preset: 10⁸ steps in 100 epochs of 512 × 62 → 31)."""
    min_replay_size: int = 1000
    repeats: int = 3
    before: bool = True
    """Also time the critic and the iteration with the critic's logits computed as before."""
    seed_vmap: bool = False
    """Also time the learner phases and the iteration under a vmap over the one seed, as crl
    ran a single seed before 25e2a47 (it now calls the seed's function directly)."""
    psi_twice: bool = False
    """Also time the update and the iteration with the actor step computing ψ(g) itself."""
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class DirectEnergyAgent(CRLAgent):
    """The agent as it was before the matmul form of the logits: every difference φ_i − ψ_j
    materialised ([batch, batch, repr] forward and backward)."""

    def pairwise_energy(self, sa_repr, goal_repr):
        return losses.energy_matrix_direct(sa_repr, goal_repr)


class PsiTwiceAgent(CRLAgent):
    """The agent as it was before its update shared ψ(g): the actor step runs the goal encoder
    again instead of taking the critic step's output (same values, one more forward)."""

    def actor_step(self, agent_state, critic_params, batch, rng, reference=None, goal_repr=None):
        return super().actor_step(agent_state, critic_params, batch, rng, reference)


def with_agent_class(trainer: Trainer, agent_class: type[CRLAgent]) -> Trainer:
    """`trainer` with its agent's fields in an instance of `agent_class`."""
    agent = trainer.agent
    fields = {f.name: getattr(agent, f.name) for f in dataclasses.fields(agent)}
    return dataclasses.replace(trainer, agent=agent_class(**fields))


def with_direct_energy(trainer: Trainer) -> Trainer:
    return with_agent_class(trainer, DirectEnergyAgent)


def profile_config(args: Args, depth: int) -> TrainConfig:
    config = TrainConfig(
        env=args.env, depth=depth, width=args.width, num_envs=args.num_envs,
        unroll_length=args.unroll_length, batch_size=args.batch_size,
        num_sgd_batches=args.num_sgd_batches, num_eval_envs=args.num_eval_envs,
        min_replay_size=args.min_replay_size, seed=args.seed,
    )
    validate(config)
    return config


def phase_programs(trainer: Trainer) -> dict[str, Callable]:
    """Each phase as a function of (train state, stacked batches, records); all are vmapped over
    the seed axis by the caller."""
    agent, config = trainer.agent, trainer.config

    def collect(state, batches, records):
        return trainer.collect(state.agent.actor_params, state.env_state, state.rng)

    def insert(state, batches, records):
        return buffer.add(state.replay, records)

    def sample(state, batches, records):
        rngs = jax.random.split(state.rng, config.num_sgd_batches)
        return jax.lax.map(lambda rng: trainer.sample_batch(state.replay, rng), rngs)

    def critic(state, batches, records):
        def body(agent_state, batch):
            params, opt, (metrics, _), _ = agent.critic_step(agent_state, batch)
            return agent_state.replace(critic_params=params, critic_opt=opt), metrics

        return jax.lax.scan(body, state.agent, batches)

    def actor(state, batches, records):
        rngs = jax.random.split(state.rng, config.num_sgd_batches)

        def body(agent_state, batch_rng):
            batch, rng = batch_rng
            params, opt, aux, _ = agent.actor_step(agent_state, agent_state.critic_params, batch, rng)
            return agent_state.replace(actor_params=params, actor_opt=opt), aux

        return jax.lax.scan(body, state.agent, (batches, rngs))

    def alpha(state, batches, records):
        log_prob = jnp.zeros((config.batch_size,))

        def body(agent_state, _):
            log_alpha, opt, value = agent.alpha_step(agent_state, log_prob + agent_state.log_alpha)
            return agent_state.replace(log_alpha=log_alpha, alpha_opt=opt), value

        return jax.lax.scan(body, state.agent, None, config.num_sgd_batches)

    def update(state, batches, records):
        rngs = jax.random.split(state.rng, config.num_sgd_batches)
        return jax.lax.scan(lambda s, br: agent.update(s, *br), state.agent, (batches, rngs))

    def evaluate(state, batches, records):
        return trainer.evaluate(state.agent.actor_params, state.rng)

    def iteration(state, batches, records):
        return trainer.train_iteration(state)

    return {
        "collect": collect, "insert": insert, "sample": sample, "critic": critic,
        "actor": actor, "alpha": alpha, "update": update, "eval": evaluate,
        "iteration": iteration,
    }


def flops_of(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return None if not analysis or "flops" not in analysis else float(analysis["flops"])


def profile_depth(args: Args, depth: int, log=print) -> list[dict]:
    """Compile every phase at `depth`, time them in `repeats` interleaved rounds (best of each),
    and return one row per phase: seconds per iteration (eval divided by iterations_per_epoch),
    share of the iteration, GFLOP per call."""
    config = profile_config(args, depth)
    trainer = make_trainer(config)
    rngs = jax.random.split(jax.random.PRNGKey(config.seed), 1)
    start = time.perf_counter()
    state = jax.jit(over_seeds(trainer.init))(rngs)
    jax.block_until_ready(state)
    log(f"depth {depth}: init + prefill {time.perf_counter() - start:.1f}s")
    # Inputs of the update phases: real relabelled batches and a real unroll.
    programs = phase_programs(trainer)
    if args.before:
        before = phase_programs(with_direct_energy(trainer))
        programs.update({name: before[name.split()[0]] for name in BEFORE})
    if args.psi_twice:
        psi_twice = phase_programs(with_agent_class(trainer, PsiTwiceAgent))
        programs.update({name: psi_twice[name.split()[0]] for name in PSI_TWICE})
    batches = jax.jit(over_seeds(programs["sample"]))(state, None, None)
    _, records, _ = jax.jit(over_seeds(programs["collect"]))(state, None, None)

    if args.seed_vmap:
        programs.update({name: programs[name.split()[0]] for name in SEED_VMAP})

    compiled, flops = {}, {}
    for name, fn in programs.items():
        start = time.perf_counter()
        # insert and iteration donate the buffer / state, as training does.
        donate = (0,) if name.split()[0] in ("insert", "iteration") else ()
        if name in SEED_VMAP:
            vmapped = jax.vmap(fn, in_axes=(0, 0, 0), axis_name=SEED_AXIS)
        else:
            vmapped = over_seeds(fn, in_axes=(0, 0, 0))
        compiled[name] = jax.jit(vmapped, donate_argnums=donate).lower(state, batches, records).compile()
        flops[name] = flops_of(compiled[name])
        log(f"depth {depth}: compiled {name} in {time.perf_counter() - start:.1f}s")

    def run(name: str) -> float:
        inputs = state
        if name.split()[0] in ("insert", "iteration"):  # donated: give it its own copy
            inputs = jax.tree.map(jnp.copy, state)
            jax.block_until_ready(inputs)
        start = time.perf_counter()
        jax.block_until_ready(compiled[name](inputs, batches, records))
        return time.perf_counter() - start

    for name in compiled:  # warm-up: first-run allocations
        run(name)
    best = {name: float("inf") for name in compiled}
    for _ in range(args.repeats):
        for name in compiled:
            best[name] = min(best[name], run(name))
    best["eval"] /= args.iterations_per_epoch
    total = best["iteration"] + best["eval"]
    # XLA counts a loop body once: scale by each phase's trip count; an iteration is its parts.
    sgd = config.num_sgd_batches
    trips = {"collect": config.unroll_length, "insert": 1, "sample": sgd, "critic": sgd,
             "actor": sgd, "alpha": sgd, "update": sgd,
             "eval": trainer.evaluation_env.episode_length}
    gflop = {name: None if flops[name] is None else flops[name] * trips[name.split()[0]] / 1e9
             for name in flops if name.split()[0] in trips}
    matmul = update_matmul_flops(trainer.agent, config.batch_size)
    learner = {"critic": "critic_step", "actor": "actor_step", "update": "total"}
    for name in gflop:
        if name.split()[0] in learner:
            gflop[name] = matmul[learner[name.split()[0]]] * sgd / 1e9
    parts = [gflop[name] for name in ("collect", "insert", "sample", "update")]
    if None not in parts:
        gflop["iteration"] = sum(parts)
        if "critic (before)" in gflop and None not in (gflop["critic (before)"], gflop["critic"]):
            gflop["iteration (before)"] = (gflop["iteration"] + gflop["critic (before)"]
                                           - gflop["critic"])
        if args.seed_vmap:
            gflop["iteration (seed vmap)"] = gflop["iteration"]
    if args.psi_twice:  # one more goal-encoder forward per SGD step
        extra = (matmul["critic_step"] + matmul["actor_step"] - matmul["total"]) * sgd / 1e9
        gflop["update (psi twice)"] = gflop["update"] + extra
        if gflop.get("iteration") is not None:
            gflop["iteration (psi twice)"] = gflop["iteration"] + extra
    rows = []
    extra_phases = ((BEFORE if args.before else ()) + (SEED_VMAP if args.seed_vmap else ())
                    + (PSI_TWICE if args.psi_twice else ()))
    for name in PHASES + extra_phases:
        call_seconds = best[name] * (args.iterations_per_epoch if name == "eval" else 1)
        rows.append({
            "env": args.env, "depth": depth, "phase": name, "seconds": best[name],
            "share": best[name] / total,
            "gflop": gflop.get(name),
            "gflop_per_second": None if gflop.get(name) is None else gflop[name] / call_seconds,
        })
    return rows


def main(args: Args) -> list[dict]:
    """Profile every depth and print one table per depth; returns the rows."""
    from rich.console import Console
    from rich.table import Table

    for depth in args.depths:
        profile_config(args, depth)  # bad input fails before anything compiles
    console = Console()
    rows = []
    for depth in args.depths:
        depth_rows = profile_depth(args, depth, log=console.log)
        rows.extend(depth_rows)
        table = Table(title=(
            f"{args.env}, depth {depth}: one iteration ({args.num_envs} envs × "
            f"{args.unroll_length}, {args.num_sgd_batches} SGD steps of batch {args.batch_size}) "
            f"+ eval / {args.iterations_per_epoch} on {jax.devices()[0].platform}"
        ))
        for column in ("phase", "ms / iteration", "share of iteration + eval", "GFLOP / call",
                       "GFLOP/s"):
            table.add_column(column, justify="right")
        for row in depth_rows:
            table.add_row(
                row["phase"], f"{1e3 * row['seconds']:.1f}", f"{100 * row['share']:.1f}%",
                "—" if row["gflop"] is None else f"{row['gflop']:.3g}",
                "—" if row["gflop_per_second"] is None else f"{row['gflop_per_second']:.3g}",
            )
        console.print(table)
        # Each optional program against the one it varies ("critic (before)" → "critic").
        seconds = {row["phase"]: row["seconds"] for row in depth_rows}
        comparisons = [(args.before, "before/after", BEFORE),
                       (args.seed_vmap, "one seed under a seed vmap / unbatched", SEED_VMAP),
                       (args.psi_twice, "ψ(g) computed twice / shared", PSI_TWICE)]
        for enabled, label, names in comparisons:
            if enabled:
                ratios = ", ".join(f"{name.split()[0]} {seconds[name] / seconds[name.split()[0]]:.2f}×"
                                   for name in names)
                console.print(f"depth {depth}: {label} — {ratios} (one run, interleaved)")
    return rows


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
