"""CroSSL: latent masks, VICReg terms, label-free pretraining, frozen/fine-tuned stages, label efficiency."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import pytest
import torch

import mmrobust
from mmrobust.data.batch import Batch
from mmrobust.methods.base import Stage
from mmrobust.methods.crossl import Aggregator, CroSSL, label_keys, latent_mask, vicreg_terms

KINDS = ("conv1d", "conv1d", "conv1d")


@pytest.fixture(scope="module")
def sensor_data() -> mmrobust.MultimodalData:
    return mmrobust.load_dataset("synthetic", n_samples=300, kinds=KINDS, informativeness=(1.5, 1.0, 1.0), seed=5)


def fit(method: mmrobust.Method, data: mmrobust.MultimodalData, **kw) -> mmrobust.FitResult:  # type: ignore[no-untyped-def]
    options = {"seed": 0, "epochs": 3, "batch_size": 32, "progress": False, **kw}
    return mmrobust.fit(method, data, **options)


def crossl(**params) -> CroSSL:  # type: ignore[no-untyped-def]
    method = mmrobust.create_method("crossl", **params)
    assert isinstance(method, CroSSL)
    return method


# --- latent masks ---------------------------------------------------------------------------
@pytest.mark.parametrize("masking", ["spatial", "random"])
@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_mask_ratio_is_the_masked_share_and_views_are_independent(masking: str, ratio: float) -> None:
    g = torch.Generator().manual_seed(0)
    shape = (4000, 3, 8)
    a, b = latent_mask(shape, ratio, masking, g), latent_mask(shape, ratio, masking, g)
    assert a.shape == ((4000, 3, 1) if masking == "spatial" else shape) and a.dtype == torch.bool
    assert abs((~a).float().mean().item() - ratio) < 0.02  # mask_ratio = P(masked) = 1 − coverage
    both_masked = (~a & ~b).float().mean().item()
    assert abs(both_masked - ratio**2) < 0.02  # independent views: P(masked in both) = r²
    assert not torch.equal(a, b)


def test_mask_ratio_zero_keeps_everything() -> None:
    g = torch.Generator().manual_seed(0)
    assert latent_mask((50, 3, 4), 0.0, "random", g).all() and latent_mask((50, 3, 4), 0.0, "spatial", g).all()


def test_random_masking_hits_entries_and_spatial_masking_whole_embeddings() -> None:
    g = torch.Generator().manual_seed(1)
    random = latent_mask((500, 3, 16), 0.5, "random", g)
    per_slot = random.float().mean(dim=-1)  # a slot is partly masked under random masking
    assert ((per_slot > 0) & (per_slot < 1)).float().mean() > 0.9
    agg = Aggregator(3, 16, (8,), 4, "mlp").eval()
    q = torch.randn(500, 3, 16)
    present = torch.ones(500, 3, dtype=torch.bool)
    torch.testing.assert_close(agg(q, present, random), agg(q * random, present))  # entries zeroed
    spatial = latent_mask((500, 3, 16), 0.5, "spatial", g)
    as_absent = agg(q, present & spatial[..., 0])  # a spatially masked slot == an absent modality
    torch.testing.assert_close(agg(q, present, spatial), as_absent)
    torch.testing.assert_close(as_absent, agg(q * spatial, present))  # ...== a zeroed embedding


def test_absent_embeddings_are_never_read() -> None:
    agg = Aggregator(3, 8, (8,), 4, "mlp")
    q = torch.randn(10, 3, 8)
    present = torch.rand(10, 3) > 0.5
    nan = q.masked_fill(~present[..., None], float("nan"))
    torch.testing.assert_close(agg(nan, present), agg(q, present))


# --- VICReg -------------------------------------------------------------------------------------
def test_vicreg_terms_by_hand() -> None:
    z1 = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    z2 = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    s, v, c = vicreg_terms(z1, z2)
    # invariance: per-sample mean squared difference (1 + 1)/2 = 1 for both samples
    assert s.item() == pytest.approx(1.0)
    # variance: z1 has biased var 1 per dim -> max(0, 1 − sqrt(1 + 1e-4)) = 0; z2 has var 0 -> 1 − 0.01
    assert v.item() == pytest.approx(0.5 * (0.0 + (1 - 1e-4**0.5)))
    # covariance: z1 centred [[-1, 1], [1, -1]] -> C = [[2, -2], [-2, 2]] / (B − 1 = 1): (4 + 4) / P = 4; z2: 0
    assert c.item() == pytest.approx(4.0)


def _vicreg_reference(z1: torch.Tensor, z2: torch.Tensor) -> tuple[float, float, float]:
    """The module docstring's formulas, written out element by element."""
    b, p = z1.shape
    s = sum(sum((z1[i, j] - z2[i, j]) ** 2 for j in range(p)) / p for i in range(b)) / b
    v, c = 0.0, 0.0
    for z in (z1, z2):
        mean = [sum(z[i, j] for i in range(b)) / b for j in range(p)]
        for j in range(p):
            var = sum((z[i, j] - mean[j]) ** 2 for i in range(b)) / b
            v += 0.5 * max(0.0, 1 - float(var + 1e-4) ** 0.5) / p
        for j, k in itertools.product(range(p), repeat=2):
            if j != k:
                cov = sum((z[i, j] - mean[j]) * (z[i, k] - mean[k]) for i in range(b)) / (b - 1)
                c += float(cov) ** 2 / p
    return float(s), v, c


