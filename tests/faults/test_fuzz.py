"""Property-based fuzzing of the core (issue 9): Batch/collate, every corruption, every fusion and
encoder kind, the audit engine, the metrics and every registered method, on random modality counts
(1-5), shapes, batch sizes (1 included), presence masks (all-absent rows where the policy allows
them), NaN placeholders in absent slots, constant inputs and single-class targets.

Every registry is enumerated (corruption types, fusions, encoder kinds, methods), so a new entry is
fuzzed without touching this file; a new corruption parameter name fails
`test_every_corruption_parameter_has_a_strategy` until it gets a strategy here.

Budget: the hypothesis profile `ci` (the default) runs few, derandomised examples, so CI is
reproducible; `MMROBUST_FUZZ=long` (`make fuzz`) runs many, freshly random, and keeps failures in
`.hypothesis/`. A failing example prints a `@reproduce_failure` blob.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/faults/test_fuzz.py -p no:xdist
    make fuzz
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import mmrobust
from mmrobust import Batch, DataSpec, MMRobustError, MultimodalData, collate, corruption_from_dict
from mmrobust.audit.engine import naive_outputs, scenario_outputs
from mmrobust.audit.scenarios import custom_scenarios, default_scenarios
from mmrobust.corruption import (
    CORRUPTIONS,
    Compose,
    Corruption,
    GaussianNoise,
    MaskCorruption,
    Missing,
    MissingRates,
    Perturbation,
    RandomDrop,
    RandomSubset,
    Subset,
    corruption_from_name,
)
from mmrobust.data import Tokens
from mmrobust.data.dataset import ModalitySpec
from mmrobust.metrics import classification_metrics, regression_metrics
from mmrobust.models import ENCODERS, FUSIONS, MultimodalModel, create_encoder, create_fusion

# --- budget -----------------------------------------------------------------------------------
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_HEALTH,
)
settings.register_profile("long", max_examples=1500, deadline=None, print_blob=True, suppress_health_check=_HEALTH)
PROFILE = settings.get_profile(os.environ.get("MMROBUST_FUZZ", "ci"))


def budget(share: float = 1.0) -> settings:
    """The active profile with `share` of its examples (the expensive properties get fewer)."""
    return settings(PROFILE, max_examples=max(1, round(PROFILE.max_examples * share)))


# --- tensors ----------------------------------------------------------------------------------
TASKS = ("classification", "regression")
STYLES = ("normal", "constant", "zeros", "large", "tiny")  # how a modality's present values look
FILLS = ("nan", "inf", "huge", "garbage")  # what absent placeholders hold


def values(shape: tuple[int, ...], style: str, seed: int) -> Tensor:
    """Finite float32 values of one style; `constant` is one value for every entry of every sample."""
    g = torch.Generator().manual_seed(seed)
    if style == "constant":
        return torch.full(shape, float(torch.randn(1, generator=g)) * 3)
    if style == "zeros":
        return torch.zeros(shape)
    scale = {"normal": 1.0, "large": 1e3, "tiny": 1e-6}[style]
    return torch.randn(shape, generator=g) * scale


def fill_absent(x: Tensor, present: Tensor, fill: str, seed: int = 0) -> Tensor:
    """`x` with the rows where `present` (B,) is False overwritten by `fill`."""
    x = x.clone()
    absent = ~present
    if fill == "garbage":
        g = torch.Generator().manual_seed(seed)
        x[absent] = torch.randn(x[absent].shape, generator=g) * 1e4
    else:
        x[absent] = {"nan": math.nan, "inf": math.inf, "huge": 1e30, "zero": 0.0}[fill]
    return x


def with_placeholders(batch: Batch, fill: str, seed: int = 0) -> Batch:
    inputs = {
        m: fill_absent(batch.inputs[m], batch.present[:, j], fill, seed + j) for j, m in enumerate(batch.modalities)
    }
    return Batch(inputs, batch.present, batch.target, batch.modalities)


def assert_identical(a: Tensor, b: Tensor, msg: str = "") -> None:
    """Same shape, dtype and bits, NaN included."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=msg or None)


def present_values_finite(x: Batch | Tokens) -> bool:
    for j, m in enumerate(x.modalities):
        v = x.value(m)
        if not torch.isfinite(v[x.present[:, j]]).all():
            return False
    return True


# --- strategies -------------------------------------------------------------------------------
# modality names torch cannot use as module keys ('to', 'train', ...) are a user error (tested below)
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,4}", fullmatch=True).filter(lambda n: not hasattr(nn.ModuleDict(), n))
SHAPES: dict[str, st.SearchStrategy[tuple[int, ...]]] = {
    "mlp": st.tuples(st.integers(1, 6)),
    "conv1d": st.tuples(st.integers(1, 3), st.integers(1, 10)),
    "conv2d": st.tuples(st.integers(1, 2), st.integers(1, 6), st.integers(1, 6)),
    "seq": st.tuples(st.integers(1, 4), st.integers(1, 4)),
    "frames": st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 5), st.integers(1, 5)),
}
RAW_KINDS = ("mlp", "conv1d", "conv2d")  # vector, (C, T), (C, H, W): enough when no encoder runs
# the layout (kind) each registered encoder reads; an encoder named like a kind reads that kind
ENCODER_LAYOUT = {"resconv1d": "conv1d", "resconv2d": "conv2d"}


@st.composite
def data_specs(
    draw: st.DrawFn,
    kinds: tuple[str, ...] | None = None,
    min_modalities: int = 1,
    max_modalities: int = 5,
    task: str | None = None,
    include: str | None = None,
) -> DataSpec:
    """A random dataset description; `include` forces one modality read by that registered encoder."""
    n = draw(st.integers(min_modalities, max_modalities))
    names = draw(st.lists(NAMES, min_size=n, max_size=n, unique=True))
    forced = draw(st.integers(0, n - 1)) if include else -1
    mods = []
    for j, name in enumerate(names):
        encoder: str = include if include and j == forced else draw(st.sampled_from(kinds or tuple(ENCODERS.names())))
        kind = ENCODER_LAYOUT.get(encoder, encoder)
        mods.append(ModalitySpec(name, kind, draw(SHAPES[kind]), "" if encoder == kind else encoder))
    task = task or draw(st.sampled_from(TASKS))
    classes = 1 if task == "regression" else draw(st.integers(1, 4))
    return DataSpec("fuzz", tuple(mods), task, classes)


