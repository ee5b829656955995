"""UME, MMA, UME-MMA (methods/ume.py), the specialists reference and the imbalanced-rate scenarios."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pandas as pd
import pytest
import torch
from torch import Tensor

import mmrobust
from mmrobust.audit.result import AuditResult
from mmrobust.audit.scenarios import rate_scenarios
from mmrobust.audit.specialists import specialist_configs, specialist_gaps
from mmrobust.corruption import MissingRates, corruption_from_name
from mmrobust.data import Tokens
from mmrobust.data.batch import Batch
from mmrobust.methods.ume import (
    UMEMMA,
    MissingModalityAdaptation,
    UniModalEnsembleMethod,
    _no_training,
)


@pytest.fixture(autouse=True)
def _fresh_stage_cache(tmp_path, monkeypatch) -> None:
    """Each test starts without reusable members (conftest's session cache is shared)."""
    monkeypatch.setenv("MMROBUST_CACHE", str(tmp_path / "cache"))


def fit(method: mmrobust.Method, data: mmrobust.MultimodalData, **kw) -> mmrobust.FitResult:  # type: ignore[no-untyped-def]
    return mmrobust.fit(method, data, seed=0, epochs=3, batch_size=32, progress=False, **kw)


def counting(cls: type, calls: dict[str, int]) -> type:
    """`cls` whose member losses count their calls per modality."""

    class Counting(cls):  # type: ignore[misc, valid-type]
        def member_loss(self, modality: str) -> Callable[[Batch, torch.Generator], Tensor]:
            inner = super().member_loss(modality)

            def loss(batch: Batch, generator: torch.Generator) -> Tensor:
                calls[modality] = calls.get(modality, 0) + 1
                return inner(batch, generator)

            return loss

    Counting.name = cls.name
    return Counting


def members_state(method: UniModalEnsembleMethod) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in method.ensemble.state_dict().items()}


# --- stage 1: members, trained alone and reused ----------------------------------------------
def test_each_member_stage_trains_only_its_member(small_data) -> None:
    seen: dict[str, dict[str, Tensor]] = {}

    class Spy(UniModalEnsembleMethod):
        def member_loss(self, modality: str) -> Callable[[Batch, torch.Generator], Tensor]:
            inner = super().member_loss(modality)

            def loss(batch: Batch, generator: torch.Generator) -> Tensor:
                seen.setdefault(modality, members_state(self))  # the state when this member starts
                return inner(batch, generator)

            return loss

    method = Spy()
    fit(method, small_data)
    first, second = small_data.modalities[:2]
    untouched = [k for k in seen[first] if f".{second}." in k or k.startswith(f"encoders.{second}.")]
    assert untouched and all(torch.equal(seen[first][k], seen[second][k]) for k in untouched)
    trained = [k for k in seen[first] if k.startswith(f"encoders.{first}.")]
    assert any(not torch.equal(seen[first][k], seen[second][k]) for k in trained)


def test_mma_and_ume_mma_reuse_ume_members_instead_of_retraining(small_data) -> None:
    calls: dict[str, int] = {}
    ume = counting(UniModalEnsembleMethod, calls)()
    fit(ume, small_data)
    assert set(calls) == set(small_data.modalities) and all(c > 0 for c in calls.values())
    for cls in (MissingModalityAdaptation, UMEMMA):
        calls.clear()
        other = counting(cls, calls)()
        result = fit(other, small_data)
        assert calls == {}, f"{cls.name} retrained members"
        for k, v in members_state(ume).items():
            assert torch.equal(members_state(other)[k], v), k
        assert [r["stage"] for r in result.history[:3]] == ["ume:m0"] * 3  # reused history is kept
    calls.clear()
    fit(counting(UniModalEnsembleMethod, calls)(dim=32), small_data)  # another architecture: trained
    assert set(calls) == set(small_data.modalities)