def test_vicreg_terms_match_the_elementwise_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.randn(5, 3, generator=g, dtype=torch.float64) * 0.3,
        torch.randn(5, 3, generator=g, dtype=torch.float64),
    )
    for got, want in zip(vicreg_terms(z1, z2), _vicreg_reference(z1, z2), strict=True):
        assert got.item() == pytest.approx(want, rel=1e-9)


# --- stages ---------------------------------------------------------------------------------------
def _stage_names(method: CroSSL, data: mmrobust.MultimodalData) -> list[tuple[str, bool]]:
    method.build(data.spec)
    return [(s.name, s.select) for s in method.stages(0)]


def test_stages_per_mode(sensor_data) -> None:
    assert _stage_names(crossl(mode="supervised"), sensor_data) == [("train", True)]
    assert _stage_names(crossl(mode="fixed"), sensor_data) == [("pretrain", False), ("probe", True)]
    assert _stage_names(crossl(), sensor_data) == [("pretrain", False), ("finetune", True)]
    names = _stage_names(crossl(freeze_epochs=3), sensor_data)
    assert names == [("pretrain", False), ("frozen", False), ("finetune", True)]
    fixed, tuned = crossl(mode="fixed"), crossl(mode="finetune", freeze_epochs=2, label_fraction=0.1)
    assert fixed.pretrain_key() == tuned.pretrain_key() != crossl(masking="random").pretrain_key()
    with pytest.raises(mmrobust.MMRobustError, match="mask_ratio"):
        crossl(mask_ratio=1.0).build(sensor_data.spec)


class _Spy(CroSSL):
    """Snapshots the backbone's weights when each downstream stage starts."""

    def stages(self, seed: int) -> Sequence[Stage]:
        self.snapshots: dict[str, dict[str, torch.Tensor]] = {}
        self.calls: dict[str, int] = {}
        return [dataclasses.replace(stage, loss=self._spy(stage)) for stage in super().stages(seed)]

    def _spy(self, stage: Stage):  # type: ignore[no-untyped-def]
        def loss(batch: Batch, generator: torch.Generator) -> torch.Tensor:
            self.calls[stage.name] = self.calls.get(stage.name, 0) + 1
            if stage.name not in self.snapshots:
                state = self.crossl_model.backbone().state_dict()
                self.snapshots[stage.name] = {k: v.clone() for k, v in state.items()}
            return stage.loss(batch, generator)

        return loss


def test_fixed_mode_trains_only_the_head(sensor_data) -> None:
    method = _Spy(mode="fixed", pretrain_epochs=2)
    torch.manual_seed(0)
    init = CroSSL(mode="fixed")
    init.build(sensor_data.spec)
    fit(method, sensor_data)
    after = method.crossl_model.backbone().state_dict()
    for k, v in method.snapshots["probe"].items():
        assert torch.equal(after[k], v), k
    assert any(not torch.equal(after[k], v) for k, v in init.crossl_model.backbone().state_dict().items())
    head = init.crossl_model.head.state_dict()
    assert any(not torch.equal(method.crossl_model.head.state_dict()[k], v) for k, v in head.items())


