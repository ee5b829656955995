"""The streamed audit: chunk-size invariance, streaming metrics = whole-split metrics, bounded reads."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

import mmrobust
from mmrobust import GaussianNoise, Missing, MissingRates, MMRobustError
from mmrobust.audit.engine import DrawHash, ScenarioStream, mask_hash, naive_outputs, scenario_outputs, value_changes
from mmrobust.audit.scenarios import custom_scenarios, default_scenarios
from mmrobust.corruption import Compose, Perturbation, RandomDrop
from mmrobust.data.batch import Batch
from mmrobust.data.synthetic import SyntheticStream
from mmrobust.metrics import accumulator, compute_metrics


def scenarios_for(modalities: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """The defaults plus every kind of draw: rates, input and token noise, exact-count perturbation."""
    a, b, c = modalities
    extra = [
        MissingRates({a: 0.5, b: 0.3, c: 0.7}),
        RandomDrop(),
        GaussianNoise(b, sigma=1.0, proportion=0.5, stage="token"),
        Compose((Missing(a, 0.4), GaussianNoise(c, sigma=1.0, proportion=0.5))),
        Perturbation(c, proportion=0.25, stage="input"),  # exactly 1 of 4 per draw block of 4
    ]
    return default_scenarios(modalities) + custom_scenarios(extra)


class CountingData:
    """A `ChunkedData` over a test split that records every batch it hands out (and has nothing else:
    no `present`, `inputs` or `batch`, so the engine cannot read the whole set)."""

    def __init__(self, data: mmrobust.MultimodalData) -> None:
        self._data = data
        self.spec = data.spec
        self.requested: list[int] = []
        self.log: list[str] = []

    @property
    def modalities(self) -> tuple[str, ...]:
        return self._data.modalities

    def __len__(self) -> int:
        return len(self._data)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for batch in self._data.batches(batch_size):
            self.requested.append(len(batch))
            self.log.append("read")
            yield batch


# --- chunk-size invariance --------------------------------------------------------------------
@pytest.mark.parametrize("draw_block", [1, 4])
def test_outputs_and_masks_do_not_depend_on_the_chunk_size(kinds_data, fit_small, draw_block: int) -> None:
    model = fit_small(kinds_data, "dropout", "transformer")
    test = kinds_data.split("test")  # 40 samples
    scenarios = scenarios_for(kinds_data.modalities)
    naive = naive_outputs(model, test, scenarios, seed=5, draw_block=draw_block)
    reference = ScenarioStream(model, test, scenarios, 5, len(test), draw_block=draw_block, per_scenario=True)
    list(reference)  # the whole-set reference path hashes what it drew by comparing values
    reference_hashes = reference.hashes()
    for chunk in (1, 7, 13, len(test), 1000):  # 7 and 13 do not divide 40
        outputs, hashes = scenario_outputs(model, test, scenarios, seed=5, chunk=chunk, draw_block=draw_block)
        assert hashes == reference_hashes, chunk
        for name in naive:
            assert outputs[name].shape == naive[name].shape
            torch.testing.assert_close(outputs[name], naive[name], atol=1e-5, rtol=0, msg=f"{name} chunk {chunk}")
    for name in naive:  # not vacuous: the scenarios change the outputs (⌊1 x 0.25⌋ = 0 perturbed per block of 1)
        if name != "clean" and not (name.startswith("perturb") and draw_block == 1):
            assert not torch.allclose(naive[name], naive["clean"], atol=1e-4), name


def test_default_draw_block_keeps_the_masks_of_a_whole_set_draw(kinds_data, fit_small) -> None:
    """A test set within one draw block gets exactly the masks of one draw over the whole set."""
    model = fit_small(kinds_data, "joint", "sum")
    test = kinds_data.split("test")
    scenarios = scenarios_for(kinds_data.modalities)
    _, hashes = scenario_outputs(model, test, scenarios, seed=2)
    full = test.batch(slice(None))
    for sc in scenarios:
        if sc.corruption.stage == "input":
            drawn = sc.corruption(full, sc.generator(2))
            expected = DrawHash(len(full.modalities))
            expected.update(drawn.present, value_changes(full, drawn))
            assert hashes[sc.name] == expected.hexdigest(), sc.name
            if sc.kind in ("clean", "subset", "missing"):  # masks only: the plain mask hash
                assert hashes[sc.name] == mask_hash(drawn.present), sc.name


def test_noise_hashes_cover_the_draws_and_are_the_same_for_every_model(kinds_data, fit_small) -> None:
    """Two models audited with one seed share every hash (paired), noise included; another seed's
    noise, on the same rows' masks, hashes differently (before: noise carried the clean mask hash)."""
    scenarios = scenarios_for(kinds_data.modalities)
    test = kinds_data.split("test")
    _, first = scenario_outputs(fit_small(kinds_data, "joint", "sum"), test, scenarios, seed=2)
    _, second = scenario_outputs(fit_small(kinds_data, "dropout", "transformer"), test, scenarios, seed=2)
    assert first == second
    _, other_seed = scenario_outputs(fit_small(kinds_data, "joint", "sum"), test, scenarios, seed=3)
    for sc in scenarios:
        if sc.kind == "noise" or sc.name.startswith(("noise", "compose", "perturb")):
            assert first[sc.name] != first["clean"] and first[sc.name] != other_seed[sc.name], sc.name