@st.composite
def masks(draw: st.DrawFn, b: int, m: int, empty_rows: bool = True) -> Tensor:
    """(b, m) bool; with `empty_rows=False` every row keeps at least one modality."""
    pattern = draw(st.sampled_from(("random", "random", "all", "none", "one")))
    if pattern == "all":
        present = torch.ones(b, m, dtype=torch.bool)
    elif pattern == "none" and empty_rows:
        present = torch.zeros(b, m, dtype=torch.bool)
    else:
        rows = draw(st.lists(st.lists(st.booleans(), min_size=m, max_size=m), min_size=b, max_size=b))
        present = torch.tensor(rows, dtype=torch.bool).reshape(b, m)
        if pattern == "one":  # exactly one modality per row
            present = torch.zeros(b, m, dtype=torch.bool)
            present[torch.arange(b), torch.tensor(draw(st.lists(st.integers(0, m - 1), min_size=b, max_size=b)))] = True
    if not empty_rows:
        pick = torch.tensor(draw(st.lists(st.integers(0, m - 1), min_size=b, max_size=b)))
        empty = ~present.any(dim=1)
        present[empty.nonzero().flatten(), pick[empty]] = True
    return present


@st.composite
def targets(draw: st.DrawFn, spec: DataSpec, b: int) -> Tensor:
    single = draw(st.booleans())  # one class (or one constant score) for the whole batch
    if spec.task == "classification":
        labels = [draw(st.integers(0, spec.num_classes - 1))] * b if single else None
        labels = labels or draw(st.lists(st.integers(0, spec.num_classes - 1), min_size=b, max_size=b))
        return torch.tensor(labels, dtype=torch.long)
    scores = st.sampled_from([-3.0, -1.0, 0.0, 0.5, 3.0]) | st.floats(-3, 3, width=32)
    if single:
        return torch.full((b,), draw(scores))
    return torch.tensor(draw(st.lists(scores, min_size=b, max_size=b)), dtype=torch.float32)


@st.composite
def batches(
    draw: st.DrawFn, spec: DataSpec, b: int | None = None, empty_rows: bool = True, fill: str | None = "nan"
) -> Batch:
    """A batch of `spec`; absent placeholders hold `fill` (drawn from FILLS when None)."""
    b = b or draw(st.integers(1, 6))
    present = draw(masks(b, len(spec.modalities), empty_rows))
    inputs = {}
    for j, mod in enumerate(spec.modalities):
        x = values((b, *mod.shape), draw(st.sampled_from(STYLES)), draw(st.integers(0, 2**16)))
        inputs[mod.name] = fill_absent(x, present[:, j], fill or draw(st.sampled_from(FILLS)), j)
    return Batch(inputs, present, draw(targets(spec, b)), spec.modality_names)


@st.composite
def token_sets(draw: st.DrawFn, modalities: tuple[str, ...], b: int, dim: int) -> Tokens:
    present = draw(masks(b, len(modalities)))
    z = values((b, len(modalities), dim), draw(st.sampled_from(STYLES)), draw(st.integers(0, 2**16)))
    return Tokens(z.masked_fill(~present[..., None], math.nan), present, modalities)


# Corruptions are built from the registry: every dataclass field gets a strategy by its name (FIELDS).
def _init_fields(cls: type[Corruption]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


@st.composite
def corruptions(draw: st.DrawFn, mods: tuple[str, ...], compose: bool = True, kind: str | None = None) -> Corruption:
    names = [n for n in CORRUPTIONS.names() if compose or n != "Compose"]
    cls = CORRUPTIONS.get(kind or draw(st.sampled_from(names)))
    params = {}
    for f in _init_fields(cls):
        has_default = f.default is not dataclasses.MISSING
        if has_default and draw(st.booleans()):
            continue  # the default
        key = (cls.type_name, f.name)
        params[f.name] = draw(OVERRIDES[key] if key in OVERRIDES else FIELDS[f.name](mods))
    try:
        return cls(**params)
    except MMRobustError:  # e.g. Compose mixing input- and token-stage noise
        reject()


PROPORTIONS = st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0, 1)
FIELDS: dict[str, Callable[[tuple[str, ...]], st.SearchStrategy[Any]]] = {
    "modality": lambda mods: st.sampled_from(mods),
    "keep": lambda mods: st.lists(st.sampled_from(mods), min_size=1, max_size=len(mods), unique=True).map(tuple),
    "rates": lambda mods: st.dictionaries(st.sampled_from(mods), PROPORTIONS, min_size=1),
    "proportion": lambda mods: PROPORTIONS,
    "sigma": lambda mods: st.sampled_from([0.0, 1.0]) | st.floats(0, 10),
    "stage": lambda mods: st.sampled_from(("input", "token")),
    "mode": lambda mods: st.sampled_from(("additive", "scalar")),
    "if_all_missing": lambda mods: st.sampled_from(("keep_one", "allow")),
    "parts": lambda mods: st.lists(corruptions(mods, compose=False), min_size=1, max_size=3).map(tuple),
}
OVERRIDES: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("Perturbation", "proportion"): st.sampled_from([0.0, 0.5]) | st.floats(0, 0.5),
}


def never_empties_a_row(c: Corruption) -> bool:
    """The corruptions whose policy keeps >= 1 modality in every row that had one."""
    if isinstance(c, Missing | MissingRates):
        return c.if_all_missing == "keep_one"
    if isinstance(c, Compose):
        return all(never_empties_a_row(p) for p in c.parts)
    return isinstance(c, RandomDrop | RandomSubset | GaussianNoise)  # Subset and Perturbation may empty a row


def apply_to(c: Corruption, x: Batch | Tokens, seed: int) -> Batch | Tokens:
    return c(x, torch.Generator().manual_seed(seed))


# ==============================================================================================
# Batch and collate
# ==============================================================================================
@st.composite
def sample_lists(draw: st.DrawFn) -> tuple[DataSpec, list[dict[str, Any]], Tensor]:
    """Per-sample dicts as a user's dataset yields them: absent as None or left out; tensors or numpy."""
    spec = draw(data_specs(kinds=RAW_KINDS))
    batch = draw(batches(spec, empty_rows=True, fill="nan"))
    samples = []
    for i in range(len(batch)):
        inputs: dict[str, Any] = {}
        for j, m in enumerate(batch.modalities):
            if batch.present[i, j]:
                x = batch.inputs[m][i]
                inputs[m] = x.numpy() if draw(st.booleans()) else x
            elif draw(st.booleans()):
                inputs[m] = None
        target = batch.target[i].item()
        samples.append({"inputs": inputs, "target": target})
    return spec, samples, batch.present