def test_finetune_freezes_for_freeze_epochs_then_trains_everything(sensor_data) -> None:
    method = _Spy(mode="finetune", pretrain_epochs=2, freeze_epochs=2)
    result = fit(method, sensor_data)
    assert [r.get("stage") for r in result.history[:4]] == ["pretrain", "pretrain", "frozen", "frozen"]
    frozen, tuned = method.snapshots["frozen"], method.snapshots["finetune"]
    assert all(torch.equal(frozen[k], v) for k, v in tuned.items())  # unchanged while frozen
    after = method.crossl_model.backbone().state_dict()
    assert any(not torch.equal(after[k], v) for k, v in tuned.items())  # trained once unfrozen


def test_fixed_and_finetuned_runs_share_one_pretraining(sensor_data) -> None:
    first, second = crossl(mode="finetune", pretrain_epochs=2), _Spy(mode="fixed", pretrain_epochs=2)
    a, b = fit(first, sensor_data), fit(second, sensor_data)
    assert [r for r in a.history if r.get("stage") == "pretrain"] == [
        r for r in b.history if r.get("stage") == "pretrain"
    ]
    assert "pretrain" not in second.calls and second.calls["probe"] > 0  # reused, not trained again
    again = _Spy(mode="finetune", pretrain_epochs=2, freeze_epochs=1)  # the head's freeze changes nothing here
    fit(again, sensor_data)
    assert "pretrain" not in again.calls
    for k, v in again.snapshots["frozen"].items():  # both downstream stages start from one pretraining
        assert torch.equal(second.snapshots["probe"][k], v), k


# --- pretraining ----------------------------------------------------------------------------
class _PretrainOnly(CroSSL):
    def stages(self, seed: int) -> Sequence[Stage]:
        return super().stages(seed)[:1]


def _pretrain(data: mmrobust.MultimodalData, **params) -> tuple[list[float], torch.Tensor]:  # type: ignore[no-untyped-def]
    """Train losses per epoch and the per-dimension std of the test embeddings after pretraining."""
    method = _PretrainOnly(mode="fixed", embed_dim=32, kernels=(5, 3, 3), mask_ratio=0.3, pretrain_epochs=25, **params)
    result = fit(method, data, lr=3e-3)
    model = method.crossl_model.eval()
    with torch.no_grad():
        z = model.embed(model.encode(data.split("test").batch(slice(None))))  # (N, P)
    return [r["train_loss"] for r in result.history], z.std(dim=0)


@pytest.mark.parametrize("masking", ["spatial", "random"])
def test_pretraining_lowers_vicreg_and_does_not_collapse(sensor_data, masking: str) -> None:
    losses, std = _pretrain(sensor_data, masking=masking)
    assert losses[-1] < losses[0] - 0.5
    # 10/10/100 with P = 32 balances at a per-dimension std of ~0.2-0.3 (the covariance term of a
    # finite batch grows like std^4); without the variance term the embedding collapses (< 0.01)
    assert std.min() > 0.06, std
    if masking == "spatial":
        _, collapsed = _pretrain(sensor_data, masking=masking, std_coeff=0.0)
        assert collapsed.max() < 0.03 < std.min()


def test_pretraining_reads_no_label(sensor_data) -> None:
    method = crossl(mode="fixed")
    method.build(sensor_data.spec)
    batch = sensor_data.split("train").batch(slice(0, 16))
    unlabelled = Batch(batch.inputs, batch.present, None, batch.modalities)  # type: ignore[arg-type]
    assert torch.isfinite(method.pretrain_loss(unlabelled, torch.Generator().manual_seed(0)))
    shuffled = torch.randint(0, 4, sensor_data.target.shape, generator=torch.Generator().manual_seed(9))
    garbage = dataclasses.replace(sensor_data, target=shuffled)
    assert not torch.equal(garbage.target, sensor_data.target)
    runs = [_PretrainOnly(mode="fixed", pretrain_epochs=2) for _ in range(2)]
    for run, data in zip(runs, (sensor_data, garbage), strict=True):
        fit(run, data)
    one, other = (r.crossl_model.backbone().state_dict() for r in runs)
    for k, v in one.items():
        assert torch.equal(other[k], v), k


# --- label efficiency ------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5])
def test_label_fraction_keeps_that_share_of_every_class(fraction: float) -> None:
    data = mmrobust.load_dataset("synthetic", n_samples=4000, kinds=KINDS, num_classes=4, seed=6).split("train")
    keys = label_keys(data.batch(slice(None)), seed=0)
    chosen = keys < fraction
    n = len(data)
    assert abs(int(chosen.sum()) - fraction * n) < 4 * (n * fraction * (1 - fraction)) ** 0.5
    for c in range(4):  # stratified in expectation: each class keeps ~fraction of its windows
        in_class = data.target == c
        k = int(in_class.sum())
        assert abs(int(chosen[in_class].sum()) - fraction * k) < 4 * (k * fraction * (1 - fraction)) ** 0.5 + 1


