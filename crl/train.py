"""The training loop: collection, replay, relabelling and updates compiled together.

`Trainer` holds only static things (config, env, agent); its methods are pure functions of a
`TrainState` pytree, so a whole epoch — `iterations_per_epoch` × (collect `unroll_length` steps
from `num_envs` envs, insert, `num_sgd_batches` updates) — is one `jax.jit`-compiled `lax.scan`,
and the state can be vmapped over seeds (`over_seeds`). Python runs only between epochs (see
`crl.run`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
import jax
from jax.sharding import Mesh
import jax.numpy as jnp
from flax import struct

import envs
from crl import buffer, diagnostics
from crl.agent import AgentState, Batch, CRLAgent
from crl.config import ConfigError, TrainConfig
from crl.distributed import constrain_leading
from crl.guard import nonfinite_flags
from envs import vector
from envs.base import EnvState, GoalEnv


@struct.dataclass
class TrainState:
    agent: AgentState
    env_state: EnvState  # batched over num_envs
    replay: buffer.ReplayState
    rng: jax.Array
    env_steps: jax.Array  # int32, prefill included
    iteration: jax.Array  # int32, training iterations done


def make_env(config: TrainConfig, name: str | None = None) -> GoalEnv:
    """The configured environment (or the registered env `name`), with the episode-length and
    early-termination overrides applied."""
    overrides = {} if config.episode_length is None else {"episode_length": config.episode_length}
    if config.terminate_when_unhealthy is not None:
        overrides["terminate_when_unhealthy"] = config.terminate_when_unhealthy
    return envs.make(name or config.env, **overrides)


def eval_env_name(config: TrainConfig) -> str:
    """The env evaluations run on: `config.eval_env`, or by default the paper's evaluation
    variant of the training env (`{env}_eval`) where one is registered, else the training env."""
    return config.eval_env or envs.registry.default_eval_env(config.env)


def make_eval_env(config: TrainConfig, env: GoalEnv) -> GoalEnv:
    """The evaluation env; ConfigError unless its observation, goal and action sizes are the
    training env's (the same policy acts on both)."""
    name = eval_env_name(config)
    if name == env.name:
        return env
    eval_env = make_env(config, name)
    for size in ("state_size", "goal_size", "action_size"):
        if getattr(eval_env, size) != getattr(env, size):
            raise ConfigError(
                f"eval_env: {name!r} has {size} {getattr(eval_env, size)}, but the training "
                f"env {env.name!r} has {getattr(env, size)}; they must match"
            )
    return eval_env


def make_agent(config: TrainConfig, env: GoalEnv) -> CRLAgent:
    return CRLAgent(
        state_size=env.state_size,
        goal_size=env.goal_size,
        action_size=env.action_size,
        actor_network=config.actor_network(),
        critic_network=config.critic_network(),
        repr_size=config.repr_size,
        actor_lr=config.actor_lr,
        critic_lr=config.critic_lr,
        alpha_lr=config.alpha_lr,
        logsumexp_penalty=config.logsumexp_penalty,
        target_entropy_scale=config.target_entropy_scale,
        isotropy_weight=config.isotropy_weight,
        churn_weight=config.churn_weight,
    )


SEED_AXIS = "seeds"


def over_seeds(fn, in_axes: int | None | tuple = 0):
    """`jax.vmap(fn, in_axes)` over the leading seed axis, named SEED_AXIS. Collection reduces
    its "did an episode end" test over that axis, so the auto-reset stays a branch taken only on
    steps where some env finished (unnamed, a vmapped `lax.cond` computes both sides).

    With one seed, `fn` runs unbatched and the seed axis is added back to its outputs (the
    reduction over SEED_AXIS then covers the one batch of envs). It is the same computation
    without a size-1 vmap, which made the learner ~1.5× slower on a CPU (XLA handles the
    degenerate batch dimension poorly) and up to doubled the tracing that dominates a
    warm-cache start (batching re-traces every scan body). Results agree to float rounding."""
    vmapped = jax.vmap(fn, in_axes=in_axes, axis_name=SEED_AXIS)

    @functools.wraps(fn)  # programs keep fn's name (the cache, profiles)
    def on_seeds(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        batched = [leaf for arg, axis in zip(args, axes) if axis == 0 for leaf in jax.tree.leaves(arg)]
        if not batched or batched[0].shape[0] != 1:
            return vmapped(*args)
        unbatched = [
            jax.tree.map(lambda x: x[0], arg) if axis == 0 else arg for arg, axis in zip(args, axes)
        ]
        return jax.tree.map(lambda x: x[None], fn(*unbatched))

    return on_seeds


def mean_over_leading(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), metrics)