def test_draw_blocks_have_their_own_generators() -> None:
    sc = custom_scenarios([Missing("a", 0.5)])[0]
    draws = [torch.rand(8, generator=g) for _, _, g in sc.blocks(0, 0, 3 * 4, block=4)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    again = [torch.rand(8, generator=g) for _, _, g in sc.blocks(0, 4, 2 * 4, block=4)]  # from row 4
    assert torch.equal(again[0], draws[1]) and torch.equal(again[1], draws[2])
    with pytest.raises(MMRobustError, match="draw block"):
        list(sc.blocks(0, 2, 4, block=4))


def test_audit_table_does_not_depend_on_the_chunk_size(kinds_data, fit_small) -> None:
    model = fit_small(kinds_data, "dropout", "concat")
    data = SyntheticStream(3000, informativeness=(5.0, 0.8, 0.8), kinds=("mlp", "conv1d", "seq"), seed=4)
    assert model.spec.compatibility_problem(data.spec) is None
    results = [mmrobust.audit(model, data, chunk=chunk) for chunk in (1024, 2048, 4096)]  # 3, 2 and 1 chunks
    labels = ["scenario", "kind", "metric"]
    for result in results[1:]:
        pd.testing.assert_frame_equal(result.table[labels], results[0].table[labels])
        assert (result.table.value - results[0].table.value).abs().max() < 1e-6
        assert result.scenarios == results[0].scenarios  # mask hashes included


# --- streaming metrics ------------------------------------------------------------------------
def _fold(outputs: torch.Tensor, target: torch.Tensor, task: str, num_classes: int, chunk: int) -> dict[str, float]:
    acc = accumulator(task, num_classes)
    for i in range(0, len(target), chunk):
        acc.update(outputs[i : i + chunk], target[i : i + chunk])
    return acc.result()


def _assert_same(streamed: dict[str, float], whole: dict[str, float]) -> None:
    assert set(streamed) == set(whole)
    for k in whole:
        if np.isnan(whole[k]):
            assert np.isnan(streamed[k]), k
        else:
            assert streamed[k] == pytest.approx(whole[k], abs=1e-6), k


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_streaming_classification_metrics_equal_whole_split(seed: int, chunk: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, c = 300 + seed * 37, 3 + seed
    target = torch.randint(0, c - 1, (n,), generator=g)  # the last class never occurs in the targets
    logits = torch.randn(n, c, generator=g)
    logits[torch.arange(n), target] += 2 * torch.rand(n, generator=g)
    whole = compute_metrics(logits, target, "classification", c)
    _assert_same(_fold(logits, target, "classification", c, chunk), whole)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_streaming_regression_metrics_equal_whole_split(seed: int, chunk: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 300 + seed * 37
    target = torch.randint(-6, 7, (n,), generator=g).float() / 2  # in [-3, 3], with exact zeros
    pred = target * (0.5 + seed / 4) + torch.randn(n, generator=g) + 3.0 * seed  # offsets stress the moments
    whole = compute_metrics(pred, target, "regression", 1)
    _assert_same(_fold(pred, target, "regression", 1, chunk), whole)


def test_streaming_regression_edge_cases() -> None:
    target = torch.linspace(-3, 3, 21)
    constant, perfect, reversed = (torch.full((21,), 0.5), torch.full((21,), 0.1)), target.clone(), -target
    for pred in (*constant, perfect, reversed):
        _assert_same(_fold(pred, target, "regression", 1, 4), compute_metrics(pred, target, "regression", 1))
    pred = torch.randn(40, generator=torch.Generator().manual_seed(0))
    for labels in (torch.linspace(0.5, 3, 40), torch.zeros(40)):  # no zero or negative label; every label 0
        _assert_same(_fold(pred, labels, "regression", 1, 6), compute_metrics(pred, labels, "regression", 1))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_streaming_metrics_of_no_samples_equal_whole_split(task: str) -> None:
    output = torch.zeros(0, 3) if task == "classification" else torch.zeros(0)
    target = torch.zeros(0, dtype=torch.long) if task == "classification" else torch.zeros(0)
    _assert_same(accumulator(task, 3).result(), compute_metrics(output, target, task, 3))


def test_regression_audit_streamed_equals_naive_table(regression_data, fit_small) -> None:
    model = fit_small(regression_data, "dropout", "sum")
    fast = mmrobust.audit(model, regression_data, chunk=1)  # one draw block: a single chunk
    slow = mmrobust.audit(model, regression_data, fast=False)
    assert list(fast.table.metric) == list(slow.table.metric)
    assert (fast.table.value - slow.table.value).abs().max() < 1e-5


# --- bounded memory ---------------------------------------------------------------------------
def test_engine_reads_and_holds_one_chunk_at_a_time(kinds_data, fit_small) -> None:
    """The data is read a chunk at a time and each chunk's outputs are handed on before the next
    chunk is read; encoder and fusion calls never see more than `batch_size` rows."""
    model = fit_small(kinds_data, "dropout", "transformer")
    data = CountingData(kinds_data.split("test"))
    calls: list[int] = []
    method_encode, method_prepare = model.encode, model.prepare_fusion

    def encode(batch):  # type: ignore[no-untyped-def]
        calls.append(len(batch))
        return method_encode(batch)

    def prepare_fusion(z):  # type: ignore[no-untyped-def]
        fuse_rows = method_prepare(z)

        def fuse(rows, present):  # type: ignore[no-untyped-def]
            calls.append(len(rows))
            return fuse_rows(rows, present)

        return fuse

    model.encode, model.prepare_fusion = encode, prepare_fusion  # type: ignore[method-assign]
    try:
        stream = ScenarioStream(
            model, data, scenarios_for(data.modalities), seed=0, chunk=6, batch_size=4, draw_block=3
        )
        seen = 0
        for target, outputs, empty in stream:
            data.log.append("outputs")
            assert all(len(out) == len(target) for out in outputs.values())
            assert set(empty) == set(outputs) and all(e.shape == target.shape for e in empty.values())
            seen += len(target)
    finally:
        del model.encode, model.prepare_fusion
    assert seen == len(data) == 40
    assert data.requested == [6] * 6 + [4]
    assert data.log == ["read", "outputs"] * 7
    assert calls and max(calls) <= 4


def test_audit_streams_any_chunked_data(kinds_data, fit_small) -> None:
    model = fit_small(kinds_data, "joint", "sum")
    counting = CountingData(kinds_data.split("test"))
    streamed = mmrobust.audit(model, counting, progress=True)
    in_memory = mmrobust.audit(model, kinds_data)
    assert counting.requested == [40]
    pd.testing.assert_frame_equal(streamed.table, in_memory.table)
    assert streamed.scenarios == in_memory.scenarios


def test_a_data_source_that_breaks_the_chunk_contract_is_a_clear_error(kinds_data, fit_small) -> None:
    class Ragged(CountingData):
        def batches(self, batch_size: int) -> Iterator[Batch]:
            yield from self._data.batches(batch_size - 1)

    model = fit_small(kinds_data, "joint", "sum")
    with pytest.raises(MMRobustError, match="consecutive batches"):
        scenario_outputs(
            model, Ragged(kinds_data.split("test")), scenarios_for(kinds_data.modalities), 0, chunk=8, draw_block=4
        )


# --- the streamed synthetic dataset -----------------------------------------------------------
def test_synthetic_stream_is_the_same_whatever_the_batch_size() -> None:
    stream = SyntheticStream(5000, informativeness=(3.0, 1.0, 1.0, 1.0), missing_rate=0.2, seed=1)
    whole = stream.batch(0, 5000)
    for size in (1000, 4096, 777):
        parts = list(stream.batches(size))
        assert [len(p) for p in parts[:-1]] == [size] * (len(parts) - 1)
        for m in stream.modalities:
            assert torch.equal(torch.cat([p.inputs[m] for p in parts]), whole.inputs[m])
        assert torch.equal(torch.cat([p.present for p in parts]), whole.present)
        assert torch.equal(torch.cat([p.target for p in parts]), whole.target)
    assert whole.present.any(dim=1).all() and not whole.present.all()
    shifted = SyntheticStream(100, informativeness=(3.0, 1.0, 1.0, 1.0), missing_rate=0.2, seed=1, offset=4000)
    assert torch.equal(shifted.batch(0, 100).inputs["m3"], whole.inputs["m3"][4000:4100])
    data = stream.to_data()
    assert sorted(data.splits) == ["test", "train", "val"] and len(data) == 5000
    assert stream.spec == mmrobust.load_dataset("synthetic", n_samples=10, informativeness=(3.0, 1.0, 1.0, 1.0)).spec


def test_model_calls_see_few_batch_shapes(kinds_data, fit_small) -> None:
    """Fusion and re-encoding calls are padded to multiples of 64 / 16 rows, so a long audit does not
    meet a new batch shape at almost every call (memory kept growing with the number of chunks)."""
    data = SyntheticStream(3000, informativeness=(5.0, 0.8, 0.8), kinds=("mlp", "conv1d", "seq"), seed=4)
    model = fit_small(kinds_data, "dropout", "transformer")
    sizes: dict[str, list[int]] = {"fuse": [], "encode_modality": []}
    prepare_fusion, encode_modality = model.prepare_fusion, model.encode_modality

    def record_prepare(z):  # type: ignore[no-untyped-def]
        fuse_rows = prepare_fusion(z)
        assert fuse_rows is not None  # transformer fusion: the prepared (fast) path

        def record_fuse(rows, present):  # type: ignore[no-untyped-def]
            sizes["fuse"].append(len(rows))
            return fuse_rows(rows, present)

        return record_fuse

    def record_encode(modality, x):  # type: ignore[no-untyped-def]
        sizes["encode_modality"].append(len(x))
        return encode_modality(modality, x)

    model.prepare_fusion, model.encode_modality = record_prepare, record_encode  # type: ignore[method-assign]
    try:
        mmrobust.audit(model, data, chunk=1024)
    finally:
        del model.prepare_fusion, model.encode_modality
    assert sizes["fuse"] and all(n % 64 == 0 for n in sizes["fuse"])
    assert sizes["encode_modality"] and all(n % 16 == 0 for n in sizes["encode_modality"])
