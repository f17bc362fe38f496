"""Stability fixes (isotropy penalty, multi-skip networks, CHAIN churn reduction), the KL
estimators of off-policy drift and the live stability audit: switched off, training is bit for
bit what it was before they existed; switched on, each does what its docstring says; each audit
rule fires on a run provoked to break it and a healthy run raises none."""

import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl import audit, regularizers
from crl import diagnostics as diag
from crl.agent import Batch
from crl.config import ConfigError, TrainConfig, replace, validate
from crl.networks import NetworkConfig, ResidualMLP
from crl.train import make_trainer

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
import make_golden_off  # noqa: E402  (tests/data/make_golden_off.py: how the golden file was made)

RNG = jax.random.PRNGKey(0)


# ---- off reproduces the code before the switches -----------------------------------------------
# The golden file is bit-identical on the machine that wrote it, but XLA's CPU kernels round
# differently across instruction sets (seen: |Δ| ≤ 1.2e-8 between two Xeons). The tolerance is
# 10× that and far below what any switch left on changes (one Adam step moves weights by ~1e-4).
GOLDEN_ATOL, GOLDEN_RTOL = 1e-7, 1e-4


def test_switches_off_reproduce_the_pre_switch_parameters():
    """Parameters after 3 agent updates and after one trainer epoch (depth 8: two scanned
    blocks), against tests/data/golden_off.npz written by the code of commit
    53423e4 with the update in the paper's order (see tests/data/make_golden_off.py)."""
    golden = np.load(DATA / "golden_off.npz")
    config = make_golden_off.CONFIG
    assert (config.isotropy_weight, config.multi_skip, config.churn_weight) == (0.0, False, 0.0)
    now = make_golden_off.golden()
    assert sorted(now) == sorted(golden.files)
    for key in golden.files:
        np.testing.assert_allclose(
            now[key], golden[key], rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL, err_msg=key
        )


# ---- isotropy penalty --------------------------------------------------------------------------
def test_isotropy_penalty_is_near_zero_for_isotropic_and_large_for_collapsed_batches():
    isotropic = jax.random.normal(RNG, (8192, 8)) * 3.0 + 5.0  # scale and offset are free
    penalty, terms = regularizers.isotropy_penalty(isotropic)
    assert float(penalty) < 0.01
    anisotropic = isotropic * jnp.array([1, 1, 1, 1, 1, 1, 1, 10.0])
    collapsed = jax.random.normal(RNG, (256, 1)) * jax.random.normal(jax.random.PRNGKey(1), (1, 8))
    p_aniso, _ = regularizers.isotropy_penalty(anisotropic)
    p_collapsed, collapsed_terms = regularizers.isotropy_penalty(collapsed)
    assert 0.3 < float(p_aniso) < float(p_collapsed)
    # rank one: all off-diagonal correlations ±1 in the normalised covariance's shape
    assert float(collapsed_terms["log_spectrum"]) > 3.0
    grads = jax.grad(lambda x: regularizers.isotropy_penalty(x)[0])(collapsed)
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_isotropy_terms_by_hand():
    """A batch whose covariance is diag(4, 1) up to scale: no off-diagonal term; log-spectrum
    term log(1+ε) − ½ log((1.6+ε)(0.4+ε)) after normalising to mean eigenvalue 1."""
    x = jnp.array([[2.0, 1.0], [-2.0, 1.0], [2.0, -1.0], [-2.0, -1.0]])
    _, terms = regularizers.isotropy_penalty(x)
    eps = regularizers.SPECTRUM_EPSILON
    assert float(terms["off_diagonal"]) == pytest.approx(0.0, abs=1e-7)
    expected = np.log1p(eps) - 0.5 * np.log((1.6 + eps) * (0.4 + eps))
    assert float(terms["log_spectrum"]) == pytest.approx(expected, rel=1e-5)