@pytest.mark.filterwarnings("ignore:another run is training stage")
def test_a_run_waits_for_a_member_another_run_is_training_and_reuses_it(small_data) -> None:
    """Two runs of one sweep that need the same members (e.g. UME and MMA on two workers): each member
    is trained once, by whichever run claims it first; the other waits and reuses it."""
    first_calls: dict[str, int] = {}
    second_calls: dict[str, int] = {}
    training, go_on = threading.Event(), threading.Event()

    class Held(UniModalEnsembleMethod):  # the first run's first member trains until the test lets it
        def member_loss(self, modality: str) -> Callable[[Batch, torch.Generator], Tensor]:
            inner = super().member_loss(modality)

            def loss(batch: Batch, generator: torch.Generator) -> Tensor:
                first_calls[modality] = first_calls.get(modality, 0) + 1
                training.set()
                go_on.wait(timeout=60)
                return inner(batch, generator)

            return loss

    Held.name = UniModalEnsembleMethod.name
    first, second = Held(), counting(MissingModalityAdaptation, second_calls)()
    runs = [threading.Thread(target=fit, args=(method, small_data)) for method in (first, second)]
    runs[0].start()
    assert training.wait(timeout=60)
    runs[1].start()
    runs[1].join(timeout=2.0)
    assert runs[1].is_alive() and second_calls == {}  # waiting for the member being trained
    go_on.set()
    for run in runs:
        run.join(timeout=120)
    assert not any(run.is_alive() for run in runs)
    for modality in small_data.modalities:  # trained by exactly one of the two runs
        assert (first_calls.get(modality, 0) > 0) != (second_calls.get(modality, 0) > 0), modality
    for k, v in members_state(first).items():
        assert torch.equal(members_state(second)[k], v), k


def test_members_do_not_depend_on_which_method_trains_them(small_data, tmp_path, monkeypatch) -> None:
    ume = UniModalEnsembleMethod()
    fit(ume, small_data)
    monkeypatch.setenv("MMROBUST_CACHE", str(tmp_path / "other-cache"))
    mma = MissingModalityAdaptation(fusion="transformer")
    fit(mma, small_data)
    for k, v in members_state(ume).items():
        assert torch.equal(members_state(mma)[k], v), k


# --- the ensemble -------------------------------------------------------------------------------
@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_ensemble_averages_the_present_members_only(small_data, combine: str) -> None:
    method = UniModalEnsembleMethod(dim=4, combine=combine)  # type: ignore[arg-type]
    torch.manual_seed(0)
    method.build(small_data.spec)
    model = method.ensemble
    heads = list(model.fusion.heads.values())
    z = torch.randn(4, 3, 4)
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, False], [False, False, False]])
    z_with_garbage = z.masked_fill(~present[..., None], float("nan"))
    out = model.fuse(Tokens(z_with_garbage, present, small_data.modalities))
    assert torch.isfinite(out).all()
    per = torch.stack([h(z[:, j]) for j, h in enumerate(heads)], dim=1)  # (B, M, C) by hand
    for b in range(3):
        kept = per[b, present[b]]
        expected = kept.mean(0) if combine == "logits" else kept.softmax(-1).mean(0).log()
        torch.testing.assert_close(out[b], expected)
    torch.testing.assert_close(out[3], torch.zeros_like(out[3]))  # nothing present: the prior


def test_ensemble_regression_averages_outputs(regression_data) -> None:
    method = UniModalEnsembleMethod(dim=4, combine="probs")
    torch.manual_seed(0)
    method.build(regression_data.spec)
    model = method.ensemble
    z, present = torch.randn(2, 3, 4), torch.tensor([[True, False, True], [False, False, False]])
    out = model.fuse(Tokens(z, present, regression_data.modalities))
    heads = list(model.fusion.heads.values())
    expected = (heads[0](z[0, 0]) + heads[2](z[0, 2])) / 2
    torch.testing.assert_close(out, torch.stack([expected.squeeze(), torch.tensor(0.0)]))


# --- the member read-out (`readout`) --------------------------------------------------------------
def test_a_fusion_readout_member_computes_what_the_single_modality_joint_model_does(small_data) -> None:
    """A member with readout "transformer" is the `joint` specialist of its modality: given its
    weights (the specialist's fusion has a modality embedding per data modality, of which only the
    member's is read), the two predict the same."""
    m = small_data.modalities[1]
    method = UniModalEnsembleMethod(dim=8, readout={m: "transformer"})
    fit(method, small_data)
    specialist = mmrobust.create_method("joint", fusion="transformer", dim=8, modalities=[m])
    specialist.build(small_data.spec)
    own = specialist.fitted_model
    member_head = method.ensemble.fusion.heads[m].state_dict()
    embedding = own.fusion.modality_embedding.detach().clone()
    embedding[:, 1] = member_head.pop("modality_embedding")[:, 0]
    own.fusion.load_state_dict({**member_head, "modality_embedding": embedding})
    own.encoders[m].load_state_dict(method.ensemble.encoders[m].state_dict())
    own.eval(), method.ensemble.eval()
    batch = small_data.split("test").batch(slice(None))
    with torch.no_grad():
        torch.testing.assert_close(method.ensemble.member_output(m, batch), own(batch))


