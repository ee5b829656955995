"""Training: reproducibility, the test split is never read, early stopping, predict/evaluate."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import mmrobust
from mmrobust import MMRobustError, MultimodalData

EPOCHS = 4


def train(data: MultimodalData, method: str = "dropout", fusion: str = "transformer", seed: int = 0, **kw):  # type: ignore[no-untyped-def]
    m = mmrobust.create_method(method, fusion=fusion)
    result = mmrobust.fit(
        m,
        data,
        seed=seed,
        epochs=kw.pop("epochs", EPOCHS),
        batch_size=kw.pop("batch_size", 32),
        progress=False,
        **kw,
    )
    return m, result


def states_equal(a: mmrobust.Method, b: mmrobust.Method) -> bool:
    sa, sb = a.modules().state_dict(), b.modules().state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- reproducibility (docs/architecture.md, invariant 4) --------------------------------------------------------
@pytest.mark.parametrize(("method", "fusion"), [("dropout", "transformer"), ("joint", "concat")])
def test_same_seed_same_run_different_seed_different_run(kinds_data, method: str, fusion: str) -> None:
    a, ra = train(kinds_data, method, fusion, seed=0)
    b, rb = train(kinds_data, method, fusion, seed=0)
    c, rc = train(kinds_data, method, fusion, seed=1)
    assert states_equal(a, b)
    assert ra == rb  # val metrics, best epoch and the whole history
    assert ra.val_metrics == rb.val_metrics
    assert not states_equal(a, c)
    assert ra.history != rc.history
    val = kinds_data.split("val")
    assert torch.equal(mmrobust.predict(a, val), mmrobust.predict(b, val))
    assert not torch.equal(mmrobust.predict(a, val), mmrobust.predict(c, val))
    assert a.seed == 0 and c.seed == 1


def test_fit_does_not_depend_on_global_rng_state(small_data) -> None:
    torch.manual_seed(123)
    a, ra = train(small_data, "dropout", "sum", seed=5)
    torch.manual_seed(456)
    torch.rand(10)
    b, rb = train(small_data, "dropout", "sum", seed=5)
    assert states_equal(a, b) and ra == rb


# --- the test split is never read -------------------------------------------------------------
def poisoned_copy(data: MultimodalData) -> MultimodalData:
    """Same data, except the test split's inputs are NaN / garbage and its targets permuted."""
    test = data.splits["test"]
    inputs = {m: x.clone() for m, x in data.inputs.items()}
    g = torch.Generator().manual_seed(99)
    for j, m in enumerate(data.modalities):
        x = inputs[m]
        rows = test[data.present[test, j]]
        if j % 2 == 0:
            x[rows] = float("nan")  # a present NaN: anything touching it poisons the run
        else:
            x[rows] = torch.randn(x[rows].shape, generator=g) * 1e6
    target = data.target.clone()
    target[test] = target[test][torch.randperm(len(test), generator=g)]
    assert not torch.equal(target, data.target)
    poisoned = MultimodalData(
        data.spec, {m: x.clone() for m, x in data.inputs.items()}, data.present, target, dict(data.splits)
    )
    poisoned.inputs.update(inputs)  # edited after validation, which would reject present NaN
    assert torch.isnan(poisoned.inputs["m0"]).any()
    return poisoned


@pytest.mark.parametrize("method", ["joint", "dropout"])
def test_test_split_is_never_read_during_training(kinds_data, method: str) -> None:
    clean, rc = train(kinds_data, method, "transformer", seed=2)
    poisoned_data = poisoned_copy(kinds_data)
    poisoned, rp = train(poisoned_data, method, "transformer", seed=2)
    assert states_equal(clean, poisoned)
    assert rc == rp
    # sanity: the poison is real: reading the test rows yields NaN
    test_rows = poisoned_data.batch(poisoned_data.splits["test"])
    assert not torch.isfinite(poisoned.predict(test_rows)).all()


def test_test_split_is_never_read_for_regression(regression_data) -> None:
    clean, rc = train(regression_data, "dropout", "sum", seed=0)
    poisoned, rp = train(poisoned_copy(regression_data), "dropout", "sum", seed=0)
    assert states_equal(clean, poisoned) and rc == rp