# ---- multi-skip networks -----------------------------------------------------------------------
@pytest.mark.parametrize("residual", [True, False])
def test_multi_skip_adds_the_input_layer_output_to_every_block(residual):
    network = NetworkConfig(width=16, depth=8, residual=residual, multi_skip=True)
    mlp = ResidualMLP(network, 3)
    params = mlp.init(RNG, jnp.zeros((1, 5)))
    plain = ResidualMLP(dataclasses.replace(network, multi_skip=False), 3)
    x = jax.random.normal(RNG, (32, 5))
    assert jax.tree.structure(params) == jax.tree.structure(plain.init(RNG, x[:1]))
    assert not np.allclose(mlp.apply(params, x), plain.apply(params, x))
    # diagnostics re-apply the blocks one at a time and must reproduce the network
    hidden, last = diag.hidden_activations(network, params["params"], x)
    out = params["params"]["output"]
    np.testing.assert_allclose(last @ out["kernel"] + out["bias"], mlp.apply(params, x), rtol=1e-5, atol=1e-5)


def test_multi_skip_reconnects_the_input_layer_but_not_blocks_without_residuals():
    """Depth 32, no LayerNorm. Without residuals the input layer's gradient is ~1e-18 of the
    output layer's; the multi-skip global input gives the input layer a direct path back, but
    the layers inside the blocks still lose their gradient through the later blocks — the paper
    adds the global skip on top of residual blocks, where every layer keeps a gradient."""
    x = jax.random.normal(RNG, (64, 5))
    target = jax.random.normal(jax.random.PRNGKey(1), (64, 3))

    def grad_norms(residual, multi_skip):
        network = NetworkConfig(width=16, depth=32, residual=residual, layer_norm=False, multi_skip=multi_skip)
        mlp = ResidualMLP(network, 3)
        params = mlp.init(RNG, x[:1])
        loss = lambda p: jnp.mean((mlp.apply(p, x) - target) ** 2)
        return np.asarray(diag.layer_grad_norms(jax.grad(loss)(params)["params"]))

    plain, skip, both = grad_norms(False, False), grad_norms(False, True), grad_norms(True, True)
    assert plain[0] < 1e-10 * plain[-1]
    assert skip[0] > 1e-3 * skip[-1]
    assert 0 in audit.dead_layers(plain, 1e-6) and 0 not in audit.dead_layers(skip, 1e-6)
    assert 1 in audit.dead_layers(skip, 1e-6)  # block 0's first layer: still dead
    assert audit.dead_layers(both, 1e-6) == []


# ---- CHAIN churn reduction -----------------------------------------------------------------------
CHURN = replace(make_golden_off.CONFIG, churn_weight=1.0)


def random_batch(agent, key, size=16):
    keys = jax.random.split(key, 3)
    return Batch(
        state=jax.random.normal(keys[0], (size, agent.state_size)),
        action=jax.random.uniform(keys[1], (size, agent.action_size), minval=-1, maxval=1),
        goal=jax.random.normal(keys[2], (size, agent.goal_size)),
    )


def test_churn_penalty_is_against_the_parameters_before_the_previous_update():
    agent = make_trainer(CHURN).agent
    state = agent.init(RNG)
    assert jax.tree.structure(state.prev_critic_params) == jax.tree.structure(state.critic_params)
    reference = random_batch(agent, jax.random.PRNGKey(9))
    update = jax.jit(agent.update)
    first, m1 = update(state, random_batch(agent, jax.random.PRNGKey(1)), RNG, reference)
    # first update: "previous" is the initial state itself → no churn yet (up to rounding: the
    # critic's logits are a matmul that XLA may tile differently inside the gradient program)
    assert float(m1["critic_churn_penalty"]) == pytest.approx(0.0, abs=1e-10)
    assert float(m1["actor_churn_penalty"]) == pytest.approx(0.0, abs=1e-10)
    for a, b in zip(jax.tree.leaves(first.prev_critic_params), jax.tree.leaves(state.critic_params)):
        np.testing.assert_array_equal(a, b)
    second, m2 = update(first, random_batch(agent, jax.random.PRNGKey(2)), RNG, reference)
    expected_critic = regularizers.squared_change(
        agent.reference_logits(first.critic_params, reference),
        agent.reference_logits(state.critic_params, reference),
    )
    act = lambda p: agent.act(p, reference.state, reference.goal, None)
    expected_actor = regularizers.squared_change(act(first.actor_params), act(state.actor_params))
    assert float(m2["critic_churn_penalty"]) == pytest.approx(float(expected_critic), rel=1e-5)
    assert float(m2["actor_churn_penalty"]) == pytest.approx(float(expected_actor), rel=1e-5)
    assert float(expected_critic) > 0
    with pytest.raises(ValueError, match="reference batch"):
        agent.update(state, reference, RNG)


