"""Writes tests/data/golden_off.npz: parameters after a few updates of a tiny agent and after one
epoch of a tiny trainer, computed by the code *before* the stability switches existed (commit
53423e4) with one line changed: its actor steps against the critic before the update (the
paper's order, which crl adopted later), `critic_params` → `agent_state.critic_params` in the
actor's `value_and_grad` call of `CRLAgent.update`. tests/test_stability.py checks that, with
every switch off, today's code reproduces them (bit for bit on the machine that wrote it, within
1e-7 across CPUs). Regenerate only from such a checkout, on CPU, with the XLA flag the test suite
sets (tests/conftest.py; the fusion emitters round differently, ~1e-8):

    git worktree add /tmp/golden53 53423e4
    sed -i '131s/(agent_state.actor_params, critic_params,/(agent_state.actor_params, agent_state.critic_params,/' \
        /tmp/golden53/crl/agent.py
    XLA_FLAGS=--xla_cpu_use_fusion_emitters=false PYTHONPATH=/tmp/golden53 \
        python tests/data/make_golden_off.py tests/data/golden_off.npz
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from crl.agent import Batch
from crl.config import TrainConfig
from crl.train import make_trainer

CONFIG = TrainConfig(
    env="point_u", width=16, depth=8, repr_size=8, batch_size=16, num_envs=4, num_sgd_batches=2,
    unroll_length=10, min_replay_size=20, replay_size=100, total_env_steps=4 * 10 * (2 + 1),
    num_epochs=1, num_eval_envs=4, episode_length=20,
)
UPDATES = 3


def agent_after_updates(trainer):
    agent = trainer.agent
    state = agent.init(jax.random.PRNGKey(0))
    update = jax.jit(agent.update)
    for i in range(UPDATES):
        keys = jax.random.split(jax.random.PRNGKey(100 + i), 4)
        batch = Batch(
            state=jax.random.normal(keys[0], (CONFIG.batch_size, agent.state_size)),
            action=jax.random.uniform(keys[1], (CONFIG.batch_size, agent.action_size), minval=-1, maxval=1),
            goal=jax.random.normal(keys[2], (CONFIG.batch_size, agent.goal_size)),
        )
        state, _ = update(state, batch, keys[3])
    return state


def trainer_after_epoch(trainer):
    state = jax.jit(trainer.init)(jax.random.PRNGKey(1))
    state, _ = jax.jit(trainer.run_epoch)(state)
    return state.agent


def flat(agent_state) -> dict[str, np.ndarray]:
    leaves = jax.tree.leaves_with_path(
        (agent_state.actor_params, agent_state.critic_params, agent_state.log_alpha)
    )
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def golden() -> dict[str, np.ndarray]:
    trainer = make_trainer(CONFIG)
    out = {f"update{k}": v for k, v in flat(agent_after_updates(trainer)).items()}
    out.update({f"epoch{k}": v for k, v in flat(trainer_after_epoch(trainer)).items()})
    return out


if __name__ == "__main__":
    np.savez_compressed(sys.argv[1], **golden())
    print(f"wrote {sys.argv[1]}")