def test_label_keys_are_per_sample_seeded_and_ignore_placeholders(sensor_data) -> None:
    data = sensor_data.split("train")
    whole = label_keys(data.batch(slice(None)), seed=0)
    parts = torch.cat([label_keys(b, seed=0) for b in data.batches(7)])  # independent of batching
    torch.testing.assert_close(parts, whole, rtol=0, atol=0)
    assert not torch.equal(label_keys(data.batch(slice(None)), seed=1), whole)
    batch = data.batch(slice(0, 40))
    present = batch.present.clone()
    present[::3, 1] = False
    nan = {m: x.clone() for m, x in batch.inputs.items()}
    nan["m1"][::3] = float("nan")
    torch.testing.assert_close(
        label_keys(Batch(nan, present, batch.target, batch.modalities), 0),
        label_keys(batch.with_present(present), 0),
    )


class _TargetSpy(CroSSL):
    """Records the targets every downstream loss call receives."""

    def stages(self, seed: int) -> Sequence[Stage]:
        self.seen: list[torch.Tensor] = []
        return [dataclasses.replace(s, loss=self._spy(s)) if s.name != "pretrain" else s for s in super().stages(seed)]

    def _spy(self, stage: Stage):  # type: ignore[no-untyped-def]
        def loss(batch: Batch, generator: torch.Generator) -> torch.Tensor:
            self.seen.append(batch.target.clone())
            return stage.loss(batch, generator)

        return loss


@pytest.mark.parametrize("mode", ["supervised", "fixed"])
def test_downstream_stages_learn_from_the_same_labelled_samples_every_epoch_under_augmentation(
    sensor_data, mode: str
) -> None:
    """The label keys hash the raw inputs: chosen before augmentation, every epoch sees exactly the
    samples the keys chose (a hash of augmented copies would pick new ones each epoch)."""
    method = _TargetSpy(mode=mode, label_fraction=0.25, pretrain_epochs=1)
    augment = {m.name: {"crop": 0.2, "scale": 0.1} for m in sensor_data.spec.modalities}
    fit(method, sensor_data, epochs=3, seed=3, augment=augment)
    train = sensor_data.split("train").batch(slice(None))
    chosen = train.target[label_keys(train, 3) < 0.25]
    assert 0 < len(chosen) < len(train)
    seen = torch.cat(method.seen)  # 3 epochs of the downstream stage (`fixed`: its probe)
    assert len(seen) == 3 * len(chosen)
    assert torch.equal(torch.bincount(seen, minlength=4), 3 * torch.bincount(chosen, minlength=4))


# --- prediction ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["supervised", "fixed"])
def test_prediction_is_deterministic_under_any_mask(sensor_data, mode: str) -> None:
    method = crossl(mode=mode, pretrain_epochs=1, corruption={"type": "RandomDrop"})
    fit(method, sensor_data, epochs=2)
    test = sensor_data.split("test").batch(slice(None))
    masked = mmrobust.MissingRates({"m0": 0.5, "m1": 0.5, "m2": 0.5}, if_all_missing="allow")(
        test, torch.Generator().manual_seed(0)
    )
    first, second = method.predict(masked), method.predict(masked)
    assert torch.isfinite(first).all() and torch.equal(first, second)


def test_a_one_sample_batch_adds_nothing_to_pretraining() -> None:
    """The last batch of an epoch can hold one sample: VICReg's (co)variances are undefined there."""
    data = mmrobust.load_dataset("synthetic", n_samples=60, kinds=("conv1d", "conv1d", "conv1d"), seed=0)
    method = mmrobust.create_method("crossl", mode="fixed")
    method.build(data.spec)
    loss = method.pretrain_loss(data.batch(slice(0, 1)), torch.Generator().manual_seed(0))
    loss.backward()
    assert float(loss.detach()) == 0.0
    # and a whole fit whose train split ends in a one-sample batch stays finite
    result = mmrobust.fit(method, data, epochs=1, batch_size=len(data.split("train")) - 1, progress=False)
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