def test_mixed_readouts_average_the_present_members_per_sample(small_data) -> None:
    names = small_data.modalities
    method = UniModalEnsembleMethod(dim=4, readout={names[0]: "transformer", names[2]: "concat"})
    torch.manual_seed(0)
    method.build(small_data.spec)
    model = method.ensemble.eval()
    heads = model.fusion.heads
    assert isinstance(heads[names[1]], torch.nn.Linear) and not isinstance(heads[names[0]], torch.nn.Linear)
    z = torch.randn(4, 3, 4)
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, False], [False, False, False]])
    with torch.no_grad():
        out = model.fuse(Tokens(z.masked_fill(~present[..., None], float("nan")), present, names))
        alone = [
            heads[m](z[:, j]) if isinstance(heads[m], torch.nn.Linear)
            else heads[m](Tokens(z[:, j : j + 1], torch.ones(4, 1, dtype=torch.bool), (m,)))
            for j, m in enumerate(names)
        ]  # fmt: skip
    per = torch.stack(alone, dim=1)  # (B, M, C), each member on its own token
    for b in range(3):
        torch.testing.assert_close(out[b], per[b, present[b]].mean(0))
    torch.testing.assert_close(out[3], torch.zeros_like(out[3]))


def test_members_are_reused_only_under_the_same_readouts(small_data) -> None:
    """Another member's read-out moves a linear member's initial weights (its head is built after the
    others'), so a member trained beside other read-outs is a different member: it is not reused."""
    calls: dict[str, int] = {}
    mixed = {small_data.modalities[0]: "transformer"}

    def retrained_by(**params) -> set[str]:  # type: ignore[no-untyped-def]
        before = dict(calls)
        fit(counting(UniModalEnsembleMethod, calls)(dim=8, **params), small_data)
        return {m for m in calls if calls[m] > before.get(m, 0)}

    assert retrained_by() == set(small_data.modalities)
    assert retrained_by(readout=mixed) == set(small_data.modalities)
    assert retrained_by(readout=mixed) == set()  # the same read-outs again: every member from the cache
    assert retrained_by(readout="linear") == set()


def test_mma_starts_fresh_where_a_member_head_is_not_linear(small_data) -> None:
    m0 = small_data.modalities[0]
    method = MissingModalityAdaptation(fusion="late", dim=8, readout={m0: "transformer"})
    fit(method, small_data)  # the late fusion copies the linear members' heads only
    model = method.adapted_model
    before = model.fusion.weight.detach().clone()
    model.initialise_from_members()
    torch.testing.assert_close(model.fusion.weight[0], before[0])
    linear = method.ensemble.fusion.heads[small_data.modalities[1]]
    torch.testing.assert_close(model.fusion.weight[1], linear.weight.T)