def test_a_strong_churn_penalty_reduces_output_change_on_the_reference_batch():
    """Same batches, weight 0 vs 100: after a few updates the logits on the reference batch move
    less between consecutive updates with the penalty."""
    reference_key = jax.random.PRNGKey(9)

    def last_change(weight):
        agent = make_trainer(replace(CHURN, churn_weight=weight)).agent
        reference = random_batch(agent, reference_key)
        state = agent.init(RNG)
        update = jax.jit(lambda s, b, r: agent.update(s, b, RNG, r if weight else None))
        before = None
        for i in range(6):
            before = state.critic_params
            state, _ = update(state, random_batch(agent, jax.random.PRNGKey(i)), reference)
        change = regularizers.squared_change(
            agent.reference_logits(state.critic_params, reference),
            agent.reference_logits(before, reference),
        )
        return float(change)

    assert last_change(100.0) < 0.5 * last_change(0.0)


def test_trainer_samples_a_reference_batch_only_with_churn_on():
    trainer = make_trainer(CHURN)
    state = jax.jit(trainer.init)(RNG)
    state, metrics = jax.jit(trainer.run_epoch)(state)
    assert float(metrics["critic_churn_penalty"]) > 0 and np.isfinite(float(metrics["actor_churn_penalty"]))


@pytest.mark.parametrize(
    "field,value", [("isotropy_weight", -0.1), ("churn_weight", float("nan")),
                    ("audit_dead_layer_ratio", 0.0), ("audit_max_dead_units", 1.0),
                    ("audit_min_effective_rank", -1.0), ("audit_churn_rises", -1)],
)
def test_stability_fields_are_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        validate(replace(make_golden_off.CONFIG, **{field: value}))


# ---- KL estimators -------------------------------------------------------------------------------
def test_kl_estimators_on_gaussians_with_known_kl():
    """β = N(0, 1), π = N(μ, 1): KL(β‖π) = μ²/2; k1 and k3 are unbiased, k2 estimates
    E[½(log r)²] = ½(μ² + μ⁴/4)."""
    mu = 0.5
    a = jax.random.normal(RNG, (200_000,))
    behaviour = -0.5 * a**2
    current = -0.5 * (a - mu) ** 2
    est = {k: float(v) for k, v in diag.kl_estimates(behaviour, current).items()}
    assert est["offpolicy_kl_k1"] == pytest.approx(mu**2 / 2, abs=0.01)
    assert est["offpolicy_kl_k3"] == pytest.approx(mu**2 / 2, abs=0.01)
    assert est["offpolicy_kl_k2"] == pytest.approx(0.5 * (mu**2 + mu**4 / 4), abs=0.01)
    assert est["offpolicy_kl"] == est["offpolicy_kl_k1"]
    values = [est[f"offpolicy_kl_{k}"] for k in diag.KL_ESTIMATORS]
    assert est["offpolicy_kl_spread"] == pytest.approx(max(values) - min(values), rel=1e-5)
    same = diag.kl_estimates(behaviour, behaviour)
    assert all(float(v) == 0.0 for v in same.values())


# ---- the audit rules -----------------------------------------------------------------------------
LAYERS = {name: diag.layer_names(8) for name in diag.ENCODERS}


def healthy_row(**changes):
    row = {}
    for name in diag.ENCODERS:
        row[f"diag/grad_norm/{name}"] = [0.1] * 10
        row[f"diag/dead_units/{name}"] = [0.0] * 9
    row.update({"diag/effective_rank/phi": 4.0, "diag/effective_rank/psi": 3.0, "diag/policy_churn": 0.1})
    row.update(changes)
    return row