@budget()
@given(sample_lists())
def test_collate_keeps_shapes_presence_and_values(case: tuple[DataSpec, list[dict[str, Any]], Tensor]) -> None:
    spec, samples, present = case
    everywhere_absent = ~present.any(dim=0)
    if everywhere_absent.any():  # a modality no sample has: its shape is unknown
        with pytest.raises(MMRobustError, match="absent from every sample"):
            collate(samples, spec.modality_names)
        return
    batch = collate(samples, spec.modality_names)
    assert batch.modalities == spec.modality_names and len(batch) == len(samples)
    assert torch.equal(batch.present, present)
    for j, mod in enumerate(spec.modalities):
        x = batch.inputs[mod.name]
        assert x.shape == (len(samples), *mod.shape)
        for i, s in enumerate(samples):
            want = s["inputs"].get(mod.name)
            assert_identical(x[i], torch.as_tensor(want) if present[i, j] else torch.zeros(mod.shape))
    assert batch.target.tolist() == [s["target"] for s in samples]
    # round trip: the batch back to samples and collated again is the same batch
    again = collate(
        [
            {
                "inputs": {m: batch.inputs[m][i] for j, m in enumerate(batch.modalities) if batch.present[i, j]},
                "target": batch.target[i].item(),
            }
            for i in range(len(batch))
        ],
        batch.modalities,
    )
    for m in batch.modalities:
        assert_identical(again.inputs[m], batch.inputs[m])
    assert torch.equal(again.present, batch.present) and torch.equal(again.target, batch.target)


@budget()
@given(st.data())
def test_batch_helpers_never_mutate_and_keep_shapes(data: st.DataObject) -> None:
    spec = data.draw(data_specs(kinds=RAW_KINDS))
    batch = data.draw(batches(spec))
    before = {m: x.clone() for m, x in batch.inputs.items()}
    present = data.draw(masks(len(batch), len(spec.modalities)))
    m = data.draw(st.sampled_from(spec.modality_names))
    other = batch.with_present(present).with_value(m, torch.zeros_like(batch.inputs[m]))
    assert torch.equal(other.present, present) and torch.equal(other.value(m), torch.zeros_like(before[m]))
    for name, x in before.items():
        assert_identical(batch.inputs[name], x)
    moved = batch.to("cpu")
    assert len(moved) == len(batch) and moved.modalities == batch.modalities


BAD_SAMPLES: dict[str, tuple[Callable[[], Any], str]] = {
    # name: (collate arguments, message the user sees)
    "no samples": (lambda: ([], ["a"]), "empty list of samples"),
    "no modalities": (lambda: ([{"inputs": {"a": torch.ones(2)}, "target": 0}], []), "no modalities"),
    "duplicate modality": (lambda: ([{"inputs": {"a": torch.ones(2)}, "target": 0}], ["a", "a"]), "twice"),
    "modality absent everywhere": (
        lambda: ([{"inputs": {"a": torch.ones(2)}, "target": 0}], ["a", "b"]),
        "absent from every sample",
    ),
    "shapes differ between samples": (
        lambda: ([{"inputs": {"a": torch.ones(2)}, "target": 0}, {"inputs": {"a": torch.ones(3)}, "target": 1}], ["a"]),
        r"modality 'a' has shape \(3,\) in sample 1 but \(2,\) in sample 0",
    ),
    "sample is not a dict": (lambda: ([torch.ones(2)], ["a"]), "sample 0 is not a mapping"),
    "sample without inputs": (lambda: ([{"target": 0}], ["a"]), "sample 0 has no 'inputs'"),
    "inputs not a dict": (lambda: ([{"inputs": [torch.ones(2)], "target": 0}], ["a"]), "sample 0 has no 'inputs'"),
    "sample without target": (lambda: ([{"inputs": {"a": torch.ones(2)}}], ["a"]), "sample 0 has no 'target'"),
    "non-numeric target": (lambda: ([{"inputs": {"a": torch.ones(2)}, "target": "cat"}], ["a"]), "targets"),
    "targets of different shapes": (
        lambda: (
            [{"inputs": {"a": torch.ones(2)}, "target": [0, 1]}, {"inputs": {"a": torch.ones(2)}, "target": 0}],
            ["a"],
        ),
        "targets",
    ),
    "non-numeric input": (lambda: ([{"inputs": {"a": "loud"}, "target": 0}], ["a"]), "modality 'a' of sample 0"),
    "NaN in a present input": (
        lambda: ([{"inputs": {"a": torch.tensor([1.0, math.nan])}, "target": 0}], ["a"]),
        "NaN/inf in present sample 0",
    ),
}


@pytest.mark.parametrize("case", BAD_SAMPLES, ids=list(BAD_SAMPLES))
def test_collate_rejects_bad_samples_with_a_user_error(case: str) -> None:
    make, message = BAD_SAMPLES[case]
    samples, modalities = make()
    with pytest.raises(MMRobustError, match=message):
        collate(samples, modalities)


BAD_BATCHES: dict[str, tuple[Callable[[], Batch], str]] = {
    "present not bool": (
        lambda: Batch({"a": torch.ones(2, 3)}, torch.ones(2, 1), torch.zeros(2), ("a",)),
        "present must be a bool tensor",
    ),
    "present of the wrong shape": (
        lambda: Batch({"a": torch.ones(2, 3)}, torch.ones(2, 2, dtype=torch.bool), torch.zeros(2), ("a",)),
        r"present must have shape \(2, 1\)",
    ),
    "a modality without input": (
        lambda: Batch({"a": torch.ones(2, 3)}, torch.ones(2, 2, dtype=torch.bool), torch.zeros(2), ("a", "b")),
        "no input for modality 'b'",
    ),
    "an input with the wrong number of rows": (
        lambda: Batch({"a": torch.ones(3, 3)}, torch.ones(2, 1, dtype=torch.bool), torch.zeros(2), ("a",)),
        "modality 'a' has 3 rows but the batch has 2",
    ),
    "targets for another batch size": (
        lambda: Batch({"a": torch.ones(2, 3)}, torch.ones(2, 1, dtype=torch.bool), torch.zeros(5), ("a",)),
        "5 targets for 2 samples",
    ),
    "duplicate modality names": (
        lambda: Batch({"a": torch.ones(2, 3)}, torch.ones(2, 2, dtype=torch.bool), torch.zeros(2), ("a", "a")),
        "twice",
    ),
}


@pytest.mark.parametrize("case", BAD_BATCHES, ids=list(BAD_BATCHES))
def test_invalid_batches_are_user_errors(case: str) -> None:
    make, message = BAD_BATCHES[case]
    with pytest.raises(MMRobustError, match=message):
        make()


# ==============================================================================================
# Corruptions
# ==============================================================================================
def test_every_corruption_parameter_has_a_strategy() -> None:
    """A new corruption is fuzzed for free as long as its parameters have strategies above."""
    assert {"Subset", "Missing", "MissingRates", "RandomDrop", "GaussianNoise", "Perturbation", "Compose"} <= set(
        CORRUPTIONS
    )
    for name in CORRUPTIONS:
        cls = CORRUPTIONS.get(name)
        for f in _init_fields(cls):
            assert f.name in FIELDS or (name, f.name) in OVERRIDES, f"add a strategy for {name}.{f.name}"


