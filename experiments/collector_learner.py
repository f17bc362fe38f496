"""Collector/learner separation (paper, "exploration vs expressivity"): a *collector* agent trains
normally and alone fills the replay buffer; *learner* agents train only from batches of that same
buffer — the very batches the collector updates on, with the same `CRLAgent.update` — and never
act during training. Every agent is then evaluated with its own deterministic policy.

The training loop is `crl.train.Trainer`'s, unchanged: the trainer is given an `AgentGroup` as its
agent, whose `act` is the collector's and whose `update` applies each member's `CRLAgent.update`
to the same batch. So collection (`Trainer.collect`), insertion (`buffer.add`), batch sampling
(`Trainer.sample_batch`) and evaluation (`Trainer.evaluate`) are the ones every run uses.

    python -m experiments.collector_learner --out-dir runs/collector_learner --env point_big \
        --width 64 --collector-depths 32 4 --learner-depths 32 4 --num-seeds 3

writes one run directory per collector depth and results.csv (one row per collector depth ×
agent × seed × epoch, the sweep table's columns plus role and collector_depth). Rerunning skips
collector depths that have finished.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import struct
from rich.console import Console

from crl import run_dir as run_dir_lib
from crl import tracking
from crl.agent import AgentState, Batch, CRLAgent
from crl.config import ConfigError, TrainConfig, validate
from crl.run import per_seed
from crl.scores import METRIC as SCORE_METRIC
from crl.scores import SCORE_WINDOW, final_score, is_eval_epoch
from crl.train import Trainer, make_agent, make_env, make_eval_env, over_seeds
from experiments.depth_sweep import (
    RESULTS_FILE, _atomic_write, check_depths, config_columns, count_parameters, order_columns,
    run_status, summary_table,
)


@struct.dataclass
class GroupState:
    """Parameters and optimiser states of the collector and of every learner."""

    collector: AgentState
    learners: tuple[AgentState, ...]

    @property
    def actor_params(self) -> dict:
        """The policy that acts in the environment: always the collector's."""
        return self.collector.actor_params

    # The Trainer's NaN guard (crl.guard) reads these; they cover every member so a learner that
    # diverges is caught as well.
    @property
    def critic_params(self) -> tuple[dict, ...]:
        """Every member's critic parameters, collector first."""
        return (self.collector.critic_params, *(s.critic_params for s in self.learners))

    @property
    def log_alpha(self) -> tuple[jax.Array, ...]:
        """Every member's log α, collector first."""
        return (self.collector.log_alpha, *(s.log_alpha for s in self.learners))


@dataclass(frozen=True)
class AgentGroup:
    """A collector and learners behind the `CRLAgent` interface the Trainer uses: `act` is the
    collector's; `update` is every member's own `CRLAgent.update` on the same batch."""

    collector: CRLAgent
    learners: tuple[CRLAgent, ...]

    def init(self, rng: jax.Array) -> GroupState:
        """The collector gets exactly the parameters it would get training alone from `rng`; the
        learners get independent keys folded from it."""
        learners = tuple(
            agent.init(jax.random.fold_in(rng, i + 1)) for i, agent in enumerate(self.learners)
        )
        return GroupState(collector=self.collector.init(rng), learners=learners)

    def act(self, actor_params: dict, state, goal, rng) -> jax.Array:
        return self.collector.act(actor_params, state, goal, rng)

    def update(
        self, group_state: GroupState, batch: Batch, rng: jax.Array, reference: Batch | None = None
    ) -> tuple[GroupState, dict[str, jax.Array]]:
        """The collector's update, then each learner's, all on `batch` (and the same `rng` and
        churn reference batch). Collector metrics keep their names; learner i's are prefixed
        `learner{i}/`."""
        collector, metrics = self.collector.update(group_state.collector, batch, rng, reference)
        learners = []
        for i, (agent, state) in enumerate(zip(self.learners, group_state.learners)):
            state, learner_metrics = agent.update(state, batch, rng, reference)
            learners.append(state)
            metrics.update({f"learner{i}/{k}": v for k, v in learner_metrics.items()})
        return GroupState(collector=collector, learners=tuple(learners)), metrics


def learner_config(config: TrainConfig, depth: int) -> TrainConfig:
    """A learner's config: the collector's with another depth (for actor and critic)."""
    return dataclasses.replace(config, depth=depth, actor_depth=None, critic_depth=None)


def check_config(config: TrainConfig) -> None:
    """`validate` plus what this experiment cannot do: per-agent diagnostics (the hook measures
    one agent; a group has several)."""
    validate(config)
    if config.diagnostics_every > 0:
        raise ConfigError(
            "diagnostics_every: collector/learner runs do not measure diagnostics; leave it 0 "
            "(a depth's collector trains exactly as `crl train` at that depth: diagnose it there)"
        )