@dataclass(frozen=True)
class Trainer:
    config: TrainConfig
    env: GoalEnv
    agent: CRLAgent
    mesh: Mesh | None = None
    """Devices to split envs and SGD batches over (crl.distributed); None = no constraints."""
    eval_env: GoalEnv | None = None
    """The env `evaluate` runs on (same sizes as `env`); None = `env`."""

    @property
    def evaluation_env(self) -> GoalEnv:
        return self.eval_env or self.env

    # ---- pieces ---------------------------------------------------------------------------------
    def split_obs(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """obs = state ⊕ goal → (state, goal)."""
        return obs[..., : self.env.state_size], obs[..., self.env.state_size :]

    def collect(
        self, actor_params: dict, env_state: EnvState, rng: jax.Array
    ) -> tuple[EnvState, dict[str, jax.Array], dict[str, jax.Array]]:
        """`unroll_length` steps of every env with the stochastic policy.

        Returns the new env state, the transitions to store ([unroll, num_envs, ...]: state,
        action, step-in-episode) and per-step env metrics.
        """

        def one_step(carry, step_rng: jax.Array):
            env_state, spares = carry
            state, goal = self.split_obs(env_state.obs)
            action = self.agent.act(actor_params, state, goal, step_rng)
            record = {"state": state, "action": action, "step": env_state.step}
            if self.config.diagnostics_every:  # off-policy drift needs the behaviour density
                record.update(diagnostics.behaviour_record(self.agent, actor_params, state, goal, action))
            next_state, spares = vector.step(self.env, env_state, action, spares, SEED_AXIS)
            return (next_state, spares), (record, next_state.metrics)

        env_state = constrain_leading(env_state, self.mesh)
        spares = None
        if vector.uses_spares(self.env):  # fresh starts for envs that terminate early
            env_state, spares = vector.prepare_spares(self.env, env_state)
        rngs = jax.random.split(rng, self.config.unroll_length)
        (env_state, _), (records, metrics) = jax.lax.scan(one_step, (env_state, spares), rngs)
        return env_state, records, metrics

    def sample_batch(self, replay: buffer.ReplayState, rng: jax.Array) -> Batch:
        """A batch of stored (s, a) with goals relabelled from the same episode's future."""
        now, future, _ = buffer.sample_with_future(
            replay, rng, self.config.batch_size, self.config.discount
        )
        batch = Batch(
            state=now["state"], action=now["action"], goal=self.env.achieved_goal(future["state"])
        )
        return constrain_leading(batch, self.mesh)

    def learn(
        self, agent_state: AgentState, replay: buffer.ReplayState, rng: jax.Array
    ) -> tuple[AgentState, dict[str, jax.Array]]:
        """`num_sgd_batches` updates, each on a freshly sampled batch; metrics are averaged."""

        def sgd_step(agent_state: AgentState, step_rng: jax.Array):
            sample_rng, update_rng = jax.random.split(step_rng)
            batch = self.sample_batch(replay, sample_rng)
            if not self.config.churn_weight:
                return self.agent.update(agent_state, batch, update_rng)
            # CHAIN's reference batch: a second, independent replay sample.
            reference = self.sample_batch(replay, jax.random.fold_in(sample_rng, 1))
            return self.agent.update(agent_state, batch, update_rng, reference=reference)

        rngs = jax.random.split(rng, self.config.num_sgd_batches)
        agent_state, metrics = jax.lax.scan(sgd_step, agent_state, rngs)
        return agent_state, mean_over_leading(metrics)

    # ---- the loop -------------------------------------------------------------------------------
    def init(self, rng: jax.Array) -> TrainState:
        """Fresh agent and envs, and a replay buffer prefilled with `min_replay_size` steps of the
        initial (untrained, stochastic) policy."""
        agent_rng, env_rng, prefill_rng, rng = jax.random.split(rng, 4)
        agent_state = self.agent.init(agent_rng)
        env_state = jax.vmap(self.env.reset)(jax.random.split(env_rng, self.config.num_envs))
        example = {
            "state": jnp.zeros((self.config.num_envs, self.env.state_size)),
            "action": jnp.zeros((self.config.num_envs, self.env.action_size)),
            "step": jnp.zeros((self.config.num_envs,), jnp.int32),
        }
        if self.config.diagnostics_every:
            example.update(diagnostics.behaviour_example(self.config.num_envs, self.env.goal_size))
        replay = buffer.init(example, self.config.replay_size)

        def prefill(carry, unroll_rng):
            env_state, replay = carry
            env_state, records, _ = self.collect(agent_state.actor_params, env_state, unroll_rng)
            return (env_state, buffer.add(replay, records)), None

        rngs = jax.random.split(prefill_rng, self.config.prefill_unrolls)
        (env_state, replay), _ = jax.lax.scan(prefill, (env_state, replay), rngs)
        return TrainState(
            agent=agent_state,
            env_state=env_state,
            replay=replay,
            rng=rng,
            env_steps=jnp.asarray(
                self.config.prefill_unrolls * self.config.env_steps_per_iteration, jnp.int32
            ),
            iteration=jnp.zeros((), jnp.int32),
        )

    def train_iteration(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """Collect one unroll, store it, then update on relabelled batches."""
        rng, collect_rng, learn_rng = jax.random.split(state.rng, 3)
        env_state, records, env_metrics = self.collect(
            state.agent.actor_params, state.env_state, collect_rng
        )
        replay = buffer.add(state.replay, records)
        agent_state, metrics = self.learn(state.agent, replay, learn_rng)
        metrics["at_goal"] = jnp.mean(env_metrics["at_goal"])
        metrics["distance"] = jnp.mean(env_metrics["distance"])
        metrics.update(nonfinite_flags(agent_state, metrics))
        new_state = TrainState(
            agent=agent_state,
            env_state=env_state,
            replay=replay,
            rng=rng,
            env_steps=state.env_steps + self.config.env_steps_per_iteration,
            iteration=state.iteration + 1,
        )
        return new_state, metrics

    def run_epoch(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """`iterations_per_epoch` training iterations as one scan; metrics averaged over them."""
        state, metrics = jax.lax.scan(
            lambda s, _: self.train_iteration(s), state, None, self.config.iterations_per_epoch
        )
        return state, mean_over_leading(metrics)

    def evaluate(
        self, actor_params: dict, rng: jax.Array, random_policy: bool | jax.Array = False
    ) -> dict[str, jax.Array]:
        """One episode on each of `num_eval_envs` fresh eval envs with the deterministic policy
        (or a uniformly random one, the baseline). Only each env's first episode counts (as in
        the references): time_at_goal is its number of steps within the goal radius, success
        whether it reached the goal at all, final_distance the distance at its last step.
        Early termination ends it before the time limit; later episodes are not counted.
        `random_policy` may be a traced bool, so one compiled program evaluates both."""
        env = self.evaluation_env
        reset_rng, action_rng = jax.random.split(rng)
        env_state = jax.vmap(env.reset)(jax.random.split(reset_rng, self.config.num_eval_envs))
        env_state = constrain_leading(env_state, self.mesh)

        def one_step(env_state: EnvState, step_rng: jax.Array):
            def random_action():
                shape = (self.config.num_eval_envs, env.action_size)
                return jax.random.uniform(step_rng, shape, minval=-1, maxval=1)

            def policy_action():
                state, goal = self.split_obs(env_state.obs)
                return self.agent.act(actor_params, state, goal, None)

            if isinstance(random_policy, bool):
                action = random_action() if random_policy else policy_action()
            else:  # traced: one compiled program serves the baseline and the policy
                action = jnp.where(random_policy, random_action(), policy_action())
            # Only the first episode counts, so no env needs an auto-reset.
            env_state = jax.vmap(env.step_without_reset)(env_state, action)
            return env_state, (env_state.metrics, env_state.done)

        rngs = jax.random.split(action_rng, env.episode_length)
        _, (metrics, done) = jax.lax.scan(one_step, env_state, rngs)
        # Steps up to and including the first done (the first episode ends by then at the
        # latest: the time limit is episode_length steps); [episode_length, num_eval_envs].
        first = (jnp.cumsum(done, axis=0) - done) == 0
        at_goal = metrics["at_goal"] * first
        last = jnp.argmax(done, axis=0)  # the first episode's last step
        distance = metrics["distance"]
        return {
            "time_at_goal": jnp.mean(jnp.sum(at_goal, axis=0)),
            "success": jnp.mean(jnp.max(at_goal, axis=0)),
            "final_distance": jnp.mean(jnp.take_along_axis(distance, last[None], axis=0)[0]),
            "min_distance": jnp.mean(jnp.min(jnp.where(first, distance, jnp.inf), axis=0)),
        }


def make_trainer(config: TrainConfig, mesh: Mesh | None = None) -> Trainer:
    env = make_env(config)
    return Trainer(
        config=config, env=env, agent=make_agent(config, env), mesh=mesh,
        eval_env=make_eval_env(config, env),
    )