@st.composite
def corrupted_cases(draw: st.DrawFn, kind: str) -> tuple[Corruption, Batch | Tokens]:
    """A corruption of type `kind` and an input of its stage (masks: a batch or tokens, either)."""
    spec = draw(data_specs(kinds=RAW_KINDS))
    c = draw(corruptions(spec.modality_names, kind=kind))
    batch = draw(batches(spec))
    as_tokens = c.stage == "token" if not isinstance(c, MaskCorruption) else draw(st.booleans())
    if as_tokens:
        return c, draw(token_sets(spec.modality_names, len(batch), draw(st.integers(1, 6))))
    return c, batch


@pytest.mark.parametrize("kind", CORRUPTIONS.names())
@budget(0.5)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_corruption_contract(kind: str, data: st.DataObject, seed: int) -> None:
    """Seeded, pure, never adds presence, finite where present, only touches what it says, and
    keeps a modality in every row that had one when its policy says so."""
    c, x = data.draw(corrupted_cases(kind))
    before_present = x.present.clone()
    before_values = {m: x.value(m).clone() for m in x.modalities}
    out = apply_to(c, x, seed)
    again = apply_to(c, x, seed)
    assert type(out) is type(x) and out.modalities == x.modalities
    assert torch.equal(out.present, again.present), "same seed, different mask"
    for m in x.modalities:
        assert_identical(out.value(m), again.value(m), f"same seed, different values of {m}")
    # pure: the input is untouched
    assert torch.equal(x.present, before_present)
    for m in x.modalities:
        assert_identical(x.value(m), before_values[m], f"{c.name} mutated its input {m}")
    # masks only ever lose modalities, and rows that had one keep one when the policy says so
    assert out.present.dtype == torch.bool and out.present.shape == x.present.shape
    assert not (out.present & ~x.present).any(), f"{c.name} marked an absent modality present"
    if never_empties_a_row(c):
        assert out.present.any(dim=1)[x.present.any(dim=1)].all(), f"{c.name} emptied a row"
    assert present_values_finite(out), f"{c.name} produced NaN/inf in a present entry"
    touched = set(c.touched(x.modalities))
    for j, m in enumerate(x.modalities):
        assert out.value(m).shape == x.value(m).shape and out.value(m).dtype == x.value(m).dtype
        absent = ~x.present[:, j]
        assert_identical(out.value(m)[absent], x.value(m)[absent], f"{c.name} wrote into absent slots of {m}")
        if m not in touched:
            assert_identical(out.value(m), x.value(m), f"{c.name} changed {m}, which it does not touch")
    if isinstance(c, MaskCorruption):  # the audit's path: the mask alone, same draws
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(c.new_present(x.present, x.modalities, g), out.present)


@budget()
@given(st.data())
def test_corruption_names_parse_back(data: st.DataObject) -> None:
    mods = data.draw(st.lists(NAMES, min_size=1, max_size=5, unique=True).map(tuple))
    c = data.draw(corruptions(mods, compose=False))
    parsed = corruption_from_name(c.name)
    assert type(parsed) is type(c) and parsed.name == c.name
    # the name leaves out only what cannot change the result: the stage of a mask corruption
    expected = dataclasses.replace(c, stage=parsed.stage) if isinstance(c, MaskCorruption) else c
    assert parsed == expected, f"{c.name} parses to {parsed}"


@budget()
@given(st.data())
def test_corruption_dicts_round_trip_through_json(data: st.DataObject) -> None:
    mods = data.draw(st.lists(NAMES, min_size=1, max_size=5, unique=True).map(tuple))
    c = data.draw(corruptions(mods))
    d = json.loads(json.dumps(c.to_dict()))
    back = corruption_from_dict(d)
    assert back == c and back.name == c.name and back.to_dict() == c.to_dict()


NAME_ALPHABET = "subsetmisngratodpuhb[]+@=,.0123456789eE-_ skalrwyc"


@st.composite
def mangled_names(draw: st.DrawFn) -> str:
    """Valid names with a few characters inserted, deleted or replaced, or plain junk."""
    if draw(st.booleans()):
        return draw(st.text(NAME_ALPHABET, max_size=40))
    name = draw(corruptions(("a", "b", "c"))).name
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(name)))
        op = draw(st.sampled_from(("insert", "delete", "replace")))
        ch = draw(st.sampled_from(NAME_ALPHABET + "x"))
        name = name[:i] + (ch if op != "delete" else "") + name[i + (op != "insert") :]
    return name


@budget(2)
@given(mangled_names())
def test_any_scenario_string_parses_or_is_a_user_error(name: str) -> None:
    try:
        c = corruption_from_name(name)
    except MMRobustError as e:
        assert "scenario" in str(e)
        return
    assert isinstance(c, Corruption)
    assert corruption_from_name(c.name) == c or isinstance(c, MaskCorruption)
    for f in ("proportion", "sigma"):
        assert math.isfinite(getattr(c, f, 0.0)), f"{name!r} gave a non-finite {f}"