def make_group_trainer(config: TrainConfig, learner_depths: tuple[int, ...]) -> Trainer:
    """A Trainer whose collector is `config`'s agent and which also trains one learner per
    entry of learner_depths on the collector's batches."""
    if not learner_depths:
        raise ConfigError("learner_depths: give at least one learner depth")
    env = make_env(config)
    group = AgentGroup(
        collector=make_agent(config, env),
        learners=tuple(make_agent(learner_config(config, d), env) for d in learner_depths),
    )
    return Trainer(config=config, env=env, agent=group, eval_env=make_eval_env(config, env))


def member_trainer(trainer: Trainer, agent: CRLAgent) -> Trainer:
    """The same trainer (config, env) acting with one member agent, used to evaluate it."""
    return dataclasses.replace(trainer, agent=agent)


def run_collector_learner(
    config: TrainConfig,
    learner_depths: tuple[int, ...],
    console: Console | None = None,
    quiet: bool = False,
) -> pd.DataFrame:
    """Train a collector (config.depth) with learners of `learner_depths` for config.num_seeds
    vmapped seeds; evaluate every agent each evaluated epoch (`eval_every`). Writes a run directory (config.json,
    metrics.jsonl with one row per epoch × seed × agent, summary.json) and returns its rows."""
    console = console or Console()
    check_config(config)
    for depth in learner_depths:
        validate(learner_config(config, depth))
    trainer = make_group_trainer(config, learner_depths)
    group: AgentGroup = trainer.agent
    learner_configs = [learner_config(config, d) for d in learner_depths]
    resolved = {
        "learner_depths": list(learner_depths),
        "episode_length": trainer.env.episode_length,
        "eval_env": trainer.evaluation_env.name,
        "iterations_per_epoch": config.iterations_per_epoch,
        "devices": [str(d) for d in jax.devices()],
    }
    run_dir = run_dir_lib.create(config, resolved)
    if not quiet:
        console.print(
            f"[bold]collector/learner[/] {run_dir}: collector depth {config.depth}, learner "
            f"depths {', '.join(map(str, learner_depths))}, {config.num_seeds} seeds"
        )

    seeds = jnp.arange(config.seed, config.seed + config.num_seeds)
    keys = jax.vmap(lambda s: jax.random.split(jax.random.PRNGKey(s), 3))(seeds)
    init_rngs, eval_rngs = keys[:, 0], keys[:, 1]
    state = jax.jit(over_seeds(trainer.init))(init_rngs)
    run_epoch = jax.jit(over_seeds(trainer.run_epoch), donate_argnums=0)
    members = [("collector", config, group.collector)] + [
        ("learner", c, agent) for c, agent in zip(learner_configs, group.learners)
    ]
    evaluators = [jax.jit(jax.vmap(member_trainer(trainer, agent).evaluate)) for *_, agent in members]
    describe = [
        {
            "role": role, **config_columns(dataclasses.asdict(c), count_parameters(c)),
            "collector_depth": config.depth,
        }
        for role, c, _ in members
    ]

    rows: list[dict[str, Any]] = []
    loggers = tracking.start(config, run_dir, resolved, seeds.tolist())
    start = time.perf_counter()
    with loggers:
        for epoch in range(config.num_epochs):
            state, train_metrics = run_epoch(state)
            train_metrics = per_seed(train_metrics)
            epoch_rngs = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_rngs, epoch)
            actor_params = [state.agent.collector.actor_params] + [
                learner.actor_params for learner in state.agent.learners
            ]
            steps = int(state.env_steps[0])
            evaluated = is_eval_epoch(epoch, config.eval_every, config.num_epochs)
            epoch_rows = []
            for index, (evaluate, params, columns) in enumerate(zip(evaluators, actor_params, describe)):
                prefix = "" if index == 0 else f"learner{index - 1}/"
                evals = per_seed(evaluate(params, epoch_rngs)) if evaluated else [{} for _ in seeds]
                for seed, train_m, eval_m in zip(seeds, train_metrics, evals):
                    own = {
                        k[len(prefix):]: v for k, v in train_m.items()
                        if (k.startswith(prefix) if prefix else "/" not in k)
                    }
                    epoch_rows.append({
                        "epoch": epoch, "seed": int(seed), "env_steps": steps,
                        "wall_time": time.perf_counter() - start, "agent": index, **columns,
                        **{f"train/{k}": v for k, v in own.items()},
                        **{f"eval/{k}": v for k, v in eval_m.items()},
                    })
            loggers.log_epoch(epoch_rows)
            rows.extend(epoch_rows)
            if not quiet and evaluated:
                scores = "  ".join(
                    f"{c['role']} d{c['depth']}: "
                    f"{np.mean([r['eval/time_at_goal'] for r in epoch_rows if r['agent'] == i]):.1f}"
                    for i, c in enumerate(describe)
                )
                console.print(f"epoch {epoch + 1}/{config.num_epochs}  {steps:,} steps  time at goal  {scores}")

    final = [r for r in rows if r["epoch"] == config.num_epochs - 1]
    # Each agent's score: per seed, the mean of its last score_window evaluations (crl.scores).
    score = lambda i: float(np.mean([
        final_score([r["eval/time_at_goal"] for r in sorted(rows, key=lambda r: r["epoch"])
                     if r["agent"] == i and r["seed"] == seed and SCORE_METRIC in r],
                    config.score_window)
        for seed in sorted({r["seed"] for r in rows})
    ]))
    loggers.finish({
        "run_dir": str(run_dir),
        "collector_depth": config.depth,
        "learner_depths": list(learner_depths),
        "env_steps": final[0]["env_steps"],
        "train_seconds": time.perf_counter() - start,
        "eval_env": trainer.evaluation_env.name,
        "time_at_goal": {f"{c['role']}_d{c['depth']}": score(i) for i, c in enumerate(describe)},
    })
    return pd.DataFrame(rows)


