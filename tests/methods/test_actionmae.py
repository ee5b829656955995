"""ActionMAE: drop sampling, slot scatter-back, loss on dropped slots only, memory tokens."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mmrobust
from mmrobust.data import Tokens
from mmrobust.methods import actionmae
from mmrobust.methods.actionmae import (
    ActionMAE,
    TokenAutoencoder,
    denormalise,
    normalised_target,
    sample_drop,
    sinusoidal_positions,
)

D = 8


def test_sinusoidal_positions_start_at_one_and_differ_per_slot() -> None:
    pos = sinusoidal_positions(3, D)
    assert pos.shape == (3, D)
    assert torch.allclose(pos[0, :2], torch.tensor([math.sin(1.0), math.cos(1.0)]))
    assert len({tuple(row.tolist()) for row in pos}) == 3


def test_drop_sampling_k_uniform_per_batch_and_slots_uniform_per_sample() -> None:
    n, batch, draws = 3, 64, 1500
    g = torch.Generator().manual_seed(0)
    present = torch.ones(batch, n, dtype=torch.bool)
    ks, slot_counts = [], torch.zeros(n)
    for _ in range(draws):
        drop = sample_drop(present, g)
        per_row = drop.sum(dim=1)
        assert (per_row == per_row[0]).all()  # one K per batch
        ks.append(int(per_row[0]))
        slot_counts += drop.sum(dim=0)
    freq = torch.bincount(torch.tensor(ks), minlength=n).float() / draws
    assert max(ks) < n  # never every modality
    assert torch.allclose(freq, torch.full((n,), 1 / n), atol=0.04)  # K ~ U{0..N-1}
    share = slot_counts / slot_counts.sum()
    assert torch.allclose(share, torch.full((n,), 1 / n), atol=0.02)  # every slot equally likely


def test_rows_of_one_batch_drop_different_slots() -> None:
    g = torch.Generator().manual_seed(1)
    drops = [sample_drop(torch.ones(32, 4, dtype=torch.bool), g) for _ in range(10)]
    assert any(len({tuple(r.tolist()) for r in d}) > 1 for d in drops)


def test_kept_tokens_are_scattered_back_by_slot_index_for_a_non_prefix_subset() -> None:
    """With no transformer layers, slot j's output is a function of z_j alone, so a misplaced
    token (the released code packs kept tokens into the first slots) would show."""
    torch.manual_seed(0)
    ae = TokenAutoencoder(n_slots=3, dim=D, n_memory=2, layers=0).eval()
    z = torch.randn(5, 3, D)
    kept = torch.tensor([[False, False, True]] * 5)  # keep only the last slot
    out = ae(z, kept)
    pos = ae.slot_position[0]

    def through(slot_input: torch.Tensor, j: int) -> torch.Tensor:
        return ae.predict(ae.decoder_norm(slot_input + pos[j]))

    expected_kept = through(ae.encoder_norm(z[:, 2] + pos[2]), 2)
    torch.testing.assert_close(out[:, 2], expected_kept)
    for j in (0, 1):  # dropped slots get the mask token at their own position
        torch.testing.assert_close(out[:, j], through(ae.mask_token[0].expand(5, -1), j))


def test_position_embedding_tells_slots_apart() -> None:
    torch.manual_seed(0)
    with_pos = TokenAutoencoder(3, D, layers=1).eval()
    without = TokenAutoencoder(3, D, layers=1, position_embedding=False).eval()
    z = torch.randn(4, 3, D)
    z_swapped = z[:, [1, 0, 2]]
    kept = torch.tensor([[True, True, False]] * 4)
    # without positions, swapping the two kept tokens leaves the reconstruction of slot 2 unchanged
    torch.testing.assert_close(without(z, kept)[:, 2], without(z_swapped, kept)[:, 2])
    assert not torch.allclose(with_pos(z, kept)[:, 2], with_pos(z_swapped, kept)[:, 2])


def test_reconstruction_ignores_dropped_values() -> None:
    torch.manual_seed(0)
    ae = TokenAutoencoder(3, D, layers=2).eval()
    z = torch.randn(6, 3, D)
    kept = torch.tensor([[True, False, True]] * 3 + [[False, True, False]] * 3)
    garbage = torch.where(kept[..., None], z, torch.full_like(z, float("nan")))
    torch.testing.assert_close(ae(z, kept), ae(garbage, kept))


@pytest.mark.parametrize("n_memory", [0, 1, 4])
def test_memory_tokens_are_never_predicted(n_memory: int) -> None:
    ae = TokenAutoencoder(3, D, n_memory=n_memory)
    out, _ = ae.reconstruct(torch.randn(2, 3, D), torch.tensor([[True, False, False], [False, False, False]]))
    assert out.shape == (2, 3, D) and torch.isfinite(out).all()


def fitted(data: mmrobust.MultimodalData, **params: object) -> ActionMAE:
    method = mmrobust.create_method("actionmae", **params)
    assert isinstance(method, ActionMAE)
    mmrobust.fit(method, data, epochs=1, progress=False)
    return method


def test_fusion_gets_originals_where_present_and_reconstructions_elsewhere(small_data) -> None:
    model = fitted(small_data).actionmae_model.eval()
    batch = small_data.split("test").batch(slice(0, 8))
    tokens = model.encode(batch)
    present = torch.tensor([[False, True, False]] * 8)  # a non-prefix subset
    completed, prediction = model.complete(tokens.with_present(present))
    assert prediction is not None and completed.present.all()
    torch.testing.assert_close(completed.z[:, 1], tokens.z[:, 1])
    torch.testing.assert_close(completed.z[:, [0, 2]], denormalise(prediction)[:, [0, 2]])
    full, none = model.complete(tokens)
    assert none is None and full is tokens  # nothing missing: the autoencoder is skipped


def test_a_perfect_prediction_reconstructs_the_token_on_its_own_scale() -> None:
    z = torch.randn(4, 3, 16) * 5 + 2  # tokens far from zero mean, unit variance
    std = z.var(dim=-1, unbiased=False).add(1e-6).sqrt()
    prediction = torch.cat([normalised_target(z), z.mean(dim=-1, keepdim=True), std.log()[..., None]], dim=-1)
    torch.testing.assert_close(denormalise(prediction), z)


def test_loss_counts_only_dropped_slots(small_data, monkeypatch: pytest.MonkeyPatch) -> None:
    method = fitted(small_data, lambda_rec=2.0)
    model = method.actionmae_model.train()
    batch = small_data.split("train").batch(slice(0, 16))
    drop = torch.zeros(16, 3, dtype=torch.bool)
    drop[:8, 0], drop[8:, 2] = True, True
    monkeypatch.setattr(actionmae, "sample_drop", lambda present, generator: drop)
    model.eval()  # no dropout, so the manual recomputation below matches exactly
    loss = method.loss(batch, torch.Generator())
    tokens = model.encode(batch)
    prediction = model.autoencoder(tokens.z, ~drop)  # (B, N, D + 2)
    normalised, mean, log_std = prediction[..., :-2], prediction[..., -2], prediction[..., -1]
    reconstruction = mean[..., None] + log_std.exp()[..., None] * normalised  # on the tokens' scale
    completed = Tokens(torch.where(drop[..., None], reconstruction, tokens.z), torch.ones_like(drop), tokens.modalities)
    ce = F.cross_entropy(model.fuse(completed), batch.target, label_smoothing=0.1)
    std = tokens.z.var(dim=-1, unbiased=False).add(1e-6).sqrt()
    per_slot = (
        ((normalised - normalised_target(tokens.z)) ** 2).mean(dim=-1)
        + (mean - tokens.z.mean(dim=-1)) ** 2
        + (log_std - std.log()) ** 2
    )
    torch.testing.assert_close(loss, ce + 2.0 * per_slot[drop].mean())
    # the reconstruction loss alone has no gradient at kept slots
    r = prediction.detach().requires_grad_()
    method.reconstruction_loss(r, tokens.z.detach(), drop).backward()
    assert r.grad is not None and (r.grad[~drop] == 0).all() and (r.grad[drop] != 0).any()


def test_no_drop_means_classification_loss_only(small_data, monkeypatch: pytest.MonkeyPatch) -> None:
    method = fitted(small_data)
    model = method.actionmae_model.eval()
    batch = small_data.split("train").batch(slice(0, 16))
    monkeypatch.setattr(actionmae, "sample_drop", lambda present, generator: torch.zeros_like(present))
    expected = F.cross_entropy(model(batch), batch.target, label_smoothing=0.1)
    torch.testing.assert_close(method.loss(batch, torch.Generator()), expected)


def test_ablation_switches_are_recorded_and_change_the_model(small_data) -> None:
    method = mmrobust.create_method("actionmae", n_memory=0, position_embedding=False, lambda_rec=10.0)
    assert method.get_params()["n_memory"] == 0 and method.get_params()["lambda_rec"] == 10.0
    method.build(small_data.spec)
    assert isinstance(method, ActionMAE)
    ae = method.actionmae_model.autoencoder
    assert ae.memory.shape[1] == 0 and not ae.slot_position.any()