JSON_LEAVES = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text("abc", max_size=3)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("abc", max_size=2), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def corruption_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A config's corruption entry, often almost right: a valid dict with one field broken."""
    d: dict[str, Any] = draw(corruptions(("a", "b"))).to_dict()
    action = draw(st.sampled_from(("break", "drop", "add", "type")))
    keys = sorted(d)
    if action == "break":
        d[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
    elif action == "drop":
        d.pop(draw(st.sampled_from(keys)))
    elif action == "add":
        d[draw(st.text("xyz", min_size=1, max_size=3))] = draw(JSON_VALUES)
    else:
        d["type"] = draw(st.sampled_from(CORRUPTIONS.names()) | st.text("Misng", max_size=8))
    return d


@budget(2)
@given(corruption_dicts())
def test_any_corruption_dict_builds_or_is_a_user_error(d: dict[str, Any]) -> None:
    try:
        c = corruption_from_dict(d)
    except MMRobustError:
        return
    batch = Batch(
        {"a": torch.randn(4, 2), "b": torch.randn(4, 3)}, torch.ones(4, 2, dtype=torch.bool), torch.zeros(4), ("a", "b")
    )
    x: Batch | Tokens = batch
    if c.stage == "token":
        x = Tokens(torch.randn(4, 2, 3), batch.present, ("a", "b"))
    try:
        out = apply_to(c, x, 0)
    except MMRobustError:
        return  # e.g. a modality name that is not in the batch
    assert present_values_finite(out), f"{d} produced NaN/inf"


@budget()
@given(st.data())
def test_corruptions_on_other_modalities_are_user_errors(data: st.DataObject) -> None:
    """A corruption written for other modalities fails with the 'unknown modality' message."""
    c = data.draw(corruptions(("a", "b", "c")))
    spec = data.draw(data_specs(kinds=RAW_KINDS))
    x = data.draw(batches(spec))
    try:
        apply_to(c, x, 0)
    except MMRobustError as e:
        assert "unknown modality" in str(e)


# ==============================================================================================
# Encoders, fusions, the model
# ==============================================================================================
def test_every_encoder_kind_has_shapes() -> None:
    layouts = {ENCODER_LAYOUT.get(name, name) for name in ENCODERS.names()}
    assert layouts <= set(SHAPES), "add the new encoder's layout to ENCODER_LAYOUT (or a shape strategy)"


@st.composite
def models(draw: st.DrawFn, fusion: str, kind: str | None = None) -> tuple[MultimodalModel, Batch]:
    spec = draw(data_specs(max_modalities=4, include=kind))
    use = None
    if draw(st.booleans()):
        use = draw(st.lists(st.sampled_from(spec.modality_names), min_size=1, unique=True))
    dim = draw(st.sampled_from((4, 8)))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    model = MultimodalModel(spec, fusion=fusion, dim=dim, use=use)
    return model, draw(batches(spec, fill="zero"))


@pytest.mark.parametrize("kind", ENCODERS.names())
@pytest.mark.parametrize("fusion", FUSIONS.names())
@budget(0.2)
@given(data=st.data(), fill=st.sampled_from(FILLS))
def test_model_ignores_absent_slots_and_other_rows(fusion: str, kind: str, data: st.DataObject, fill: str) -> None:
    """Invariant 1 for every fusion x encoder kind, any mask (all-absent rows included): finite,
    identical whatever the placeholders hold, and each row's output independent of the other rows."""
    model, batch = data.draw(models(fusion, kind))
    model.eval()
    with torch.no_grad():
        ref = model(batch)
        tokens = model.encode(with_placeholders(batch, fill))
        out = model.fuse(tokens)
    b, c = len(batch), model.spec.num_classes
    assert out.shape == ((b,) if model.spec.task == "regression" else (b, c))
    assert torch.isfinite(out).all(), f"{model.fusion_name}: non-finite output"
    assert_identical(out, ref, f"{model.fusion_name}: output depends on absent placeholders ({fill})")
    used = batch.present & model.use_mask
    assert torch.equal(tokens.present, used)
    assert torch.isfinite(tokens.z).all() and not tokens.z[~used].any(), "absent token slots must be zeros"
    # unused modalities are never read, even where present
    unused = [m for j, m in enumerate(model.modalities) if not model.use_mask[j]]
    if unused:
        garbage = Batch(
            {**batch.inputs, **{m: torch.full_like(batch.inputs[m], math.nan) for m in unused}},
            batch.present,
            batch.target,
            batch.modalities,
        )
        with torch.no_grad():
            assert_identical(model(garbage), ref, "an unused modality was read")
    # row independence (eval mode): each row alone gives the same output (up to float rounding)
    with torch.no_grad():
        rows = torch.cat([model(_row(batch, i)) for i in range(b)])
    torch.testing.assert_close(rows, ref, atol=1e-5, rtol=1e-4)


def _row(batch: Batch, i: int) -> Batch:
    s = slice(i, i + 1)
    return Batch({m: x[s] for m, x in batch.inputs.items()}, batch.present[s], batch.target[s], batch.modalities)


@pytest.mark.parametrize("fusion", FUSIONS.names())
@budget(0.25)
@given(data=st.data(), fill=st.sampled_from(FILLS))
def test_training_step_has_finite_gradients_with_nan_placeholders(fusion: str, data: st.DataObject, fill: str) -> None:
    """Train mode (dropout on), batch size 1 included: NaN/inf placeholders never reach a gradient."""
    model, batch = data.draw(models(fusion))
    model.train()
    out = model(with_placeholders(batch, fill))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"


@pytest.mark.parametrize("fusion", FUSIONS.names())
@budget(0.25)
@given(st.data())
def test_every_fusion_on_raw_tokens(fusion: str, data: st.DataObject) -> None:
    """Fusions alone, on tokens whose absent slots hold NaN: finite, and placeholders ignored."""
    mods = data.draw(st.lists(NAMES, min_size=1, max_size=5, unique=True).map(tuple))
    b, dim, out = data.draw(st.integers(1, 6)), data.draw(st.sampled_from((4, 8, 12))), data.draw(st.integers(1, 4))
    tokens = data.draw(token_sets(mods, b, dim))
    torch.manual_seed(0)
    f = create_fusion(fusion, len(mods), dim, out).eval()
    with torch.no_grad():
        got = f(tokens)
        zeros = f(Tokens(tokens.z.nan_to_num(0.0), tokens.present, mods))
    assert got.shape == (b, out) and torch.isfinite(got).all()
    assert_identical(got, zeros)


def smoothing(value: object) -> object:
    """A method given `label_smoothing=value` (before: 1.5 failed in the first loss, after earlier
    models of a config were written; -0.5 trained as 0)."""
    return mmrobust.create_method("joint", label_smoothing=value)


BAD_MODELS: dict[str, tuple[Callable[[], Any], str]] = {
    "unknown fusion": (lambda: create_fusion("attention", 2, 8, 3), "unknown fusion 'attention'"),
    "unknown encoder kind": (lambda: create_encoder("cnn", (3,), 8), "unknown encoder kind 'cnn'"),
    "conv1d with a vector shape": (lambda: create_encoder("conv1d", (3,), 8), r"conv1d expects per-sample shape"),
    "a zero-size shape": (lambda: create_encoder("mlp", (0,), 8), "every dimension must be >= 1"),
    "an empty shape": (lambda: create_encoder("mlp", (), 8), "every dimension must be >= 1"),
    "dim not divisible by the heads": (lambda: create_fusion("transformer", 2, 6, 3), "divisible by the 4 heads"),
    "seq encoder dim not divisible": (lambda: create_encoder("seq", (3, 2), 6), "divisible by the 4 heads"),
    "non-positive dim": (lambda: create_encoder("mlp", (3,), 0), "dim must be >= 1"),
    "a dim that is text": (lambda: MultimodalModel(_spec((3,)), dim="abc"), "dim must be an integer >= 1, got 'abc'"),
    "a fractional dim": (lambda: MultimodalModel(_spec((3,)), dim=2.5), "dim must be an integer >= 1, got 2.5"),
    "label smoothing of 1.5": (lambda: smoothing(1.5), r"label_smoothing must be in \[0, 1\), got 1.5"),
    "negative label smoothing": (lambda: smoothing(-0.5), "label_smoothing must be a finite number >= 0"),
    "text label smoothing": (lambda: smoothing("0.1"), r"label_smoothing must be a finite number >= 0, got '0\.1'"),
}


@pytest.mark.parametrize("case", BAD_MODELS, ids=list(BAD_MODELS))
def test_bad_model_configurations_are_user_errors(case: str) -> None:
    make, message = BAD_MODELS[case]
    with pytest.raises(MMRobustError, match=message):
        make()


def _spec(*shapes: tuple[int, ...], kind: str = "mlp") -> DataSpec:
    mods = tuple(ModalitySpec(f"m{j}", kind, s) for j, s in enumerate(shapes))
    return DataSpec("t", mods, "classification", 3)


@pytest.mark.parametrize("name", ["to", "train", "type", "keys", "a.b", ""])
def test_modality_names_torch_cannot_use_are_user_errors(name: str) -> None:
    """A modality named 'to' (found by fuzzing) crashed every model with KeyError("attribute 'to'
    already exists") from nn.ModuleDict."""
    spec = DataSpec("t", (ModalitySpec(name, "mlp", (3,)),), "classification", 2)
    with pytest.raises(MMRobustError, match="cannot name a model part"):
        MultimodalModel(spec, fusion="sum", dim=8)
    with pytest.raises(MMRobustError, match="cannot name a model part"):
        built("ume", spec, 0)


BAD_MODEL_INPUTS: dict[str, tuple[Callable[[], Batch], str]] = {
    "a batch of other modalities": (
        lambda: Batch({"x": torch.ones(2, 3)}, torch.ones(2, 1, dtype=torch.bool), torch.zeros(2), ("x",)),
        r"the batch has modalities \['x'\] but the model expects \['m0'\]",
    ),
    "per-sample shape differs from the model's": (
        lambda: Batch({"m0": torch.ones(2, 4)}, torch.ones(2, 1, dtype=torch.bool), torch.zeros(2), ("m0",)),
        r"modality 'm0' has per-sample shape \(4,\) but the model expects \(3,\)",
    ),
}


@pytest.mark.parametrize("case", BAD_MODEL_INPUTS, ids=list(BAD_MODEL_INPUTS))
def test_model_rejects_batches_it_was_not_built_for(case: str) -> None:
    make, message = BAD_MODEL_INPUTS[case]
    model = MultimodalModel(_spec((3,)), fusion="sum", dim=8)
    with pytest.raises(MMRobustError, match=message):
        model(make())


def test_model_accepts_float64_inputs() -> None:
    """collate of numpy float64 arrays gives float64 inputs: the model computes in float32."""
    model = MultimodalModel(_spec((3,)), fusion="sum", dim=8).eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    batch = collate([{"inputs": {"m0": x[i].numpy()}, "target": 0} for i in range(2)], ["m0"])
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(Batch({"m0": x.float()}, batch.present, batch.target, ("m0",))))