def test_each_rule_by_hand():
    thresholds = audit.Thresholds()
    assert audit.check(healthy_row(), LAYERS, thresholds, [0.3, 0.2, 0.1]) == []
    grads = [0.1] * 10
    grads[3] = 1e-9
    (finding,) = audit.check(healthy_row(**{"diag/grad_norm/critic_goal": grads}), LAYERS, thresholds)
    assert finding.startswith("dead layers in critic_goal: 1 of 10") and "b0.l2" in finding
    dead = [0.0] * 9
    dead[5] = 0.75
    (finding,) = audit.check(healthy_row(**{"diag/dead_units/actor": dead}), LAYERS, thresholds)
    assert finding.startswith("dead units in actor: 1 of 9") and "b1.l0" in finding
    (finding,) = audit.check(healthy_row(**{"diag/effective_rank/psi": 1.01}), LAYERS, thresholds)
    assert finding.startswith("collapsed representation psi")
    assert audit.check(healthy_row(), LAYERS, thresholds, [0.1, 0.2, 0.3]) == []  # 2 rises
    (finding,) = audit.check(healthy_row(), LAYERS, thresholds, [0.5, 0.1, 0.2, 0.3, 0.4])
    assert finding.startswith("rising policy churn") and "3 log points" in finding
    assert audit.rises_in_a_row([1, 2, 2, 3]) == 1 and audit.rises_in_a_row([]) == 0
    assert audit.dead_layers([1.0, 1.0, 0.0, 1.0], 1e-6) == [2]


TINY = TrainConfig(
    env="point_u", num_envs=4, unroll_length=10, episode_length=20, batch_size=16,
    num_sgd_batches=2, min_replay_size=20, replay_size=100, total_env_steps=2_000, num_epochs=2,
    width=16, depth=8, repr_size=8, num_eval_envs=4, diagnostics_every=1, checkpoint_every=0,
)


def test_rising_churn_is_flagged_from_real_measurements():
    """Shift the actor's output bias by growing steps between log points: the measured policy
    churn rises at every log point and the audit names it at the third rise."""
    trainer = make_trainer(TINY)
    state = jax.jit(trainer.init)(RNG)
    diag_state = jax.jit(lambda s, k: diag.init(trainer, s, k))(state, jax.random.PRNGKey(7))
    measure = jax.jit(lambda d, s: diag.measure(trainer, d, s, jnp.float32(1.0)))
    auditor = audit.Auditor(replace(TINY, audit_churn_rises=3), [0])
    actor = state.agent.actor_params
    found = []
    for epoch, shift in enumerate([0.02, 0.05, 0.1, 0.2]):
        out = actor["params"]["ResidualMLP_0"]["output"]
        bias = out["bias"].at[: trainer.env.action_size].add(shift)
        actor = {"params": {"ResidualMLP_0": {**actor["params"]["ResidualMLP_0"], "output": {**out, "bias": bias}}}}
        state = state.replace(agent=state.agent.replace(actor_params=actor))
        diag_state, metrics = measure(diag_state, state)
        (row,) = auditor.review(epoch, diag.rows_per_seed(jax.tree.map(lambda x: x[None], metrics)))
        found.append([w for w in row["warnings"] if "rising policy churn" in w])
    assert found[:3] == [[], [], []]
    assert len(found[3]) == 1 and found[3][0].startswith("stability audit: epoch 3, seed 0: rising")