class CountingData(MultimodalData):
    """Counts the splits requested from it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.requested: list[str] = []

    def split(self, name: str) -> MultimodalData:
        self.requested.append(name)
        return super().split(name)


@pytest.mark.parametrize("select", ["loss", "accuracy"])
def test_fit_never_asks_for_the_test_split(kinds_data, select: str) -> None:
    data = CountingData(
        kinds_data.spec, kinds_data.inputs, kinds_data.present, kinds_data.target, kinds_data.splits
    )
    data.split("test")
    assert data.requested == ["test"]  # the counter works
    data.requested.clear()
    train(data, "dropout", "sum", select=select)
    assert data.requested.count("test") == 0
    assert {"train", "val"} <= set(data.requested)


# --- early stopping and model selection -------------------------------------------------------
@pytest.fixture(scope="module")
def overfitting_data() -> MultimodalData:
    return mmrobust.load_dataset("synthetic", n_samples=120, informativeness=(1.0, 0.5, 0.5), seed=0)


@pytest.mark.parametrize("select", ["loss", "accuracy", "macro_f1"])
def test_best_epoch_weights_are_restored(overfitting_data, select: str) -> None:
    # a high learning rate makes validation get worse after an early best epoch
    m, r = train(
        overfitting_data, "joint", "concat", epochs=15, lr=1e-2, batch_size=16, patience=100, select=select
    )
    key = f"val_{select}"
    scores = [h[key] for h in r.history]
    best = min(scores) if select == "loss" else max(scores)
    assert r.best_epoch == scores.index(best)
    assert r.history[r.best_epoch]["epoch"] == r.best_epoch
    # not vacuous: some later epoch scored worse than the best one
    assert any(s != best for s in scores[r.best_epoch + 1 :]), scores
    after = mmrobust.evaluate(m, overfitting_data.split("val"))
    assert after[select] == pytest.approx(best, abs=1e-6)
    assert after == pytest.approx(r.val_metrics, abs=1e-6)
    assert r.val_metrics == pytest.approx(
        {k[4:]: v for k, v in r.history[r.best_epoch].items() if k.startswith("val_")}
    )
    assert not m.modules().training  # left in eval mode


def test_early_stopping_stops_after_patience(overfitting_data) -> None:
    patience = 3
    _, r = train(overfitting_data, "joint", "concat", epochs=40, lr=1e-2, batch_size=16, patience=patience)
    assert r.epochs_run == len(r.history) < 40
    assert r.epochs_run == r.best_epoch + patience + 1
    losses = [h["val_loss"] for h in r.history]
    assert all(loss >= losses[r.best_epoch] for loss in losses[r.best_epoch + 1 :])


def test_history_records_train_loss_and_val_metrics(small_data) -> None:
    _, r = train(small_data, "joint", "sum", epochs=3)
    assert r.epochs_run == 3 and [h["epoch"] for h in r.history] == [0, 1, 2]
    for h in r.history:
        assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1"} <= set(h)
        assert all(isinstance(v, float | int) for v in h.values())
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]


# --- predict / evaluate -----------------------------------------------------------------------
def test_predict_and_evaluate_classification(kinds_data, fit_small) -> None:
    m = fit_small(kinds_data, "dropout", "transformer")
    test = kinds_data.split("test")
    out = mmrobust.predict(m, test)
    assert out.shape == (len(test), kinds_data.spec.num_classes)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # batching does not change predictions, and order follows the data
    torch.testing.assert_close(mmrobust.predict(m, test, batch_size=7), out, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.predict(test.batch(slice(None))), out, atol=1e-5, rtol=0)
    metrics = mmrobust.evaluate(m, test)
    assert set(metrics) == {"accuracy", "macro_f1", "loss"}
    assert metrics["accuracy"] == pytest.approx(float((out.argmax(1) == test.target).float().mean()))
    assert metrics["loss"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(out, test.target)), rel=1e-5
    )


def test_predict_and_evaluate_take_a_split_and_refuse_bad_arguments(kinds_data, fit_small) -> None:
    m = fit_small(kinds_data, "dropout", "transformer")
    test = kinds_data.split("test")
    torch.testing.assert_close(mmrobust.predict(m, kinds_data, split="test"), mmrobust.predict(m, test))
    assert mmrobust.evaluate(m, kinds_data, split="test") == mmrobust.evaluate(m, test)
    for size in (0, -1, 2.5):  # before: "range() arg 3 must not be zero", "expected a non-empty list"
        with pytest.raises(MMRobustError, match=f"batch_size must be an integer >= 1, got {size}"):
            mmrobust.evaluate(m, test, batch_size=size)  # type: ignore[arg-type]
    with pytest.raises(MMRobustError, match=r"predict takes a method, not a str"):
        mmrobust.predict("dropout", test)  # type: ignore[arg-type]
    with pytest.raises(MMRobustError, match=r"evaluate takes a MultimodalData, not a str"):
        mmrobust.evaluate(m, "basicmotions")  # type: ignore[arg-type]
    with pytest.raises(MMRobustError, match=r"has no 'tset' split"):
        mmrobust.predict(m, kinds_data, split="tset")


def test_predict_and_evaluate_regression(regression_data, fit_small) -> None:
    m = fit_small(regression_data, "dropout", "sum")
    test = regression_data.split("test")
    out = mmrobust.predict(m, test)
    assert out.shape == (len(test),)
    metrics = mmrobust.evaluate(m, test)
    assert set(metrics) == {"mae", "corr", "acc2", "f1", "acc2_has0", "f1_has0", "acc5", "acc7", "loss"}
    assert metrics["mae"] == pytest.approx(float((out - test.target).abs().mean()), rel=1e-5)
    assert metrics["loss"] == pytest.approx(metrics["mae"], rel=1e-5)  # L1 training loss


def test_regression_training_reduces_mae(regression_data) -> None:
    untrained = mmrobust.create_method("dropout", fusion="sum")
    torch.manual_seed(0)
    untrained.build(regression_data.spec)
    val = regression_data.split("val")
    before = mmrobust.evaluate(untrained, val)["mae"]
    m, r = train(regression_data, "dropout", "sum", epochs=15, select="mae")
    after = mmrobust.evaluate(m, val)["mae"]
    assert after == pytest.approx(r.val_metrics["mae"], abs=1e-6)
    assert after < 0.75 * before
    # and it beats predicting the training mean
    baseline = float((val.target - regression_data.split("train").target.mean()).abs().mean())
    assert after < baseline


def test_classification_training_beats_chance(small_data) -> None:
    _, r = train(small_data, "joint", "sum", epochs=10)
    assert r.val_metrics["accuracy"] > 1.5 / small_data.spec.num_classes


# --- errors -----------------------------------------------------------------------------------
def test_fit_errors(small_data) -> None:
    with pytest.raises(MMRobustError, match=r"select must be 'none'.*got 'acuracy'"):
        train(small_data, "joint", "sum", epochs=1, select="acuracy")
    no_split = dataclasses.replace(small_data, splits={"train": small_data.splits["train"]})
    with pytest.raises(MMRobustError, match="has no val samples, but select='loss'"):
        train(no_split, "joint", "sum", epochs=1)
    if not torch.cuda.is_available():
        with pytest.raises(MMRobustError, match="CUDA"):
            train(small_data, "joint", "sum", epochs=1, device="cuda")


def test_fit_and_audit_name_what_to_pass_instead_of_a_name_or_module(small_data) -> None:
    with pytest.raises(MMRobustError, match=r"fit takes a method, not a str: .*create_method\('joint'\)"):
        mmrobust.fit("joint", small_data, epochs=1)
    with pytest.raises(MMRobustError, match=r"audit takes a method, not a Linear: .*mmrobust.wrap"):
        mmrobust.audit(torch.nn.Linear(2, 2), small_data)
    with pytest.raises(MMRobustError, match=r"fit takes a MultimodalData, not a str: .*load_dataset"):
        mmrobust.fit(mmrobust.create_method("joint"), "synthetic", epochs=1)
    with pytest.raises(MMRobustError, match=r"audit takes a MultimodalData, not a str: .*load_dataset"):
        mmrobust.audit(mmrobust.create_method("joint"), "synthetic")


def test_fit_with_an_empty_val_split_is_a_user_error(small_data) -> None:
    no_val = dataclasses.replace(
        small_data, splits={"train": small_data.splits["train"], "val": torch.arange(0)}
    )
    with pytest.raises(MMRobustError, match=r"has no val samples, .*: add val rows .* or train a fixed budget"):
        train(no_val, "joint", "sum", epochs=1)


def test_unfitted_method_and_bad_method_options(small_data) -> None:
    m = mmrobust.create_method("joint")
    with pytest.raises(MMRobustError, match="not trained yet"):
        m.predict(small_data.batch(slice(0, 4)))
    with pytest.raises(MMRobustError, match="Did you mean 'fusion'"):
        mmrobust.create_method("joint", fusoin="sum")
    with pytest.raises(MMRobustError, match="Did you mean 'dropout'"):
        mmrobust.create_method("dropot")
    with pytest.raises(MMRobustError, match="unknown fusion"):
        train(small_data, "joint", "sumfusion", epochs=1)
    for fusion in (3, None):  # before: accepted, then an AttributeError ('int' has no 'lower') in fit
        with pytest.raises(MMRobustError, match=rf"fusion must be a fusion's name \(concat, .*\), got {fusion}"):
            mmrobust.create_method("joint", fusion=fusion)


def test_dropout_with_configured_corruption_trains_and_records_it(small_data) -> None:
    cfg = {"type": "MissingRates", "rates": {"m0": 0.5}, "if_all_missing": "keep_one", "stage": "input"}
    m = mmrobust.create_method("dropout", fusion="sum", corruption=cfg)
    r = mmrobust.fit(m, small_data, epochs=2, progress=False)
    assert r.epochs_run == 2
    assert m.get_params()["corruption"] == cfg
    token = mmrobust.create_method(
        "dropout", fusion="sum", corruption=mmrobust.GaussianNoise("m1", 1.0, 0.5, stage="token")
    )
    mmrobust.fit(token, small_data, epochs=1, progress=False)
    assert token.get_params()["corruption"]["stage"] == "token"


# --- checkpoints ------------------------------------------------------------------------------
def test_checkpoint_round_trip(kinds_data, fit_small, tmp_path) -> None:
    m = fit_small(kinds_data, "dropout", "transformer")
    path = mmrobust.save_checkpoint(m, tmp_path / "sub" / "m.pt", {"note": 1})
    loaded, config = mmrobust.load_checkpoint(path)
    assert config["method"] == "dropout" and config["note"] == 1 and config["seed"] == m.seed
    assert loaded.get_params() == m.get_params() and loaded.seed == m.seed
    test = kinds_data.split("test")
    torch.testing.assert_close(mmrobust.predict(loaded, test), mmrobust.predict(m, test), atol=1e-6, rtol=0)
    assert loaded.spec == m.spec
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["m.pt"]  # atomic, no temp left


def test_save_checkpoint_refuses_what_it_could_not_load_back(kinds_data, fit_small, tmp_path) -> None:
    m = fit_small(kinds_data, "dropout", "transformer")
    with pytest.raises(MMRobustError, match=r"save_checkpoint takes a method, not a \w*Path"):
        mmrobust.save_checkpoint(tmp_path / "m.pt", m)  # type: ignore[arg-type]  # swapped
    with pytest.raises(MMRobustError, match=r"save_checkpoint takes a method, not a tuple"):
        mmrobust.save_checkpoint(mmrobust.load_checkpoint(mmrobust.save_checkpoint(m, tmp_path / "a.pt")),  # type: ignore[arg-type]
                                 tmp_path / "b.pt")  # fmt: skip
    with pytest.raises(MMRobustError, match=r"save_checkpoint takes a file path, not a NoneType"):
        mmrobust.save_checkpoint(m, None)  # type: ignore[arg-type]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(kinds_data.spec.num_classes))
    wrapped = mmrobust.wrap(net, kinds_data, inputs=[kinds_data.modalities[0]])
    with pytest.raises(MMRobustError, match=r"a 'external' model cannot be saved .* mmrobust.wrap"):
        mmrobust.save_checkpoint(wrapped, tmp_path / "w.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_load_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(MMRobustError, match="not found"):
        mmrobust.load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MMRobustError):
        mmrobust.load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(MMRobustError, match="not an mmrobust checkpoint"):
        mmrobust.load_checkpoint(other)


def test_a_diverging_loss_stops_training_with_a_clear_error(small_data) -> None:
    class Diverging(mmrobust.methods.supervised.SupervisedMethod):
        def loss(self, batch, generator):  # type: ignore[no-untyped-def]
            return super().loss(batch, generator) * float("nan")

    with pytest.raises(MMRobustError, match=r"loss became nan in stage 'train', epoch 0 \(diverged\); try a lower"):
        mmrobust.fit(Diverging(), small_data, epochs=2, progress=False)
