"""RedCore: the relative-advantage weight update (against hand-computed numbers), KL and
reconstruction on present modalities only, the guards the released code lacks, eval determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mmrobust
from mmrobust.data import Tokens
from mmrobust.methods.redcore import RedCore, RelativeAdvantage, kl_divergence, reconstruction_losses

SMALL = {"dim": 16, "predictor_layers": (32, 16), "predictor_blocks": 2, "classifier_hidden": (16,)}
ALL = torch.ones(3, dtype=torch.bool)


def advantage(**overrides: float) -> RelativeAdvantage:
    params = {"kappa": 0.7, "eta": 0.1, "eta_growth": 1.5, "eta_every": 500, "every": 3, "floor": 0.1, "init": 1.0}
    params.update(overrides)
    return RelativeAdvantage(3, **params)  # type: ignore[arg-type]


def normalised(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-5, atol=1e-6)


# --- the supervision weights (step 6 of methods/redcore.py), numbers worked out by hand -------------------------
def test_supervision_weights_follow_the_hand_computed_sequence() -> None:
    """κ = 0.7, η = 0.1 grown by 1.5 every S = 2 steps (and at step 0), β updated at steps 0 and 3."""
    adv = advantage(eta_every=2)
    # step 0: ℓ̄ = 0.7·(1, 2, 3) = (0.7, 1.4, 2.1); ρ is scale-free: avg 1.4, ρ = (0.5, 0, -0.5);
    # η_0 = 0.1·1.5^(0//2 + 1) = 0.15: β = 1 - 0.15ρ = (0.925, 1, 1.075), then / ‖·‖₂
    adv.update(torch.tensor([1.0, 2.0, 3.0]), ALL)
    beta0 = normalised([0.925, 1.0, 1.075])
    close(adv.ema, [0.7, 1.4, 2.1])
    close(adv.beta, beta0)
    close(adv.beta, [0.53305046, 0.57627077, 0.61949108])
    # steps 1, 2: only the EMA moves: 0.3·(0.7, 1.4, 2.1) + 0.7·(2, 2, 2); then 0.3·that + 0.7·(1, 1, 4)
    adv.update(torch.tensor([2.0, 2.0, 2.0]), ALL)
    close(adv.ema, [1.61, 1.82, 2.03])
    adv.update(torch.tensor([1.0, 1.0, 4.0]), ALL)
    close(adv.ema, [1.183, 1.246, 3.409])
    close(adv.beta, beta0)
    # step 3: ℓ̄ = 0.3·(1.183, 1.246, 3.409) + 0.7·(3, 1, 2) = (2.4549, 1.0738, 2.4227);
    # avg = 5.9514 / 3; ρ_m = (avg - ℓ̄_m) / avg; η_3 = 0.1·1.5^(3//2 + 1) = 0.225
    adv.update(torch.tensor([3.0, 1.0, 2.0]), ALL)
    ema3 = [2.4549, 1.0738, 2.4227]
    avg = sum(ema3) / 3
    rho = [(avg - e) / avg for e in ema3]
    close(adv.ema, ema3)
    close(adv.beta, normalised([b - 0.225 * r for b, r in zip(beta0, rho, strict=True)]))
    close(adv.beta, [0.5819403, 0.4693964, 0.66408772])
    assert int(adv.step) == 4 and adv.updates.tolist() == [4, 4, 4]


def test_weights_are_floored_before_the_l2_normalisation() -> None:
    adv = advantage(eta=10.0, eta_growth=1.0)
    adv.update(torch.tensor([1.0, 2.0, 3.0]), ALL)  # ρ = (0.5, 0, -0.5): 1 - 10ρ = (-4, 1, 6) -> (0.1, 1, 6)
    close(adv.beta, normalised([0.1, 1.0, 6.0]))
    assert float(torch.linalg.vector_norm(adv.beta)) == pytest.approx(1.0)


def test_a_modality_absent_from_a_batch_keeps_its_ema_and_stays_out_of_rho() -> None:
    adv = advantage()
    # step 0: modality 2 unobserved (its loss is NaN, as 0/0 would be): ℓ̄ = (0.7, 1.4, 0), t = (1, 1, 0);
    # ρ over the observed two: avg 1.5 (debiased by 1 - 0.3), ρ = (1/3, -1/3, 0); η = 0.15
    adv.update(torch.tensor([1.0, 2.0, float("nan")]), torch.tensor([True, True, False]))
    close(adv.ema, [0.7, 1.4, 0.0])
    beta0 = normalised([1 - 0.15 / 3, 1 + 0.15 / 3, 1.0])
    close(adv.beta, beta0)
    adv.update(torch.tensor([2.0, 2.0, 2.0]), ALL)  # ℓ̄ = (0.21 + 1.4, 0.42 + 1.4, 1.4), t = (2, 2, 1)
    adv.update(torch.tensor([5.0, 5.0, 5.0]), torch.zeros(3, dtype=torch.bool))  # nothing observed: no change
    close(adv.ema, [1.61, 1.82, 1.4])
    # step 3: ℓ̄ = 0.3·(1.61, 1.82, 1.4) + 0.7 = (1.183, 1.246, 1.12), t = (3, 3, 2);
    # debiased: ℓ̄_m / (1 - 0.3^t_m) = (1.183 / 0.973, 1.246 / 0.973, 1.12 / 0.91)
    adv.update(torch.tensor([1.0, 1.0, 1.0]), ALL)
    debiased = [1.183 / 0.973, 1.246 / 0.973, 1.12 / 0.91]
    avg = sum(debiased) / 3
    rho = [(avg - d) / avg for d in debiased]
    close(adv.beta, normalised([b - 0.15 * r for b, r in zip(beta0, rho, strict=True)]))
    assert adv.updates.tolist() == [3, 3, 2] and torch.isfinite(adv.beta).all()


def test_nothing_observed_yet_means_no_advantage() -> None:
    adv = advantage()
    adv.update(torch.full((3,), float("nan")), torch.zeros(3, dtype=torch.bool))
    close(adv.advantage(), [0.0, 0.0, 0.0])
    close(adv.beta, normalised([1.0, 1.0, 1.0]))


# --- the loss terms ---------------------------------------------------------------------------------
def test_kl_counts_only_present_slots_and_divides_by_the_batch() -> None:
    mu, logvar = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    present = torch.tensor([[True, False, True], [False, False, False], [True, True, False], [False, True, True]])
    garbage = present[..., None]
    nan = torch.full_like(mu, float("nan"))
    kl = kl_divergence(torch.where(garbage, mu, nan), torch.where(garbage, logvar, nan), present)
    expected = sum(
        -(1 + logvar[i, m] - mu[i, m] ** 2 - logvar[i, m].exp()).sum() for i, m in present.nonzero().tolist()
    )
    torch.testing.assert_close(kl, expected / 4)


def test_reconstruction_is_supervised_only_where_the_target_is_present() -> None:
    prediction, code = torch.randn(4, 3, 5, requires_grad=True), torch.randn(4, 3, 5)
    present = torch.tensor([[True, False, False], [True, True, False], [False, True, False], [True, False, False]])
    nan = torch.full_like(code, float("nan"))
    losses = reconstruction_losses(prediction, torch.where(present[..., None], code, nan), present)
    se = ((prediction - code) ** 2).sum(dim=-1).detach()
    expected = [(se[0, 0] + se[1, 0] + se[3, 0]) / 3, (se[1, 1] + se[2, 1]) / 2, 0.0]  # modality 2: nowhere
    torch.testing.assert_close(losses.detach(), torch.stack([torch.as_tensor(e) for e in expected]))
    losses.sum().backward()
    assert prediction.grad is not None and (prediction.grad[~present] == 0).all()


def built(data: mmrobust.MultimodalData, **params: object) -> RedCore:
    method = mmrobust.create_method("redcore", **{**SMALL, **params})
    assert isinstance(method, RedCore)
    torch.manual_seed(0)
    method.build(data.spec)
    return method


RATES = {"type": "MissingRates", "rates": {"m0": 0.5, "m1": 0.5, "m2": 0.5}, "if_all_missing": "allow"}


def test_loss_is_the_sum_of_its_terms_with_targets_only_where_the_modality_was_observed(small_data) -> None:
    method = built(small_data, corruption=RATES, gamma=0.3, lambda_kl=0.01, lambda_unimodal=0.5)
    model = method.redcore_model.eval()  # codes = μ and no dropout, so the recomputation is exact
    batch = small_data.split("train").batch(slice(0, 32))
    real = torch.rand(32, 3, generator=torch.Generator().manual_seed(9)) > 0.2  # naturally missing too
    batch = batch.with_present(real)
    loss = method.loss(batch, torch.Generator().manual_seed(5))
    dropped = method.train_corruption(batch, torch.Generator().manual_seed(5))
    kept = dropped.present
    assert (kept <= real).all() and (real & ~kept).any() and (~kept.any(dim=1)).any()  # drops + all-missing rows
    tokens = model.encode(dropped)  # a dropped modality is never encoded
    mu, logvar = model.vib(tokens.z.masked_fill(~kept[..., None], 0.0)).chunk(2, dim=-1)
    prediction = model.predictors(torch.where(kept[..., None], mu, model.filler))
    completed = torch.where(kept[..., None], mu, prediction)
    ce = F.cross_entropy(model.classify(completed), batch.target)
    heads = model.unimodal_heads(completed)
    unimodal = sum(F.cross_entropy(heads[:, m], batch.target) for m in range(3))
    kl = (-(1 + logvar - mu**2 - logvar.exp()).sum(-1) * kept).sum() / 32
    se = ((prediction - mu) ** 2).sum(-1)
    rec = [(se[:, m] * kept[:, m]).sum() / kept[:, m].sum() for m in range(3)]  # dropped slots are no target
    torch.testing.assert_close(loss, ce + 0.5 * unimodal + 0.01 * kl + 0.3 * sum(rec))  # β = 1 untouched in eval
    assert int(model.advantage.step) == 0 and (model.advantage.ema == 0).all()


def test_a_training_step_moves_the_buffers_and_checkpoints_carry_them(small_data, tmp_path) -> None:
    method = built(small_data)
    model = method.redcore_model.train()
    batch = small_data.split("train").batch(slice(0, 16))
    for _ in range(2):
        method.loss(batch, torch.Generator().manual_seed(0))
    adv = model.advantage
    assert int(adv.step) == 2 and adv.updates.tolist() == [2, 2, 2] and (adv.ema > 0).all()
    assert {"advantage.ema", "advantage.updates", "advantage.beta", "advantage.step"} <= set(model.state_dict())
    method.seed = 0
    reloaded, _ = mmrobust.load_checkpoint(mmrobust.save_checkpoint(method, tmp_path / "m.pt"))
    assert isinstance(reloaded, RedCore)
    for name, value in adv.state_dict().items():
        assert torch.equal(reloaded.redcore_model.advantage.state_dict()[name], value)


def test_a_modality_absent_from_the_whole_batch_gives_a_finite_loss_and_weights(small_data) -> None:
    method = built(small_data)
    model = method.redcore_model.train()
    batch = small_data.split("train").batch(slice(0, 16))
    method.loss(batch, torch.Generator().manual_seed(0))
    ema, updates = model.advantage.ema.clone(), model.advantage.updates.clone()
    present = batch.present.clone()
    present[:, 1] = False
    loss = method.loss(batch.with_present(present), torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.advantage.ema[1] == ema[1] and model.advantage.updates[1] == updates[1]
    assert torch.isfinite(model.advantage.beta).all() and torch.isfinite(model.advantage.ema).all()


def test_all_missing_samples_give_finite_losses_and_predictions(small_data) -> None:
    method = built(small_data)
    model = method.redcore_model.train()
    batch = small_data.split("train").batch(slice(0, 16))
    present = batch.present.clone()
    present[:4] = False
    loss = method.loss(batch.with_present(present), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(model.advantage.beta).all()
    inputs = {m: torch.where(present[:, [j]], x, float("nan")) for j, (m, x) in enumerate(batch.inputs.items())}
    out = method.predict(mmrobust.Batch(inputs, present, batch.target, batch.modalities))
    assert torch.isfinite(out).all()
    everything_missing = mmrobust.Batch(inputs, torch.zeros_like(present), batch.target, batch.modalities)
    out = method.predict(everything_missing)
    assert torch.isfinite(out).all() and torch.allclose(out, out[:1].expand_as(out))  # one constant prediction


def test_completion_uses_real_codes_where_present_and_never_reads_absent_tokens(small_data) -> None:
    model = built(small_data).redcore_model.eval()
    tokens = model.encode(small_data.split("test").batch(slice(0, 8)))
    present = torch.tensor([[True, False, True], [False, False, True]] * 4)
    mu = model.vib(tokens.z).chunk(2, dim=-1)[0]
    completed = torch.where(present[..., None], mu, model.predictors(torch.where(present[..., None], mu, model.filler)))
    expected = model.classify(completed)
    poisoned = Tokens(tokens.z.masked_fill(~present[..., None], float("nan")), present, tokens.modalities)
    torch.testing.assert_close(model.fuse(poisoned), expected)


def test_evaluation_uses_the_mean_and_sampling_there_is_an_option(small_data) -> None:
    batch = small_data.split("test").batch(slice(0, 16))
    method = built(small_data)
    torch.testing.assert_close(method.predict(batch), method.predict(batch), rtol=0, atol=0)
    model = method.redcore_model
    mu, logvar = torch.randn(2, 3, 4), torch.zeros(2, 3, 4)
    assert torch.equal(model.eval().sample(mu, logvar), mu)
    assert not torch.equal(model.train().sample(mu, logvar), mu)
    sampling = built(small_data, sample_at_eval=True)
    assert not torch.equal(sampling.predict(batch), sampling.predict(batch))  # the released code's behaviour


def test_regression_trains(regression_data) -> None:
    method = mmrobust.create_method("redcore", corruption=RATES, **SMALL)
    mmrobust.fit(method, regression_data, epochs=1, progress=False)
    assert torch.isfinite(method.predict(regression_data.split("test").batch(slice(None)))).all()


def test_params_round_trip_and_input_noise_is_accepted(small_data) -> None:
    method = mmrobust.create_method("redcore", corruption=mmrobust.MissingRates({"m0": 0.2}), eta_every=7)
    params = method.get_params()
    assert params["corruption"]["type"] == "MissingRates" and params["eta_every"] == 7
    assert mmrobust.create_method("redcore", **params).get_params() == params
    noisy = mmrobust.create_method("redcore", corruption={"type": "GaussianNoise", "modality": "m0"})
    mmrobust.fit(noisy, small_data, epochs=1, progress=False)  # noise on raw inputs, then encoded
    with pytest.raises(mmrobust.MMRobustError, match="ema"):
        mmrobust.create_method("redcore", ema=0.0).build(small_data.spec)
