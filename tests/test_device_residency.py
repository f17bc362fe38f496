"""A training epoch never leaves the device (issue 15, GPU readiness): the compiled epoch and
evaluation contain no host callbacks or infeed/outfeed, run with every host transfer forbidden,
and the epoch consumes (donates) its input state instead of copying it."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from crl.config import TrainConfig
from crl.train import make_trainer, over_seeds

from test_train import TINY

# Ops by which a compiled XLA program would talk to the host mid-epoch.
HOST_OPS = ("callback", "outfeed", "infeed", "send(", "recv(", "host-compute")


def assert_no_host_ops(compiled) -> None:
    text = compiled.as_text().lower()
    found = [op for op in HOST_OPS if op in text]
    assert not found, f"compiled program talks to the host: {found}"


@pytest.mark.parametrize("diagnostics_every", [0, 1])
def test_epoch_and_evaluation_stay_on_device(diagnostics_every):
    config: TrainConfig = dataclasses.replace(TINY, num_seeds=2, diagnostics_every=diagnostics_every)
    trainer = make_trainer(config)
    rngs = jax.random.split(jax.random.PRNGKey(0), config.num_seeds)
    state = jax.jit(over_seeds(trainer.init))(rngs)
    run_epoch = jax.jit(over_seeds(trainer.run_epoch), donate_argnums=0).lower(state).compile()
    evaluate = jax.jit(jax.vmap(trainer.evaluate, in_axes=(0, 0, None)))
    random_policy = jnp.asarray(False)
    assert_no_host_ops(run_epoch)
    assert_no_host_ops(evaluate.lower(state.agent.actor_params, rngs, random_policy).compile())

    replay_before = state.replay.data["state"]
    with jax.transfer_guard("disallow"):
        new_state, metrics = run_epoch(state)
        eval_metrics = evaluate(new_state.agent.actor_params, rngs, random_policy)
        jax.block_until_ready((new_state, metrics, eval_metrics))
    assert replay_before.is_deleted(), "the epoch copied the replay buffer instead of donating it"
    assert int(new_state.iteration[0]) == config.iterations_per_epoch
