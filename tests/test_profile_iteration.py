"""The per-phase profiler runs end to end at tiny sizes, and its critic/actor/α phases are the
pieces `CRLAgent.update` is made of (no timing assertions)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.agent import Batch
from crl.config import ConfigError, TrainConfig
from crl.train import make_trainer
from experiments import profile_iteration

TINY = profile_iteration.Args(
    env="point_u", depths=(4,), num_envs=4, unroll_length=10, batch_size=16, num_sgd_batches=2,
    width=16, num_eval_envs=2, iterations_per_epoch=3, min_replay_size=20, repeats=1,
)


def test_profile_reports_every_phase_with_shares_and_flops():
    rows = profile_iteration.main(dataclasses.replace(TINY, seed_vmap=True, psi_twice=True))
    assert [row["phase"] for row in rows] == [
        *profile_iteration.PHASES, *profile_iteration.BEFORE, *profile_iteration.SEED_VMAP,
        *profile_iteration.PSI_TWICE]
    by_phase = {row["phase"]: row for row in rows}
    total = by_phase["iteration"]["seconds"] + by_phase["eval"]["seconds"]
    for row in rows:
        assert row["seconds"] > 0 and row["share"] == pytest.approx(row["seconds"] / total)
    # The critic's Adam steps are matmuls: XLA's cost analysis must see them.
    assert by_phase["critic"]["gflop"] > 0 and by_phase["update"]["gflop"] >= by_phase["critic"]["gflop"]
    # Scaled by the loop's trip count: two SGD steps of the critic cost twice its body.
    assert by_phase["iteration"]["gflop"] > by_phase["update"]["gflop"]
    assert by_phase["critic (before)"]["gflop"] > 0
    # The seed-vmapped programs are the same phases: the same matmul count.
    for name in profile_iteration.SEED_VMAP:
        assert by_phase[name]["gflop"] == by_phase[name.split()[0]]["gflop"] > 0
    # Computing ψ(g) twice costs one goal-encoder forward more per SGD step.
    for name in profile_iteration.PSI_TWICE:
        assert by_phase[name]["gflop"] > by_phase[name.split()[0]]["gflop"] > 0


def test_before_agent_differs_only_in_how_the_logits_are_computed():
    """The profile's "before" critic is the same update up to float rounding."""
    config = TrainConfig(env="point_u", width=16, depth=4, batch_size=8)
    trainer = make_trainer(config)
    before = profile_iteration.with_direct_energy(trainer).agent
    state = trainer.agent.init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batch = Batch(
        state=jax.random.normal(keys[0], (8, trainer.agent.state_size)),
        action=jax.random.uniform(keys[1], (8, trainer.agent.action_size), minval=-1, maxval=1),
        goal=jax.random.normal(keys[2], (8, trainer.agent.goal_size)),
    )
    after_params, _, (after_metrics, _), _ = trainer.agent.critic_step(state, batch)
    before_params, _, (before_metrics, _), _ = before.critic_step(state, batch)
    assert isinstance(before, profile_iteration.DirectEnergyAgent)
    np.testing.assert_allclose(after_metrics["critic_loss"], before_metrics["critic_loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(after_params), jax.tree.leaves(before_params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_profile_refuses_bad_input_before_compiling():
    with pytest.raises(ConfigError, match="depth"):
        profile_iteration.main(TINY.__class__(**{**TINY.__dict__, "depths": (6,)}))


def test_update_is_actor_and_alpha_against_the_previous_critic_then_critic_step():
    """The paper's order (scaling-crl's sgd_step): actor and α step against the critic before
    this update, then the critic steps; the actor's ψ(g) comes from the critic step's forward."""
    config = TrainConfig(env="point_u", width=16, depth=4, batch_size=8)
    agent = make_trainer(config).agent
    state = agent.init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    batch = Batch(
        state=jax.random.normal(keys[0], (8, agent.state_size)),
        action=jax.random.uniform(keys[1], (8, agent.action_size), minval=-1, maxval=1),
        goal=jax.random.normal(keys[2], (8, agent.goal_size)),
    )
    # Take one critic step first, so "the critic before this update" and after it differ.
    state = state.replace(critic_params=agent.critic_step(state, batch)[0])
    updated, metrics = jax.jit(agent.update)(state, batch, keys[3])
    critic_params, critic_opt, _, _ = agent.critic_step(state, batch)
    actor_params, actor_opt, (log_prob, actor_metrics), _ = agent.actor_step(
        state, state.critic_params, batch, keys[3])
    log_alpha, _, _ = agent.alpha_step(state, log_prob)
    for got, expected in [(updated.critic_params, critic_params),
                          (updated.actor_params, actor_params), (updated.log_alpha, log_alpha)]:
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["actor_loss"], actor_metrics["actor_loss"], rtol=1e-5)
    # Adam's first step barely depends on the gradient's size, so tell the two orders apart by
    # the loss: against the stepped critic the actor's loss is a different number.
    _, _, (_, against_new), _ = agent.actor_step(state, critic_params, batch, keys[3])
    assert abs(float(against_new["actor_loss"]) - float(metrics["actor_loss"])) > 1e-4


def test_the_update_computes_the_goal_encoder_once():
    """Sharing ψ(g) removes one goal-encoder forward from the update: the lowered update has
    exactly that forward's matmuls fewer than the two steps taken apart (and no other)."""
    config = TrainConfig(env="point_u", width=32, depth=4, batch_size=16)
    agent = make_trainer(config).agent
    state = agent.init(jax.random.PRNGKey(0))
    batch = Batch(
        state=jnp.zeros((16, agent.state_size)), action=jnp.zeros((16, agent.action_size)),
        goal=jnp.zeros((16, agent.goal_size)),
    )

    def unshared(agent_state, batch, rng):
        critic_params, _, _, _ = agent.critic_step(agent_state, batch)
        actor_params, _, _, _ = agent.actor_step(
            agent_state, agent_state.critic_params, batch, rng)
        return critic_params, actor_params

    def shared(agent_state, batch, rng):
        new_state, _ = agent.update(agent_state, batch, rng)
        return new_state.critic_params, new_state.actor_params

    def matmul_count(fn):
        text = jax.jit(fn).lower(state, batch, jax.random.PRNGKey(1)).as_text()
        return text.count("dot_general")

    goal_forward = jax.jit(
        lambda p, g: agent.critic.apply(p, g, method="encode_goal")
    ).lower(state.critic_params, batch.goal).as_text().count("dot_general")
    assert goal_forward > 0
    assert matmul_count(unshared) - matmul_count(shared) == goal_forward
