"""The CRL agent: parameters and optimiser states as one pytree, and pure `init`, `act` and
`update` functions. `update` is the single learning step every experiment uses — the normal
training loop, seeds in parallel, and learners that train on another agent's data."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from crl import losses, regularizers
from crl.networks import Actor, Critic, NetworkConfig


@struct.dataclass
class Batch:
    """Relabelled training batch: state s, action a, goal g reached later in the same episode."""

    state: jax.Array  # [B, state_size]
    action: jax.Array  # [B, action_size]
    goal: jax.Array  # [B, goal_size]


@struct.dataclass
class AgentState:
    actor_params: dict
    critic_params: dict
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    # Parameters before the previous update, kept only for CHAIN churn reduction
    # (CRLAgent.churn_weight > 0); None otherwise, so the state has no extra leaves.
    prev_actor_params: dict | None = None
    prev_critic_params: dict | None = None


@dataclass(frozen=True)
class CRLAgent:
    """Static description of an agent (network shapes and hyperparameters); all methods are pure
    functions of the arrays they receive."""

    state_size: int
    goal_size: int
    action_size: int
    actor_network: NetworkConfig
    critic_network: NetworkConfig
    repr_size: int = 64
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    logsumexp_penalty: float = 0.1
    target_entropy_scale: float = -0.5
    isotropy_weight: float = 0.0
    """Isotropic-representation penalty on φ and ψ (crl.regularizers); 0 = off."""
    churn_weight: float = 0.0
    """CHAIN churn reduction on a reference batch (crl.regularizers); 0 = off."""

    @property
    def actor(self) -> Actor:
        return Actor(self.actor_network, self.action_size)

    @property
    def critic(self) -> Critic:
        return Critic(self.critic_network, self.repr_size)

    @property
    def target_entropy(self) -> float:
        return self.target_entropy_scale * self.action_size

    def optimizers(self) -> tuple[optax.GradientTransformation, ...]:
        return optax.adam(self.actor_lr), optax.adam(self.critic_lr), optax.adam(self.alpha_lr)

    def init(self, rng: jax.Array) -> AgentState:
        """Fresh parameters (α starts at 1) and optimiser states."""
        actor_rng, critic_rng = jax.random.split(rng)
        state = jnp.zeros((1, self.state_size))
        goal = jnp.zeros((1, self.goal_size))
        action = jnp.zeros((1, self.action_size))
        actor_params = self.actor.init(actor_rng, state, goal)
        critic_params = self.critic.init(critic_rng, state, action, goal)
        log_alpha = jnp.zeros(())
        actor_opt, critic_opt, alpha_opt = self.optimizers()
        state = AgentState(
            actor_params=actor_params,
            critic_params=critic_params,
            log_alpha=log_alpha,
            actor_opt=actor_opt.init(actor_params),
            critic_opt=critic_opt.init(critic_params),
            alpha_opt=alpha_opt.init(log_alpha),
        )
        if self.churn_weight:  # "before the previous update" is the initial state at first
            state = state.replace(prev_actor_params=actor_params, prev_critic_params=critic_params)
        return state

    def act(
        self, actor_params: dict, state: jax.Array, goal: jax.Array, rng: jax.Array | None
    ) -> jax.Array:
        """Actions in [-1, 1]: sampled when `rng` is given, deterministic tanh(mean) when None."""
        mean, log_std = self.actor.apply(actor_params, state, goal)
        if rng is None:
            return jnp.tanh(mean)
        action, _ = losses.sample_tanh_gaussian(rng, mean, log_std)
        return action

    def pairwise_energy(self, sa_repr: jax.Array, goal_repr: jax.Array) -> jax.Array:
        """The critic's logits: f(s_i, a_i, g_j) for every pair of the batch."""
        return losses.energy_matrix(sa_repr, goal_repr)

    def critic_loss(self, critic_params: dict, batch: Batch):
        """InfoNCE (plus the isotropy penalty on φ and ψ when isotropy_weight > 0). Aux: the
        metrics and ψ(g) of the batch's goals, which the actor step reuses."""
        sa_repr, goal_repr = self.critic.apply(critic_params, batch.state, batch.action, batch.goal)
        logits = self.pairwise_energy(sa_repr, goal_repr)
        loss, metrics = losses.infonce_loss(logits, self.logsumexp_penalty)
        if self.isotropy_weight:
            phi_penalty, _ = regularizers.isotropy_penalty(sa_repr)
            psi_penalty, _ = regularizers.isotropy_penalty(goal_repr)
            loss = loss + self.isotropy_weight * (phi_penalty + psi_penalty)
            metrics = {**metrics, "critic_loss": loss, "isotropy_phi": phi_penalty,
                       "isotropy_psi": psi_penalty}
        return loss, (metrics, goal_repr)

    def reference_logits(self, critic_params: dict, reference: Batch) -> jax.Array:
        """The critic's output on the churn reference batch: its full energy matrix."""
        sa_repr, goal_repr = self.critic.apply(
            critic_params, reference.state, reference.action, reference.goal
        )
        return self.pairwise_energy(sa_repr, goal_repr)

    def with_churn_penalty(self, loss_fn, outputs, prev_params: dict, reference: Batch | None):
        """`loss_fn` (params, *args) → (loss, aux) plus churn_weight × the squared change of
        `outputs(params, reference)` since `prev_params` (CHAIN); `loss_fn` itself when off."""
        if not self.churn_weight:
            return loss_fn
        if reference is None:
            raise ValueError("churn_weight > 0: CRLAgent.update needs a reference batch")
        before = outputs(prev_params, reference)

        def penalised(params, *args):
            loss, aux = loss_fn(params, *args)
            churn = regularizers.squared_change(outputs(params, reference), before)
            return loss + self.churn_weight * churn, (aux, churn)

        return penalised

    def actor_loss(
        self, actor_params: dict, critic_params: dict, log_alpha, batch: Batch, rng,
        goal_repr: jax.Array | None = None,
    ):
        """SAC actor loss against the critic `critic_params`. `goal_repr`: ψ(batch.goal) under
        those parameters when already computed (the critic step's forward pass); else here."""
        mean, log_std = self.actor.apply(actor_params, batch.state, batch.goal)
        action, log_prob = losses.sample_tanh_gaussian(rng, mean, log_std)
        if goal_repr is None:
            goal_repr = self.critic.apply(critic_params, batch.goal, method="encode_goal")
        sa_repr = self.critic.apply(critic_params, batch.state, action, method="encode_sa")
        energy = losses.energy(sa_repr, goal_repr)
        alpha = jax.lax.stop_gradient(jnp.exp(log_alpha))
        loss, metrics = losses.actor_loss(log_prob, energy, alpha)
        return loss, (log_prob, metrics)

    def critic_step(
        self, agent_state: AgentState, batch: Batch, reference: Batch | None = None
    ) -> tuple[dict, optax.OptState, tuple, dict]:
        """One Adam step on the critic's InfoNCE loss. Returns the new critic parameters and
        optimiser state, the loss's aux ((metrics, ψ(g)), with the churn penalty when on) and
        the gradients."""
        critic_opt = self.optimizers()[1]
        objective = self.with_churn_penalty(
            self.critic_loss, self.reference_logits, agent_state.prev_critic_params, reference
        )
        (_, aux), grads = jax.value_and_grad(objective, has_aux=True)(
            agent_state.critic_params, batch
        )
        updates, new_opt = critic_opt.update(grads, agent_state.critic_opt)
        return optax.apply_updates(agent_state.critic_params, updates), new_opt, aux, grads

    def actor_step(
        self, agent_state: AgentState, critic_params: dict, batch: Batch, rng: jax.Array,
        reference: Batch | None = None, goal_repr: jax.Array | None = None,
    ) -> tuple[dict, optax.OptState, tuple, dict]:
        """One Adam step on the actor's loss against `critic_params` (`goal_repr`: see
        `actor_loss`). Returns the new actor parameters and optimiser state, the loss's aux
        ((log_prob, metrics), with the churn penalty when on) and the gradients."""
        actor_opt = self.optimizers()[0]
        deterministic_action = lambda params, ref: self.act(params, ref.state, ref.goal, None)
        objective = self.with_churn_penalty(
            self.actor_loss, deterministic_action, agent_state.prev_actor_params, reference
        )
        (_, aux), grads = jax.value_and_grad(objective, has_aux=True)(
            agent_state.actor_params, critic_params, agent_state.log_alpha, batch, rng, goal_repr
        )
        updates, new_opt = actor_opt.update(grads, agent_state.actor_opt)
        return optax.apply_updates(agent_state.actor_params, updates), new_opt, aux, grads

    def alpha_step(
        self, agent_state: AgentState, log_prob: jax.Array
    ) -> tuple[jax.Array, optax.OptState, jax.Array]:
        """One Adam step on log α towards the target entropy, given the actor's log-probs.
        Returns the new log α, its optimiser state and the loss."""
        alpha_opt = self.optimizers()[2]
        value, grad = jax.value_and_grad(losses.alpha_loss)(
            agent_state.log_alpha, log_prob, self.target_entropy
        )
        updates, new_opt = alpha_opt.update(grad, agent_state.alpha_opt)
        return optax.apply_updates(agent_state.log_alpha, updates), new_opt, value

    def update(
        self,
        agent_state: AgentState,
        batch: Batch,
        rng: jax.Array,
        reference: Batch | None = None,
    ) -> tuple[AgentState, dict[str, jax.Array]]:
        """One actor step and one α step against the critic as it was before this update, and
        one critic step: the order of the paper's code (scaling-crl's `sgd_step` updates actor
        and α, then the critic). Returns the new state and scalar metrics (losses, critic
        health, gradient norms).

        Both steps read ψ(g) of the batch's goals under the same critic parameters, so the
        critic's forward pass computes it once for both (a sixth of the actor step's matmuls).

        `reference`: a replay batch independent of `batch`, needed (only) for CHAIN churn
        reduction (churn_weight > 0), which penalises the change of the critic's logits and the
        actor's deterministic action on it since the parameters before the previous update."""
        critic_params, new_critic_opt, critic_aux, critic_grads = self.critic_step(
            agent_state, batch, reference
        )
        churn_metrics = {}
        if self.churn_weight:
            critic_aux, critic_churn = critic_aux
        critic_metrics, goal_repr = critic_aux
        actor_params, new_actor_opt, actor_aux, actor_grads = self.actor_step(
            agent_state, agent_state.critic_params, batch, rng, reference,
            goal_repr=jax.lax.stop_gradient(goal_repr),
        )
        if self.churn_weight:
            actor_aux, actor_churn = actor_aux
            churn_metrics = {"critic_churn_penalty": critic_churn, "actor_churn_penalty": actor_churn}
        log_prob, actor_metrics = actor_aux
        log_alpha, new_alpha_opt, alpha_value = self.alpha_step(agent_state, log_prob)

        new_state = AgentState(
            actor_params=actor_params,
            critic_params=critic_params,
            log_alpha=log_alpha,
            actor_opt=new_actor_opt,
            critic_opt=new_critic_opt,
            alpha_opt=new_alpha_opt,
        )
        if self.churn_weight:  # this update's starting point is the next one's "previous"
            new_state = new_state.replace(
                prev_actor_params=agent_state.actor_params,
                prev_critic_params=agent_state.critic_params,
            )
        metrics = {
            **critic_metrics,
            **actor_metrics,
            **churn_metrics,
            "alpha": jnp.exp(log_alpha),
            "alpha_loss": alpha_value,
            "critic_grad_norm": optax.tree.norm(critic_grads),
            "actor_grad_norm": optax.tree.norm(actor_grads),
        }
        return new_state, metrics