def experiment_table(out_dir: str | Path) -> pd.DataFrame:
    """The tidy table of every finished collector run under out_dir/runs."""
    out_dir = Path(out_dir)
    runs = sorted(p for p in (out_dir / "runs").glob("*") if (p / run_dir_lib.SUMMARY_FILE).exists())
    if not runs:
        return pd.DataFrame()
    table = pd.concat(
        [run_dir_lib.load_metrics(p).assign(sweep=out_dir.name, run=p.name, variant="collector_learner")
         for p in runs],
        ignore_index=True,
    )
    return order_columns(table)


@dataclass(frozen=True)
class CollectorLearnerOptions:
    """Options of the collector/learner experiment; every other flag is a `crl train` flag and
    sets the collector's config (learners copy it except for depth). The experiment directory
    (runs/collector_d{D}/ per collector depth, results.csv) is the config's out_dir."""

    collector_depths: tuple[int, ...] = (32, 4)
    learner_depths: tuple[int, ...] = (32, 4)
    final_epochs: int = SCORE_WINDOW
    """Epochs averaged for the final time at goal in the summary (the paper: the last 5)."""
    quiet: bool = False


def run_experiment(
    base: TrainConfig, collector_depths: tuple[int, ...], learner_depths: tuple[int, ...],
    out_dir: str | Path, console: Console | None = None, quiet: bool = False,
) -> pd.DataFrame:
    """One collector/learner run per collector depth (skipping finished ones); writes and returns
    the experiment's tidy table."""
    console = console or Console()
    configs = [
        dataclasses.replace(
            base, depth=d, actor_depth=None, critic_depth=None,
            out_dir=str(Path(out_dir) / "runs"), run_name=f"collector_d{d}",
            wandb_group=base.wandb_group or Path(out_dir).name,
        )
        for d in collector_depths
    ]
    for config in configs:
        check_config(config)
    for config in configs:
        status = run_status(config)
        if status == "done":
            continue
        if status == "partial":
            import shutil

            shutil.rmtree(Path(config.out_dir) / config.run_name)
        run_collector_learner(config, learner_depths, console=console, quiet=quiet)
    table = experiment_table(out_dir)
    _atomic_write(Path(out_dir) / RESULTS_FILE, table.to_csv(index=False))
    return table


def run_command(options: CollectorLearnerOptions, base: TrainConfig) -> pd.DataFrame:
    """`crl collector-learner` (parsed by crl.cli): the collector × learner depth grid in
    base.out_dir, then a summary table."""
    check_depths({n: getattr(options, n) for n in ("collector_depths", "learner_depths")})
    table = run_experiment(
        base, options.collector_depths, options.learner_depths, base.out_dir, quiet=options.quiet,
    )
    console = Console()
    console.print(summary_table(table, options.final_epochs, "final time at goal: collector × learner"))
    console.print(f"tidy table: {Path(base.out_dir) / RESULTS_FILE}")
    return table


def main(args: list[str] | None = None) -> None:
    """`python -m experiments.collector_learner ...` is `crl collector-learner ...`."""
    from crl.cli import main as cli_main

    cli_main(["collector-learner", *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
