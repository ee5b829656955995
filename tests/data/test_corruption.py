"""Corruptions: seeded determinism, statistical correctness, token stage, serialisation, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

import mmrobust
from mmrobust import (
    Compose,
    GaussianNoise,
    Missing,
    MissingRates,
    MMRobustError,
    RandomDrop,
    RandomSubset,
    Subset,
    corruption_from_dict,
)
from mmrobust.corruption import Perturbation, corruption_from_name
from mmrobust.data import Tokens

N = 20_000
MODS = ("audio", "video", "text")


def tol(p: float, n: int) -> float:
    """Four standard errors of a proportion estimated from n Bernoulli(p) draws."""
    return 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


def make_batch(n: int = N, present: torch.Tensor | None = None, seed: int = 0) -> mmrobust.Batch:
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "audio": torch.randn(n, 4, generator=g),
        "video": torch.randn(n, 2, 3, generator=g),
        "text": torch.randn(n, 5, generator=g),
    }
    if present is None:
        present = torch.ones(n, len(MODS), dtype=torch.bool)
    return mmrobust.Batch(inputs, present, torch.zeros(n, dtype=torch.long), MODS)


def partial_present(n: int = N, seed: int = 1) -> torch.Tensor:
    """A random mask where every row has at least one modality (and many rows lack some)."""
    g = torch.Generator().manual_seed(seed)
    present = torch.rand(n, len(MODS), generator=g) < 0.6
    present[torch.arange(n), torch.randint(len(MODS), (n,), generator=g)] = True
    assert (~present).any(dim=1).float().mean() > 0.3
    return present


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def apply(c: mmrobust.Corruption, x, seed: int):  # type: ignore[no-untyped-def]
    return c(x, gen(seed))


def assert_same(a: mmrobust.Batch, b: mmrobust.Batch) -> None:
    assert torch.equal(a.present, b.present)
    for m in MODS:
        assert torch.equal(a.inputs[m], b.inputs[m])


def differs(a: mmrobust.Batch, b: mmrobust.Batch) -> bool:
    return not torch.equal(a.present, b.present) or any(
        not torch.equal(a.inputs[m], b.inputs[m]) for m in MODS
    )


RANDOM_CORRUPTIONS = [
    Missing("video", 0.3),
    Missing("video", 0.3, if_all_missing="allow"),
    MissingRates({"audio": 0.2, "video": 0.5, "text": 0.7}),
    MissingRates({"audio": 0.9, "video": 0.9}, if_all_missing="allow"),
    RandomDrop(),
    RandomSubset(),
    GaussianNoise("text", sigma=0.5, proportion=0.4),
    GaussianNoise("text", proportion=0.4, mode="scalar"),
    Perturbation("audio", 0.15),
    Perturbation("video", 0.3, stage="input", mode="scalar"),
    Compose((Missing("audio", 0.3), GaussianNoise("video", 1.0, 0.5))),
]


# --- determinism ------------------------------------------------------------------------------
@pytest.mark.parametrize("c", RANDOM_CORRUPTIONS, ids=lambda c: c.name)
@pytest.mark.parametrize("mask", ["full", "partial"])
def test_same_seed_same_result_different_seed_different(c: mmrobust.Corruption, mask: str) -> None:
    batch = make_batch(2000, None if mask == "full" else partial_present(2000))
    a, b, other = apply(c, batch, 7), apply(c, batch, 7), apply(c, batch, 8)
    assert_same(a, b)
    assert differs(a, other)
    assert differs(a, batch)  # it did something at all


def test_subset_is_deterministic_and_ignores_the_generator() -> None:
    batch = make_batch(500, partial_present(500))
    a, b = apply(Subset(("audio", "text")), batch, 1), apply(Subset(("audio", "text")), batch, 2)
    assert_same(a, b)
    expected = batch.present.clone()
    expected[:, 1] = False
    assert torch.equal(a.present, expected)  # keeps only present & kept; never adds
    for m in MODS:
        assert a.inputs[m] is batch.inputs[m]  # masks only
    with pytest.raises(MMRobustError, match=r"modality subset audio\+audio names audio twice"):
        Subset(("audio", "audio"))  # before: accepted, a second name for subset[audio]


def test_corruption_does_not_mutate_its_input() -> None:
    batch = make_batch(500, partial_present(500))
    present, values = batch.present.clone(), {m: x.clone() for m, x in batch.inputs.items()}
    for c in RANDOM_CORRUPTIONS:
        apply(c, batch, 0)
    assert torch.equal(batch.present, present)
    for m in MODS:
        assert torch.equal(batch.inputs[m], values[m])


# --- Missing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_missing_proportion(p: float) -> None:
    batch = make_batch()
    out = apply(Missing("video", p), batch, 11)
    observed = float((~out.present[:, 1]).float().mean())
    assert abs(observed - p) < tol(p, N)
    assert out.present[:, [0, 2]].all()  # other modalities untouched
    for m in MODS:
        assert torch.equal(out.inputs[m], batch.inputs[m])  # values untouched


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_missing_extreme_proportions(p: float) -> None:
    out = apply(Missing("audio", p), make_batch(1000), 0)
    assert bool((~out.present[:, 0]).all()) == (p == 1.0)
    assert bool(out.present[:, 0].all()) == (p == 0.0)


def test_missing_never_touches_samples_where_the_modality_was_already_absent() -> None:
    before = partial_present()
    batch = make_batch(present=before)
    p = 0.4
    out = apply(Missing("video", p, if_all_missing="allow"), batch, 3)
    after = out.present
    assert not (after & ~before).any()  # nothing comes back
    assert torch.equal(after[:, [0, 2]], before[:, [0, 2]])
    had = before[:, 1]
    # the proportion refers to samples that had the modality
    observed = float((~after[had, 1]).float().mean())
    assert abs(observed - p) < tol(p, int(had.sum()))


def test_missing_keep_one_gives_back_a_sole_modality() -> None:
    present = torch.zeros(N, 3, dtype=torch.bool)
    present[:, 1] = True
    present[: N // 2, 0] = True  # half the rows also have audio
    batch = make_batch(present=present)
    kept = apply(Missing("video", 0.5), batch, 0).present
    assert kept[N // 2 :, 1].all()  # video was their only modality: it stays
    assert kept.any(dim=1).all()
    assert abs(float((~kept[: N // 2, 1]).float().mean()) - 0.5) < tol(0.5, N // 2)
    allowed = apply(Missing("video", 0.5, if_all_missing="allow"), batch, 0).present
    empty = ~allowed.any(dim=1)
    assert not empty[: N // 2].any()
    assert abs(float(empty[N // 2 :].float().mean()) - 0.5) < tol(0.5, N // 2)


# --- MissingRates -----------------------------------------------------------------------------
def test_missing_rates_per_modality_proportions() -> None:
    rates = {"audio": 0.2, "video": 0.5}
    out = apply(MissingRates(rates, if_all_missing="allow"), make_batch(), 5).present
    for j, m in enumerate(MODS):
        p = rates.get(m, 0.0)
        assert abs(float((~out[:, j]).float().mean()) - p) < tol(p, N), m
    # independent draws: P(audio and video both missing) ~ 0.2 * 0.5
    both = float((~out[:, 0] & ~out[:, 1]).float().mean())
    assert abs(both - 0.1) < tol(0.1, N)


def test_missing_rates_keep_one_vs_allow_at_high_rates() -> None:
    rates = {m: 0.9 for m in MODS}
    before = partial_present()
    batch = make_batch(present=before)
    keep = apply(MissingRates(rates), batch, 2).present
    assert keep.any(dim=1).all()
    assert not (keep & ~before).any()
    allow = apply(MissingRates(rates, if_all_missing="allow"), batch, 2).present
    empty = ~allow.any(dim=1)
    # a row with P present modalities is emptied with probability 0.9^P
    expected = float((0.9 ** before.sum(dim=1).double()).mean())
    assert abs(float(empty.float().mean()) - expected) < tol(expected, N)
    assert not (allow & ~before).any()


def test_missing_rates_keep_one_never_empties_a_row_that_had_something() -> None:
    before = partial_present()
    before[:50] = False  # rows that were already empty stay empty (nothing to keep)
    batch = make_batch(present=before)
    out = apply(MissingRates({m: 0.95 for m in MODS}), batch, 9).present
    assert out[50:].any(dim=1).all()
    assert not out[:50].any()


def test_keep_one_keeps_one_of_the_samples_own_modalities_uniformly() -> None:
    before = partial_present()
    batch = make_batch(present=before)
    out = apply(MissingRates({m: 1.0 for m in MODS}), batch, 4).present
    assert (out.sum(dim=1) == 1).all()  # everything was dropped, exactly one given back
    assert not (out & ~before).any()  # ...and it is one the sample had
    full = before.all(dim=1)
    kept = out[full].float().mean(dim=0)  # rows with all three: each kept ~1/3 of the time
    n_full = int(full.sum())
    for j in range(3):
        assert abs(float(kept[j]) - 1 / 3) < tol(1 / 3, n_full)


def test_missing_rates_zero_changes_nothing() -> None:
    batch = make_batch(1000, partial_present(1000))
    assert torch.equal(apply(MissingRates({"audio": 0.0}), batch, 0).present, batch.present)


# --- RandomDrop -------------------------------------------------------------------------------
def test_random_drop_all_present_k_uniform_and_never_all() -> None:
    out = apply(RandomDrop(), make_batch(), 6).present
    assert out.any(dim=1).all()
    k = 3 - out.sum(dim=1)
    for value in range(3):
        observed = float((k == value).float().mean())
        assert abs(observed - 1 / 3) < tol(1 / 3, N), (value, observed)
    # every modality equally likely to be dropped: E[K]/M = 1/3
    for j in range(3):
        assert abs(float((~out[:, j]).float().mean()) - 1 / 3) < tol(1 / 3, N)


def test_random_drop_respects_existing_absence() -> None:
    before = partial_present()
    out = apply(RandomDrop(), make_batch(present=before), 8).present
    assert not (out & ~before).any()
    assert out.any(dim=1).all()
    n_before = before.sum(dim=1)
    dropped = n_before - out.sum(dim=1)
    assert (dropped <= n_before - 1).all()
    single = n_before == 1
    assert torch.equal(out[single], before[single])  # one modality: nothing to drop
    two = n_before == 2
    p1 = float((dropped[two] == 1).float().mean())
    assert abs(p1 - 0.5) < tol(0.5, int(two.sum()))  # K ~ U{0, 1}


# --- RandomSubset -----------------------------------------------------------------------------
def test_random_subset_draws_every_nonempty_subset_equally_often() -> None:
    out = apply(RandomSubset(), make_batch(), 6).present
    codes = (out.long() * torch.tensor([1, 2, 4])).sum(dim=1)  # the subset as a number in 1..7
    assert (codes > 0).all()  # never all dropped
    for code in range(1, 8):
        observed = float((codes == code).float().mean())
        assert abs(observed - 1 / 7) < tol(1 / 7, N), (code, observed)


def test_random_subset_respects_existing_absence() -> None:
    before = partial_present()
    out = apply(RandomSubset(), make_batch(present=before), 8).present
    assert not (out & ~before).any() and out.any(dim=1).all()
    single = before.sum(dim=1) == 1
    assert torch.equal(out[single], before[single])  # one modality: nothing to choose
    two = before.sum(dim=1) == 2
    both = float((out[two].sum(dim=1) == 2).float().mean())
    assert abs(both - 1 / 3) < tol(1 / 3, int(two.sum()))  # of {a}, {b}, {a, b}: each 1/3


def test_random_subset_leaves_an_empty_row_empty() -> None:
    before = torch.ones(4, 3, dtype=torch.bool)
    before[1] = False
    out = apply(RandomSubset(), make_batch(4, present=before), 0).present
    assert not out[1].any() and out[[0, 2, 3]].any(dim=1).all()


# --- GaussianNoise ----------------------------------------------------------------------------
def test_noise_changes_only_chosen_modality_present_rows_with_proportion_and_sigma() -> None:
    before = partial_present()
    batch = make_batch(present=before)
    sigma, p = 0.5, 0.4
    out = apply(GaussianNoise("video", sigma=sigma, proportion=p), batch, 12)
    assert torch.equal(out.present, batch.present)
    for m in ("audio", "text"):
        assert torch.equal(out.inputs[m], batch.inputs[m])
    diff = (out.inputs["video"] - batch.inputs["video"]).reshape(N, -1)
    changed = (diff != 0).any(dim=1)
    assert not (changed & ~before[:, 1]).any()  # absent rows never noised
    had = before[:, 1]
    observed = float(changed[had].float().mean())
    assert abs(observed - p) < tol(p, int(had.sum()))
    noise = diff[changed].flatten()
    assert abs(float(noise.mean())) < 4 * sigma / math.sqrt(len(noise))
    assert float(noise.std()) == pytest.approx(sigma, rel=0.03)
    # whole rows are noised, not single features
    assert ((diff[changed] != 0).all(dim=1)).all()


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_noise_extreme_proportions(p: float) -> None:
    before = partial_present(2000)
    batch = make_batch(2000, before)
    out = apply(GaussianNoise("audio", 1.0, p), batch, 0)
    changed = (out.inputs["audio"] != batch.inputs["audio"]).any(dim=1)
    assert torch.equal(changed, before[:, 0] if p == 1.0 else torch.zeros_like(changed))


# --- token stage ------------------------------------------------------------------------------
def make_tokens(n: int = 4000, d: int = 8) -> Tokens:
    g = gen(21)
    present = partial_present(n, seed=22)
    return Tokens(torch.randn(n, 3, d, generator=g), present, MODS)


def test_token_stage_noise_on_tokens() -> None:
    tokens = make_tokens()
    c = GaussianNoise("text", sigma=2.0, proportion=0.5, stage="token")
    out = c(tokens, gen(0))
    assert isinstance(out, Tokens)
    assert torch.equal(out.present, tokens.present)
    assert torch.equal(out.z[:, :2], tokens.z[:, :2])
    changed = (out.z[:, 2] != tokens.z[:, 2]).any(dim=1)
    assert not (changed & ~tokens.present[:, 2]).any()
    had = tokens.present[:, 2]
    assert abs(float(changed[had].float().mean()) - 0.5) < tol(0.5, int(had.sum()))
    assert float((out.z[:, 2] - tokens.z[:, 2])[changed].std()) == pytest.approx(2.0, rel=0.05)
    again = c(tokens, gen(0))
    assert torch.equal(again.z, out.z)
    assert not torch.equal(c(tokens, gen(1)).z, out.z)
    assert c.touched(MODS) == ("text",)


def test_mask_corruptions_act_identically_on_tokens_and_batches() -> None:
    tokens = make_tokens()
    batch = make_batch(len(tokens), tokens.present)
    for c in (
        Missing("audio", 0.3),
        MissingRates({"video": 0.6, "text": 0.2}),
        RandomDrop(),
        RandomSubset(),
        Subset(("audio",)),
    ):
        out_t, out_b = c(tokens, gen(5)), c(batch, gen(5))
        assert isinstance(out_t, Tokens)
        assert torch.equal(out_t.present, out_b.present)
        assert torch.equal(out_t.z, tokens.z)
        assert c.touched(MODS) == ()


def test_compose_on_tokens_applies_parts_in_order() -> None:
    tokens = make_tokens()
    c = Compose((Missing("audio", 0.5, stage="token"), GaussianNoise("audio", 1.0, 1.0, stage="token")))
    assert c.stage == "token"
    out = c(tokens, gen(3))
    # noise is applied after the mask: exactly the rows still holding audio are noised
    changed = (out.z[:, 0] != tokens.z[:, 0]).any(dim=1)
    assert torch.equal(changed, out.present[:, 0])
    assert c.touched(MODS) == ("audio",)
    # same as applying the parts by hand with one shared generator
    g = gen(3)
    manual = c.parts[1](c.parts[0](tokens, g), g)
    assert torch.equal(manual.z, out.z) and torch.equal(manual.present, out.present)


def test_compose_stage_is_derived_and_mixed_stages_rejected() -> None:
    assert Compose((Missing("audio", 0.3), GaussianNoise("video"))).stage == "input"
    assert Compose((Missing("audio", 0.3),)).stage == "input"
    with pytest.raises(MMRobustError):
        Compose((GaussianNoise("audio"), GaussianNoise("video", stage="token")))


# --- serialisation ----------------------------------------------------------------------------
SERIALISED = [
    (Subset(("audio", "video")), "subset[audio+video]"),
    (Missing("audio", 0.3), "missing[audio@0.3]"),
    (MissingRates({"audio": 0.2, "video": 0.5}), "rates[audio=0.2,video=0.5]"),
    (RandomDrop(), "randomdrop"),
    (RandomSubset(), "randomsubset"),
    (GaussianNoise("text", 1.0, 0.3), "noise[text,sigma=1,p=0.3]"),
    (GaussianNoise("text", 0.5, 1.0, stage="token"), "noise[text,sigma=0.5,p=1]@token"),
    (GaussianNoise("text", 1.0, 0.3, mode="scalar"), "noise[text,scalar,sigma=1,p=0.3]"),
    (Perturbation("text", 0.15, stage="input"), "perturb[text,sigma=1,p=0.15]"),
    (Perturbation("text", 0.1, 2.0, mode="scalar"), "perturb[text,scalar,sigma=2,p=0.1]@token"),
    (
        Compose((Missing("audio", 0.3), GaussianNoise("video", 2.0, 0.5))),
        "missing[audio@0.3]+noise[video,sigma=2,p=0.5]",
    ),
    (
        Compose((Compose((RandomDrop(),)), MissingRates({"text": 0.1}, if_all_missing="allow"))),
        "randomdrop+rates[text=0.1,allow]",
    ),
]


@pytest.mark.parametrize(("c", "name"), SERIALISED, ids=[n for _, n in SERIALISED])
def test_round_trip_and_stable_names(c: mmrobust.Corruption, name: str) -> None:
    assert c.name == name
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON
    back = corruption_from_dict(json.loads(json.dumps(d)))
    assert type(back) is type(c)
    assert back == c
    assert back.name == name
    assert back.to_dict() == d
    batch = make_batch(500, partial_present(500))
    assert_same(back(batch, gen(1)), c(batch, gen(1)))


def test_to_dict_records_every_parameter() -> None:
    d = Missing("audio", 0.25, if_all_missing="allow").to_dict()
    assert d == {
        "type": "Missing",
        "modality": "audio",
        "proportion": 0.25,
        "if_all_missing": "allow",
        "stage": "input",
    }
    assert corruption_from_dict(d).if_all_missing == "allow"


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build",
    [
        lambda: Subset(()),
        lambda: Missing("audio", 1.5),
        lambda: Missing("audio", -0.1),
        lambda: MissingRates({"audio": 1.5}),
        lambda: GaussianNoise("audio", proportion=1.5),
        lambda: GaussianNoise("audio", sigma=-1.0),
        lambda: Missing("audio", 0.3, stage="middle"),
        lambda: Subset(("audio",), stage="middle"),
        lambda: GaussianNoise("audio", stage="middle"),
        lambda: GaussianNoise("audio", mode="multiplicative"),
        lambda: Perturbation("audio", 0.6),
        lambda: Perturbation("audio", sigma=-1.0),
        lambda: corruption_from_dict({"type": "Dropp"}),
        lambda: corruption_from_dict({"modality": "audio"}),
        lambda: corruption_from_dict({"type": "Missing", "modality": "audio"}),
        lambda: corruption_from_dict({"type": "Missing", "modality": "audio", "proportion": 0.1, "bogus": 1}),
    ],
    ids=[
        "empty-subset",
        "proportion-1.5",
        "proportion-negative",
        "rate-1.5",
        "noise-proportion-1.5",
        "negative-sigma",
        "missing-bad-stage",
        "subset-bad-stage",
        "noise-bad-stage",
        "noise-bad-mode",
        "perturb-over-half",
        "perturb-negative-sigma",
        "unknown-type",
        "no-type",
        "missing-parameter",
        "extra-parameter",
    ],
)
def test_bad_parameters_raise_mmrobust_error(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MMRobustError):
        build()


def test_unknown_corruption_type_lists_valid_types() -> None:
    with pytest.raises(MMRobustError, match="unknown corruption 'Dropp'") as e:
        corruption_from_dict({"type": "Dropp"})
    assert "RandomDrop" in str(e.value)


@pytest.mark.parametrize(
    "c",
    [
        Subset(("audio", "vidoe")),
        Missing("vidoe", 0.3),
        MissingRates({"vidoe": 0.3}),
        GaussianNoise("vidoe"),
        GaussianNoise("vidoe", stage="token"),
    ],
    ids=["Subset", "Missing", "MissingRates", "GaussianNoise-input", "GaussianNoise-token"],
)
def test_unknown_modality_suggests_the_closest(c: mmrobust.Corruption) -> None:
    x = make_tokens(10) if c.stage == "token" else make_batch(10)
    with pytest.raises(MMRobustError, match=r"unknown modality 'vidoe'\. Did you mean 'video'\?"):
        c(x, gen(0))


def test_bad_all_missing_policy_raises() -> None:
    with pytest.raises(MMRobustError, match="if_all_missing"):
        MissingRates({"audio": 0.5}, if_all_missing="never")(make_batch(10), gen(0))


def test_errors_are_value_errors() -> None:
    assert issubclass(MMRobustError, ValueError)


# --- names parse back (the CLI's --scenario) --------------------------------------------------
PARSEABLE = [
    Subset(("audio", "video")),
    Subset(("text",)),
    Missing("audio", 0.3),
    Missing("video", 1e-05),
    MissingRates({"audio": 0.2, "video": 0.5}),
    RandomDrop(),
    GaussianNoise("text", 1.0, 0.3),
    GaussianNoise("text", 0.25, 1.0, stage="token"),
    GaussianNoise("text", 1.0, 0.05, stage="token", mode="scalar"),
    Perturbation("audio", 0.15),
    Perturbation("audio", 0.05, 0.5, stage="input", mode="scalar"),
]


@pytest.mark.parametrize("c", PARSEABLE, ids=lambda c: c.name)
def test_name_parses_back_to_the_same_corruption(c: mmrobust.Corruption) -> None:
    parsed = corruption_from_name(c.name)
    assert parsed == c
    assert parsed.name == c.name
    assert corruption_from_name(f"  {c.name} ") == c


@pytest.mark.parametrize(
    "name",
    [
        "bogus",
        "subset[]",
        "missing[audio@1.5]",
        "missing[audio@.]",
        "rates[audio=0.2,video]",
        "rates[audio=x]",
        "noise[audio,sigma=-1,p=0.3]",
        "noise[audio,p=0.3]",
        "missing[audio@0.3]+noise[audio,sigma=1,p=0.3]",
    ],
)
def test_unparseable_names_raise(name: str) -> None:
    with pytest.raises(MMRobustError, match="scenario"):
        corruption_from_name(name)


# --- modality perturbation (robust training) and scalar noise -----------------------------------
@pytest.mark.parametrize("batch_size", [64, 100, 7])
@pytest.mark.parametrize("p", [0.05, 0.15, 0.3])
def test_perturbation_exact_disjoint_counts_among_present_rows(batch_size: int, p: float) -> None:
    present = partial_present(batch_size, seed=batch_size)
    batch = make_batch(batch_size, present)
    j = MODS.index("video")
    dropped, noised = Perturbation("video", p, stage="input").chosen_rows(present, MODS, gen(0))
    count = min(int(batch_size * p), int(present[:, j].sum()))
    assert len(dropped) == count and len(noised) == min(count, int(present[:, j].sum()) - count)
    assert not set(dropped.tolist()) & set(noised.tolist())
    assert present[dropped, j].all() and present[noised, j].all()
    out = Perturbation("video", p, stage="input")(batch, gen(0))
    assert torch.equal(out.present[:, j], present[:, j] & ~torch.isin(torch.arange(batch_size), dropped))
    changed = (out.inputs["video"] != batch.inputs["video"]).flatten(1).any(dim=1)
    assert torch.equal(changed.nonzero().flatten().sort().values, noised.sort().values)
    for m in ("audio", "text"):  # other modalities untouched
        assert torch.equal(out.inputs[m], batch.inputs[m])
        assert torch.equal(out.present[:, MODS.index(m)], present[:, MODS.index(m)])


def test_perturbation_is_redrawn_every_call_and_spreads_over_samples() -> None:
    g = gen(0)
    c = Perturbation("audio", 0.25, stage="input")
    hits = torch.zeros(40)
    for _ in range(400):
        dropped, noised = c.chosen_rows(torch.ones(40, 3, dtype=torch.bool), MODS, g)
        hits[dropped] += 1
        hits[noised] += 1
    share = hits / 400
    assert torch.allclose(share, torch.full((40,), 0.5), atol=0.12)  # each sample hit ~2p of the time


def test_scalar_noise_multiplies_each_hit_sample_by_one_gaussian_draw() -> None:
    batch = make_batch(4000)
    out = GaussianNoise("text", sigma=2.0, proportion=1.0, mode="scalar")(batch, gen(3))
    ratio = out.inputs["text"] / batch.inputs["text"]  # (N, F): one scale per row
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert abs(float(ratio[:, 0].std()) - 2.0) < 0.1 and abs(float(ratio[:, 0].mean())) < 0.1


def test_perturbation_on_tokens() -> None:
    tokens = make_tokens(64)
    out = Perturbation("video", 0.25)(tokens, gen(0))
    j = MODS.index("video")
    assert int((tokens.present[:, j] & ~out.present[:, j]).sum()) == 16  # newly absent
    assert int((out.z[:, j] != tokens.z[:, j]).any(dim=1).sum()) == 16  # noised