# ==============================================================================================
# Metrics
# ==============================================================================================
@budget()
@given(st.data())
def test_classification_metrics_are_defined_and_bounded(data: st.DataObject) -> None:
    c = data.draw(st.integers(1, 5))
    n = data.draw(st.integers(1, 20))
    target = data.draw(targets(DataSpec("t", (), "classification", c), n))
    style = data.draw(st.sampled_from(STYLES))
    logits = values((n, c), style, data.draw(st.integers(0, 2**16)))
    got = classification_metrics(logits, target, c)
    assert set(got) == {"accuracy", "macro_f1"}
    for k, v in got.items():
        assert 0.0 <= v <= 1.0, (k, v)


@budget()
@given(st.data())
def test_regression_metrics_are_defined_or_documented_nan(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 20))
    target = data.draw(targets(DataSpec("t", (), "regression", 1), n))
    pred = values((n,), data.draw(st.sampled_from(STYLES)), data.draw(st.integers(0, 2**16)))
    got = regression_metrics(pred, target)
    no_nonzero_label = bool((target == 0).all())
    for k, v in got.items():
        if k in ("acc2", "f1") and no_nonzero_label:
            assert math.isnan(v), f"{k} is undefined without non-zero labels: NaN, got {v}"
        else:
            assert math.isfinite(v), (k, v)
            assert k in ("mae",) or -1.0 - 1e-9 <= v <= 1.0 + 1e-9, (k, v)


def test_metrics_without_non_zero_labels_are_nan_not_zero() -> None:
    """Regression test: acc2 was NaN but f1 0.0 when every label is 0 (nothing to score)."""
    got = regression_metrics(torch.tensor([0.5, -0.5]), torch.zeros(2))
    assert math.isnan(got["acc2"]) and math.isnan(got["f1"])
    assert got["acc2_has0"] == 0.5 and math.isfinite(got["f1_has0"])


def test_metrics_of_no_samples_are_nan() -> None:
    got = classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 3)
    assert math.isnan(got["accuracy"]) and math.isnan(got["macro_f1"])


# ==============================================================================================
# The audit engine
# ==============================================================================================
@st.composite
def datasets(draw: st.DrawFn, max_samples: int = 10) -> MultimodalData:
    spec = draw(data_specs(max_modalities=4))
    batch = draw(batches(spec, b=draw(st.integers(1, max_samples)), fill="nan"))
    return MultimodalData(spec, batch.inputs, batch.present, batch.target)


def built(name: str, spec: DataSpec, seed: int, **params: Any) -> mmrobust.Method:
    """A registered method with freshly initialised (untrained) weights."""
    accepted = inspect.signature(mmrobust.METHODS.get(name).__init__).parameters
    small = {
        "dim": 8,
        "embed_dim": 16,
        "aggregator_hidden": [8],
        "proj_dim": 8,
        "head_hidden": [8],
        "kernels": [3, 3, 3],
    }
    kwargs = {k: v for k, v in {**small, **params}.items() if k in accepted}
    method = mmrobust.create_method(name, **kwargs)
    torch.manual_seed(seed)
    method.build(spec)
    method.seed = seed
    return method


def _fusions_for(name: str) -> tuple[str, ...]:
    extra = ("mlp",) if name == "crossl" else ()
    return (*FUSIONS.names(), *extra)