@pytest.mark.parametrize(
    ("readout", "message"),
    [
        ({"nope": "transformer"}, "unknown modality in readout 'nope'"),
        ("transfomer", "unknown readout for 'm0' 'transfomer'. Did you mean 'transformer'"),
        ({"m1": ["transformer"]}, "unknown readout for 'm1'"),
        (["transformer"], "readout must be a name or a mapping"),
        (None, "readout must be a name or a mapping"),
    ],
)
def test_a_bad_readout_is_refused_before_training(small_data, readout, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(mmrobust.MMRobustError, match=message):
        UniModalEnsembleMethod(readout=readout).build(small_data.spec)


# --- MMA ------------------------------------------------------------------------------------------
def test_mma_starts_from_the_members(small_data) -> None:
    snapshots: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []

    class Spy(MissingModalityAdaptation):
        def start_adaptation(self) -> None:
            snapshots.append(({k: v.clone() for k, v in self.adapted_model.encoders.state_dict().items()},
                              {k: v.clone() for k, v in self.ensemble.encoders.state_dict().items()}))  # fmt: skip
            super().start_adaptation()
            snapshots.append(({k: v.clone() for k, v in self.adapted_model.encoders.state_dict().items()}, {}))

    method = Spy(fusion="late")
    fit(method, small_data)
    assert len(snapshots) == 2  # the copy happens once, at the first adaptation step
    (before, members), (after, _) = snapshots
    assert any(not torch.equal(before[k], members[k]) for k in members)
    assert all(torch.equal(after[k], members[k]) for k in members)
    # the late fusion's heads start as the members' heads: the adapted model starts as the ensemble
    model = method.adapted_model
    model.initialise_from_members()
    batch = MissingRates({m: 0.5 for m in small_data.modalities})(
        small_data.split("val").batch(slice(None)), torch.Generator().manual_seed(0)
    )
    model.eval()
    torch.testing.assert_close(model.adapted_output(batch), model.ensemble(batch))


def test_mma_trains_under_its_missing_modality_augmentation(small_data) -> None:
    method = MissingModalityAdaptation(drop_probability=0.4)
    method.build(small_data.spec)
    corruption = method.train_corruption
    assert isinstance(corruption, MissingRates) and corruption.if_all_missing == "keep_one"
    assert corruption.rates == {m: 0.4 for m in small_data.modalities}
    custom = MissingModalityAdaptation(corruption={"type": "RandomDrop"})
    custom.build(small_data.spec)
    assert custom.train_corruption.name == "randomdrop"
    assert custom.get_params()["corruption"] == {"type": "RandomDrop"}


# --- UME-MMA: the choice ------------------------------------------------------------------------
class BadEnsemble(UMEMMA):
    """After the members are trained, the ensemble is ruined: the adapted model must win."""

    def start_adaptation(self) -> None:
        super().start_adaptation()
        with torch.no_grad():
            for head in self.ensemble.fusion.heads.values():
                head.weight.zero_()
                head.bias.copy_(torch.arange(head.bias.numel(), dtype=torch.float32) * 10)


class BadAdapted(UMEMMA):
    """The adapted model is never initialised nor trained (a fresh random model): the ensemble must win."""

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        return _no_training(batch, generator)


@pytest.mark.parametrize(("cls", "expected"), [(BadEnsemble, "mma"), (BadAdapted, "ume")])
def test_ume_mma_picks_the_better_on_validation_and_records_it(small_data, tmp_path, cls, expected) -> None:
    target = "rates[m0=0.5,m1=0.5,m2=0.5]"
    method = cls(target=target)
    assert method.chosen is None
    result = fit(method, small_data)
    choose = [r for r in result.history if r["stage"] == "choose"]
    assert len(choose) == 2  # epoch 0: the ensemble, epoch 1: the adapted model
    better = min(range(2), key=lambda i: choose[i]["val_loss"])
    assert method.chosen == expected == ("ume" if better == 0 else "mma")
    assert result.best_epoch == better and int(method.adapted_model.choice) == better
    assert method.describe().endswith(f"-> {expected}")
    # what it predicts is what it chose; the checkpoint carries the choice
    batch = small_data.split("test").batch(slice(None))
    model = method.adapted_model
    chosen_output = model.ensemble(batch) if expected == "ume" else model.adapted_output(batch)
    torch.testing.assert_close(method.predict(batch), chosen_output)
    mmrobust.register_method(cls.__name__)(cls)
    try:
        reloaded, _ = mmrobust.load_checkpoint(mmrobust.save_checkpoint(method, tmp_path / "m.pt"))
    finally:
        mmrobust.METHODS.unregister(cls.__name__)
        cls.name = "ume_mma"
    assert isinstance(reloaded, UMEMMA) and reloaded.chosen == expected
    torch.testing.assert_close(reloaded.predict(batch), method.predict(batch))


def test_ume_mma_scores_both_candidates_under_the_target(small_data) -> None:
    target = MissingRates({m: 0.5 for m in small_data.modalities})
    method = UMEMMA(target=target)
    result = fit(method, small_data)
    assert method.get_params()["target"] == target.to_dict()
    choose = [r for r in result.history if r["stage"] == "choose"]
    model, val = method.adapted_model, small_data.split("val").batch(slice(None))
    masked = target(val, torch.Generator().manual_seed(0))  # the masks: seeded by the fit seed, for both
    with torch.no_grad():
        outputs = (model.ensemble(masked), model.adapted_output(masked))
    for row, output in zip(choose, outputs, strict=True):
        loss = torch.nn.functional.cross_entropy(output, val.target)
        assert math.isclose(row["val_loss"], float(loss), rel_tol=1e-5)
    with pytest.raises(mmrobust.MMRobustError, match="cannot parse"):
        fit(UMEMMA(target="rates[oops"), small_data)


def test_ume_mma_is_deterministic(small_data, tmp_path, monkeypatch) -> None:
    first = UMEMMA(target="rates[m0=0.2,m1=0.5,m2=0.8]")
    a = fit(first, small_data)
    monkeypatch.setenv("MMROBUST_CACHE", str(tmp_path / "again"))  # retrain everything
    second = UMEMMA(target="rates[m0=0.2,m1=0.5,m2=0.8]")
    b = fit(second, small_data)
    assert a == b and first.chosen == second.chosen
    for k, v in first.modules().state_dict().items():
        assert torch.equal(second.modules().state_dict()[k], v), k


# --- specialists and rate scenarios ---------------------------------------------------------------
def test_specialist_configs_cover_every_subset() -> None:
    configs = specialist_configs(["a", "b", "c"])
    assert len(configs) == 7
    assert configs[0] == {
        "method": "joint",
        "label": "specialist[a+b+c]",
        "params": {"fusion": "late", "dim": 64, "modalities": ["a", "b", "c"]},
    }
    assert {c["label"] for c in configs} >= {"specialist[a]", "specialist[b+c]"}
    mmrobust.create_method(configs[-1]["method"], **configs[-1]["params"])  # valid parameters


def _rows(model: str, values: dict[str, float], seed: int = 0, metric: str = "accuracy") -> list[dict]:
    return [
        {"dataset": "d", "model": model, "method": "x", "fusion": "late", "seed": seed, "scenario": s,
         "kind": "clean" if s == "clean" else "subset", "metric": metric, "value": v, "delta": 0.0}
        for s, v in values.items()
    ]  # fmt: skip


def test_specialist_gaps_on_a_hand_made_table() -> None:
    rows = (
        _rows("specialist[a+b]", {"clean": 0.9, "subset[a]": 0.5, "subset[b]": 0.4})
        + _rows("specialist[a]", {"clean": 0.7, "subset[a]": 0.7, "subset[b]": 0.1})
        + _rows("ume", {"clean": 0.8, "subset[a]": 0.75, "subset[b]": 0.6}, seed=0)
        + _rows("ume", {"clean": 0.9, "subset[a]": 0.65, "subset[b]": 0.6}, seed=1)
        + _rows("ume", {"clean": 0.1, "subset[a]": 0.1, "subset[b]": 0.1}, metric="macro_f1")
    )
    result = AuditResult(pd.DataFrame(rows), "classification")
    gaps = specialist_gaps(result)
    assert list(gaps.model) == ["ume", "ume"]  # no specialist for {b}: left out
    by_subset = gaps.set_index("subset")
    assert math.isclose(by_subset.loc["a+b", "value"], 0.85) and by_subset.loc["a+b", "specialist"] == 0.9
    assert math.isclose(by_subset.loc["a+b", "gap"], -0.05) and math.isclose(by_subset.loc["a+b", "shortfall"], 0.05)
    assert math.isclose(by_subset.loc["a", "gap"], 0.0) and by_subset.loc["a", "seeds"] == 2
    explicit = specialist_gaps(result, specialists={"specialist[a]": ["a"]})
    assert list(explicit.subset) == ["a", "a"]  # the unnamed one is now just another model
    assert list(explicit.model) == ["specialist[a+b]", "ume"] and math.isclose(explicit.gap.iloc[0], -0.2)
    mae = AuditResult(pd.DataFrame(_rows("s", {"clean": 1.0}, metric="mae") + _rows("u", {"clean": 1.5}, metric="mae")),
                      "regression")  # fmt: skip
    worse = specialist_gaps(mae, specialists={"s": ["a", "b"]})
    assert math.isclose(worse.gap.iloc[0], 0.5) and math.isclose(worse.shortfall.iloc[0], 0.5)
    with pytest.raises(mmrobust.MMRobustError, match="no specialists"):
        specialist_gaps(AuditResult(pd.DataFrame(_rows("ume", {"clean": 1.0})), "classification"))


def test_rate_scenarios_balanced_and_every_imbalanced_permutation() -> None:
    scenarios = rate_scenarios(["a", "b", "c"])
    names = [s.name for s in scenarios]
    assert names[0] == "rates[a=0.5,b=0.5,c=0.5]" and len(names) == 7 == len(set(names))
    assert "rates[a=0.2,b=0.5,c=0.8]" in names and "rates[a=0.8,b=0.2,c=0.5]" in names
    for s in scenarios:
        assert corruption_from_name(s.name) == s.corruption and s.kind == "custom"
    assert [s.name for s in rate_scenarios(["a", "b"], balanced=None)] == ["rates[a=0.2,b=0.5]", "rates[a=0.5,b=0.2]"]
    assert len(rate_scenarios(["a", "b", "c"], rates=(0.5,))) == 1  # all balanced: one scenario