@pytest.mark.slow
def test_a_plain_deep_run_warns_and_a_healthy_run_does_not(tmp_path, capsys):
    """End to end through `crl.run.train`: depth 32 without residuals or LayerNorm has dead
    layers, dead units and a collapsed φ/ψ from the first log point — printed, in the metrics
    rows and in summary.json; the residual + LayerNorm network at depth 8 raises nothing."""
    from rich.console import Console

    from crl.run import train

    plain = replace(TINY, depth=32, residual=False, layer_norm=False, out_dir=str(tmp_path), run_name="plain")
    summary = train(plain, console=Console(file=sys.stdout, width=200), quiet=True)
    printed = capsys.readouterr().out
    counts = audit.count_by_rule(summary["warnings"])
    assert counts["dead layers"] >= 3 and counts["dead units"] >= 3
    assert counts["collapsed representation"] >= 1
    assert "stability audit: epoch 0, seed 0: dead layers in critic_sa" in printed
    rows = [json.loads(l) for l in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [len(r["warnings"]) > 0 for r in rows] == [True, True]
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["warnings"] == summary["warnings"]

    healthy = train(replace(TINY, out_dir=str(tmp_path), run_name="healthy"), quiet=True)
    assert healthy["warnings"] == []
    rows = [json.loads(l) for l in (tmp_path / "healthy" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["warnings"] == [] for r in rows)


def test_audit_thresholds_may_change_on_resume_but_fixes_may_not():
    from crl.checkpoint import check_resumable

    saved = make_golden_off.CONFIG
    check_resumable(saved, replace(saved, audit_churn_rises=5, audit_min_effective_rank=3.0,
                                   audit_max_dead_units=0.9, audit_dead_layer_ratio=1e-3))
    for field, value in (("isotropy_weight", 0.1), ("multi_skip", True), ("churn_weight", 1.0)):
        with pytest.raises(ConfigError, match=field):
            check_resumable(saved, replace(saved, **{field: value}))


# ---- the stability study -------------------------------------------------------------------------
def test_stability_grid_has_the_reference_the_plain_baseline_each_fix_and_all():
    from experiments import ablations

    points = ablations.stability_grid(replace(TINY, churn_weight=0.5), (16, 32))
    assert [p.variant for p in points[:6]] == list(ablations.STABILITY_VARIANTS)
    by_variant = {p.variant: p.overrides for p in points if p.overrides["depth"] == 16}
    assert by_variant["reference"] == {"depth": 16, "residual": True, "layer_norm": True,
                                       "isotropy_weight": 0.0, "multi_skip": False, "churn_weight": 0.0}
    assert by_variant["plain"]["residual"] is False and by_variant["plain"]["layer_norm"] is False
    assert by_variant["plain+isotropy"]["isotropy_weight"] == ablations.DEFAULT_FIX_WEIGHTS["isotropy_weight"]
    assert by_variant["plain+chain"]["churn_weight"] == 0.5  # the base config's weight wins
    assert by_variant["plain+all"]["multi_skip"] and by_variant["plain+all"]["churn_weight"] == 0.5
    assert len({p.name for p in points}) == 12
    assert ablations.stability_base(replace(TINY, diagnostics_every=0)).diagnostics_every == 2


def test_stability_table_scores_the_last_evaluations_and_counts_rules_at_the_last_log_point(tmp_path):
    """Two hand-written finished runs (3 seeds, 6 epochs, log points at epochs 2 and 5)."""
    from crl import run_dir
    from experiments import ablations
    from experiments.depth_sweep import RUNS_SUBDIR, point_config, record_points

    sweep = tmp_path / ablations.STABILITY_DIR
    points = [p for p in ablations.stability_grid(TINY, (8,)) if p.variant in ("reference", "plain")]
    record_points(sweep, points)
    dead = "stability audit: epoch 5, seed {s}: dead layers in actor: 3 of 10 have ..."
    for point, score in zip(points, (10.0, 1.0)):
        config = point_config(TINY, point, sweep)
        path = run_dir.create(config, {})
        rows = []
        for epoch in range(6):
            for seed in range(3):
                row = {"epoch": epoch, "seed": seed, "env_steps": 100 * epoch, "wall_time": 1.0,
                       "eval/time_at_goal": score * seed + epoch, "eval/success": 0.0,
                       "eval/final_distance": 1.0}
                if epoch in (2, 5):
                    bad = point.variant == "plain" and (epoch == 5 or seed == 0)
                    row["warnings"] = [dead.format(s=seed)] if bad and seed < 2 else []
                rows.append(row)
        run_dir.append_metrics(path, rows)
        run_dir.write_summary(path, {"done": True})
    final = ablations.stability_table(sweep, final_epochs=5)
    assert list(final["variant"]) == ["reference", "plain"]
    reference, plain = final.to_dict("records")
    # seed s scores score·s + mean(epochs 1..5) = score·s + 3; mean over seeds = score + 3
    assert reference["mean"] == pytest.approx(13.0) and plain["mean"] == pytest.approx(4.0)
    assert reference["sem"] == pytest.approx(10.0 / np.sqrt(3))
    assert (reference["dead layers"], plain["dead layers"], plain["dead units"]) == (0, 2, 0)
    ablations.stability_figure(final, tmp_path / "study.png")
    assert (tmp_path / "study.png").stat().st_size > 10_000