@pytest.mark.parametrize("name", mmrobust.METHODS.names())
@budget(0.2)
@given(st.data())
def test_engine_equals_the_naive_path(name: str, data: st.DataObject) -> None:
    """The cached-token engine agrees with corrupt-then-predict to 1e-5, for every method, any
    scenario list, any chunk size, any natural missingness (all-absent rows included), NaN placeholders."""
    test = data.draw(datasets())
    method = built(
        name, test.spec, data.draw(st.integers(0, 99)), fusion=data.draw(st.sampled_from(_fusions_for(name)))
    )
    chosen = default_scenarios(test.modalities) if data.draw(st.booleans()) else []
    extra = data.draw(st.lists(corruptions(test.modalities), min_size=1, max_size=4))
    taken = {s.name for s in chosen}
    for sc in custom_scenarios(extra):
        if sc.name not in taken:
            chosen.append(sc)
            taken.add(sc.name)
    seed = data.draw(st.integers(0, 2**16))
    chunk, size = data.draw(st.integers(1, len(test) + 2)), data.draw(st.integers(1, len(test) + 2))
    fast, hashes = scenario_outputs(method, test, chosen, seed, chunk=chunk)
    naive = naive_outputs(method, test, chosen, seed, batch_size=size)
    assert set(fast) == set(naive) == set(hashes) == taken
    for sc in chosen:
        assert torch.isfinite(naive[sc.name]).all(), f"{name}: non-finite output under {sc.name}"
        torch.testing.assert_close(fast[sc.name], naive[sc.name], atol=1e-5, rtol=0, msg=f"{name}: {sc.name}")


@pytest.mark.parametrize("name", mmrobust.METHODS.names())
@budget(0.2)
@given(data=st.data(), fill=st.sampled_from(FILLS))
def test_every_method_ignores_absent_placeholders(name: str, data: st.DataObject, fill: str) -> None:
    """Invariant 1 through each method's own predict (ActionMAE's completion, RedCore's VIB, UME's
    ensemble, CroSSL's aggregator ...), on random shapes and masks, all-absent rows included."""
    spec = data.draw(data_specs(max_modalities=4))
    method = built(name, spec, data.draw(st.integers(0, 99)), fusion=data.draw(st.sampled_from(_fusions_for(name))))
    batch = data.draw(batches(spec, fill="zero"))
    ref = method.predict(batch)
    out = method.predict(with_placeholders(batch, fill))
    assert torch.isfinite(out).all(), f"{name}: non-finite prediction"
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0, msg=f"{name} reads absent placeholders ({fill})")


@budget(0.5)
@given(st.data())
def test_audit_table_is_finite_for_degenerate_data(data: st.DataObject) -> None:
    """Single class, constant inputs, batch size 1: every value is a number (or the documented NaN: also
    a scenario that leaves no sample any modality, so scores none)."""
    test = data.draw(datasets(max_samples=6))
    method = built("joint", test.spec, 0, fusion=data.draw(st.sampled_from(FUSIONS.names())))
    defaults = {s.name for s in default_scenarios(test.modalities)}
    extra = data.draw(st.lists(corruptions(test.modalities), max_size=2, unique_by=lambda c: c.name))
    result = mmrobust.audit(method, test, [c for c in extra if c.name not in defaults], split=None)
    no_nonzero_label = test.spec.task == "regression" and bool((test.target == 0).all())
    table = result.table
    scored_none = table.scenario.isin([s["name"] for s in result.scenarios if s["excluded"] == len(test)])
    documented = (table.metric.isin(["acc2", "f1"]) if no_nonzero_label else table.metric.isin([])) | scored_none
    assert table.value[~documented].map(math.isfinite).all(), table[~documented]
    assert table.value[documented.values & table.metric.eq("acc2").values].isna().all()


# ==============================================================================================
# Every registered method: one quick fit on tiny, degenerate data
# ==============================================================================================
@pytest.mark.parametrize("name", mmrobust.METHODS.names())
@budget(0.1)
@given(st.data())
def test_every_method_fits_tiny_degenerate_data(name: str, data: st.DataObject) -> None:
    """One epoch of `fit` on 1-4 samples (batch size 1, a single class or constant score, constant
    inputs, NaN placeholders) raises nothing (`fit` stops on a non-finite loss) and predicts finite values."""
    cls = mmrobust.METHODS.get(name)
    task = data.draw(st.sampled_from(sorted(cls.tags.tasks)))
    spec = data.draw(data_specs(kinds=("mlp", "conv1d", "seq"), max_modalities=3, task=task))
    n = data.draw(st.integers(1, 4))
    complete = cls.tags.needs_complete_training_data
    batch = data.draw(batches(spec, b=n, empty_rows=data.draw(st.booleans()), fill="nan"))
    present = torch.ones_like(batch.present) if complete else batch.present
    inputs = {m: torch.nan_to_num(x) if complete else x for m, x in batch.inputs.items()}
    every = torch.arange(n)
    train = MultimodalData(spec, inputs, present, batch.target, {"train": every, "val": every, "test": every})
    method = built(name, spec, 0, fusion=data.draw(st.sampled_from(_fusions_for(name))))
    method = mmrobust.create_method(name, **method.get_params())
    mmrobust.fit(method, train, epochs=1, batch_size=data.draw(st.integers(1, n)), progress=False)
    out = method.predict(train.batch(slice(None)))
    assert torch.isfinite(out).all(), f"{name}: non-finite prediction after one epoch"


@budget(0.5)
@given(st.data())
def test_strategies_respect_the_no_empty_row_option(data: st.DataObject) -> None:
    b, m = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5))
    assert data.draw(masks(b, m, empty_rows=False)).any(dim=1).all()


# ==============================================================================================
# Regression tests for what the fuzzing found, and the bad inputs a user can hit
# ==============================================================================================
def test_names_keep_every_digit_and_stay_short_otherwise() -> None:
    """Names printed numbers with %g: Missing("a", 0.123456789) was "missing[a@0.123457]", which
    parsed back to another corruption and collided with Missing("a", 0.123457) in an audit."""
    c = Missing("a", 0.123456789)
    assert c.name == "missing[a@0.123456789]" and corruption_from_name(c.name) == c
    assert Missing("a", 0.123457).name != c.name
    assert GaussianNoise("a", 1 / 3, 0.03515625).name == "noise[a,sigma=0.3333333333333333,p=0.03515625]"
    assert (
        Missing("a", 0.3).name == "missing[a@0.3]" and GaussianNoise("a", 1.0, 1e-05).name == "noise[a,sigma=1,p=1e-05]"
    )


def test_the_all_missing_policy_is_part_of_the_name() -> None:
    """`if_all_missing="allow"` changes the masks but not the name: both policies shared one name
    (duplicates in an audit, mislabelled rows in the tables) and the name parsed back to keep_one."""
    for keep_one, allow in (
        (Missing("a", 0.3), Missing("a", 0.3, if_all_missing="allow")),
        (MissingRates({"a": 0.9, "b": 0.9}), MissingRates({"a": 0.9, "b": 0.9}, if_all_missing="allow")),
    ):
        assert keep_one.name != allow.name and allow.name.endswith(",allow]")
        assert corruption_from_name(allow.name) == allow and corruption_from_name(keep_one.name) == keep_one


def test_non_finite_noise_is_rejected() -> None:
    """sigma=inf (or "sigma=1e999" in a scenario name) was accepted and wrote inf/NaN into present inputs."""
    for sigma in (math.inf, math.nan):
        with pytest.raises(MMRobustError, match="sigma must be a finite number"):
            GaussianNoise("a", sigma=sigma)
        with pytest.raises(MMRobustError, match="sigma must be a finite number"):
            Perturbation("a", sigma=sigma)
    with pytest.raises(MMRobustError, match=r"scenario 'noise.*sigma must be a finite number"):
        corruption_from_name("noise[a,sigma=1e999,p=0.3]")


def test_subset_of_one_name_given_as_a_string() -> None:
    """Subset(keep="audio") (e.g. `keep: audio` in a config) became the subset of the letters a, u, d, i, o."""
    assert Subset("audio") == Subset(("audio",)) and Subset("audio").name == "subset[audio]"
    assert corruption_from_dict({"type": "Subset", "keep": "audio"}) == Subset(("audio",))


BAD_CORRUPTIONS: dict[str, tuple[Callable[[], Any], str]] = {
    "unknown type": (lambda: corruption_from_dict({"type": "Dropp"}), "unknown corruption 'Dropp'. Did you mean"),
    "type not a string": (lambda: corruption_from_dict({"type": ["Missing"]}), "unknown corruption"),
    "not a mapping": (lambda: corruption_from_dict("RandomDrop"), "a corruption is a mapping with a 'type'"),
    "rates not a mapping": (
        lambda: corruption_from_dict({"type": "MissingRates", "rates": ["a"]}),
        "rates must map modality names to missing rates",
    ),
    "empty rates": (lambda: MissingRates({}), "rates is empty"),
    "modality not a string": (
        lambda: corruption_from_dict({"type": "Missing", "modality": None, "proportion": 0.1}),
        "a modality name must be a non-empty string",
    ),
    "proportion not a number": (lambda: Missing("a", "0.3"), "proportion must be a number in"),
    "proportion outside [0, 1]": (lambda: Missing("a", 1.5), r"proportion must be a number in \[0, 1\], got 1.5"),
    "negative sigma": (lambda: GaussianNoise("a", sigma=-1.0), "sigma must be a finite number >= 0"),
    "perturbation over one half": (lambda: Perturbation("a", 0.6), "must be <= 0.5"),
    "unknown all-missing policy": (lambda: Missing("a", 0.3, if_all_missing="never"), "if_all_missing must be"),
    "unknown stage": (lambda: GaussianNoise("a", stage="middle"), "stage must be 'input' or 'token'"),
    "empty Compose": (lambda: Compose(()), "Compose needs at least one corruption"),
    "Compose of one dict, not a list": (
        lambda: corruption_from_dict({"type": "Compose", "parts": {"type": "RandomDrop"}}),
        "Compose takes a list of corruptions",
    ),
    "Compose mixing stages": (
        lambda: Compose((GaussianNoise("a"), GaussianNoise("a", stage="token"))),
        "mixes input- and token-stage noise",
    ),
    "unparseable scenario name": (
        lambda: corruption_from_name("bogus"),
        "cannot parse scenario 'bogus'; write it like",
    ),
    "scenario name with a repeated modality": (
        lambda: corruption_from_name("rates[a=0.1,a=0.2]"),
        "cannot parse scenario.*given twice",
    ),
    "scenario name with a bad rate": (
        lambda: corruption_from_name("rates[a=0.1=2]"),
        "write each rate as modality=rate",
    ),
    "scenario name with an out-of-range value": (
        lambda: corruption_from_name("missing[a@1.5]"),
        r"scenario 'missing\[a@1.5\]': proportion must be",
    ),
}


@pytest.mark.parametrize("case", BAD_CORRUPTIONS, ids=list(BAD_CORRUPTIONS))
def test_bad_corruptions_are_user_errors(case: str) -> None:
    make, message = BAD_CORRUPTIONS[case]
    with pytest.raises(MMRobustError, match=message):
        make()


def test_a_corruption_for_other_modalities_names_the_closest() -> None:
    batch = Batch({"audio": torch.ones(2, 3)}, torch.ones(2, 1, dtype=torch.bool), torch.zeros(2), ("audio",))
    with pytest.raises(MMRobustError, match=r"unknown modality 'audoi'\. Did you mean 'audio'\?"):
        Missing("audoi", 0.5)(batch, torch.Generator().manual_seed(0))


BAD_TOKENS: dict[str, tuple[Callable[[], Tokens], str]] = {
    "z not (B, M, D)": (
        lambda: Tokens(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), ("a", "b", "c")),
        r"tokens need z \(B, M, D\)",
    ),
    "present of another shape": (
        lambda: Tokens(torch.zeros(2, 3, 4), torch.ones(2, 2, dtype=torch.bool), ("a", "b", "c")),
        r"tokens need z \(B, M, D\) and a bool present \(B, M\)",
    ),
    "present not bool": (
        lambda: Tokens(torch.zeros(2, 3, 4), torch.ones(2, 3), ("a", "b", "c")),
        "and a bool present",
    ),
    "too few modality names": (
        lambda: Tokens(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), ("a", "b")),
        "2 modality names for 3 token slots",
    ),
}


@pytest.mark.parametrize("case", BAD_TOKENS, ids=list(BAD_TOKENS))
def test_invalid_tokens_are_user_errors(case: str) -> None:
    make, message = BAD_TOKENS[case]
    with pytest.raises(MMRobustError, match=message):
        make()


def test_batch_modalities_given_as_a_list_still_match_the_model() -> None:
    model = MultimodalModel(_spec((3,)), fusion="sum", dim=8).eval()
    batch = Batch({"m0": torch.ones(2, 3)}, torch.ones(2, 1, dtype=torch.bool), torch.zeros(2), ["m0"])
    assert batch.modalities == ("m0",)
    with torch.no_grad():
        assert model(batch).shape == (2, 3)


def test_numpy_numbers_are_accepted_and_stored_as_plain_floats() -> None:
    """Parameters from numpy (np.float32(0.3), np.int64(1)) are numbers too; stored as float they keep
    `to_dict()` JSON-safe."""
    np = pytest.importorskip("numpy")
    c = Compose((Missing("a", np.float32(0.25)), MissingRates({"a": np.int64(1)}), GaussianNoise("a", np.float32(2.0))))
    assert json.loads(json.dumps(c.to_dict())) == c.to_dict()
    assert corruption_from_dict(c.to_dict()) == c and c.name == "missing[a@0.25]+rates[a=1]+noise[a,sigma=2,p=1]"
