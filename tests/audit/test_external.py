"""Auditing models trained elsewhere: `mmrobust.wrap`, the mask-blind check, `audit --model`."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import one_line_error, run_cli
from torch import Tensor, nn

import mmrobust
from mmrobust.audit.engine import naive_outputs
from mmrobust.audit.scenarios import default_scenarios
from mmrobust.errors import MMRobustError

REPO = Path(__file__).resolve().parents[2]


class Branches(nn.Module):
    """Logits = sum over modalities of a linear map of the flattened input; optionally mask-aware."""

    def __init__(self, data: mmrobust.MultimodalData, uses_mask: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.uses_mask = uses_mask
        self.heads = nn.ModuleDict(
            {m.name: nn.Linear(int(torch.tensor(m.shape).prod()), data.spec.num_classes) for m in data.spec.modalities}
        )
        self.seen: list[dict[str, Tensor]] = []

    def forward(self, inputs: dict[str, Tensor], present: Tensor | None = None) -> Tensor:
        self.seen.append({m: x.clone() for m, x in inputs.items()})
        outs = torch.stack([head(inputs[m].flatten(1)) for m, head in self.heads.items()], dim=1)  # (B, M, C)
        if self.uses_mask and present is not None:
            outs = outs * present[..., None]
        return outs.sum(dim=1)


def absent_rows(data: mmrobust.MultimodalData) -> mmrobust.Batch:
    batch = data.split("test").batch(slice(0, 8))
    present = batch.present.clone()
    present[:4, 0] = False
    return batch.with_present(present)


@pytest.mark.parametrize("policy", ["zeros", "mean"])
def test_fill_policies_replace_exactly_the_absent_rows(small_data, policy: str) -> None:
    model = Branches(small_data)
    wrapped = mmrobust.wrap(model, small_data, missing=policy)
    batch = absent_rows(small_data)
    wrapped.predict(batch)
    seen = model.seen[-1]["m0"]
    train = small_data.split("train")
    fill = torch.zeros(16) if policy == "zeros" else train.inputs["m0"].mean(dim=0)
    torch.testing.assert_close(seen[:4], fill.expand(4, -1))
    torch.testing.assert_close(seen[4:], batch.inputs["m0"][4:])  # present rows untouched


def test_mask_policy_passes_present_and_clean_values(small_data) -> None:
    model = Branches(small_data, uses_mask=True)
    batch = absent_rows(small_data)
    out = mmrobust.wrap(model, small_data, missing="mask").predict(batch)
    torch.testing.assert_close(model.seen[-1]["m0"], batch.inputs["m0"])
    expected = sum(h(batch.inputs[m]) * batch.present[:, j, None] for j, (m, h) in enumerate(model.heads.items()))
    torch.testing.assert_close(out, expected)


def test_a_callable_policy_and_positional_inputs(small_data) -> None:
    calls: list[Tensor] = []

    def fill(inputs: dict[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        calls.append(present)
        return {m: x * present[:, j, None] for j, (m, x) in enumerate(inputs.items())}

    def model(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
        return torch.stack([a.sum(1), b.sum(1), c.sum(1)], dim=1).repeat(1, 2)[:, : small_data.spec.num_classes]

    batch = absent_rows(small_data)
    out = mmrobust.wrap(model, small_data, missing=fill, inputs=["m0", "m1", "m2"]).predict(batch)
    assert len(calls) == 1 and torch.equal(calls[0], batch.present)
    assert torch.equal(out[:4, 0], torch.zeros(4)) and not torch.equal(out[4:, 0], torch.zeros(4))


def test_a_mask_blind_model_is_refused_and_the_flag_overrides(small_data) -> None:
    blind = mmrobust.wrap(Branches(small_data, uses_mask=False), small_data, missing="mask")
    with pytest.raises(MMRobustError, match="masking a modality does not change this model's outputs"):
        mmrobust.audit(blind, small_data)
    result = mmrobust.audit(blind, small_data, mask_check=False)
    subsets = result.table[(result.table.kind == "subset") & (result.table.metric == "accuracy")]
    assert subsets.value.nunique() == 1  # what the check protects against: every subset scores alike


def test_the_audit_streams_and_equals_the_whole_set_reference(small_data) -> None:
    wrapped = mmrobust.wrap(Branches(small_data), small_data, missing="zeros")
    result = mmrobust.audit(wrapped, small_data, chunk=8)
    test = small_data.split("test")
    outputs = naive_outputs(wrapped, test, default_scenarios(test.modalities), seed=0)
    acc = result.table.set_index(["scenario", "metric"]).value
    for name, out in outputs.items():
        assert acc[(name, "accuracy")] == pytest.approx(float((out.argmax(-1) == test.target).float().mean()))
    assert result.models[0]["params"]["missing"] == "zeros"
    assert set(result.table.model) == {"external Branches (missing=zeros)"}  # the policy is in the label


def test_token_scenarios_and_training_are_refused(small_data) -> None:
    wrapped = mmrobust.wrap(Branches(small_data), small_data)
    with pytest.raises(MMRobustError, match="no token stage"):
        mmrobust.audit(wrapped, small_data, [mmrobust.GaussianNoise("m0", stage="token")])
    with pytest.raises(MMRobustError, match="audited, not trained"):
        mmrobust.fit(wrapped, small_data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"missing": "drop"}, "unknown missing-value policy"),
        ({"missing": None}, r"missing must be one of zeros, mean, mask or a callable, got None"),  # before: KeyError
        ({"inputs": ["m9"]}, "unknown modality"),
        ({"task": "regression"}, "classification task"),
        ({"task": "regresion"}, r"unknown task 'regresion'. Did you mean 'regression'\?"),  # before: data is …
    ],
)
def test_bad_wrap_arguments_are_one_line_errors(small_data, kwargs: dict, message: str) -> None:
    with pytest.raises(MMRobustError, match=message):
        mmrobust.wrap(Branches(small_data), small_data, **kwargs)


def test_wrap_refuses_swapped_arguments_and_reads_one_input_name_whole(small_data) -> None:
    with pytest.raises(MMRobustError, match=r"wrap takes a MultimodalData as its second argument, not a str"):
        mmrobust.wrap(Branches(small_data), "basicmotions")  # type: ignore[arg-type]
    with pytest.raises(MMRobustError, match=r"wrap takes a MultimodalData as its second argument, not a Branches"):
        mmrobust.wrap(small_data, Branches(small_data))  # type: ignore[arg-type]
    one = mmrobust.wrap(lambda m0: m0[:, :4], small_data, inputs="m0")  # before: read letter by letter
    assert one.predict(absent_rows(small_data)).shape == (8, 4)


@pytest.mark.parametrize(
    ("fill", "message"),
    [
        (lambda inputs: inputs, r"the missing= callable failed: TypeError: .* called as missing\(inputs, present\)"),
        (lambda inputs, present: None, "it returned a NoneType"),
        (lambda inputs, present: {"m0": inputs["m0"]}, "it returned no tensor of the input's shape for 'm1'"),
    ],
)
def test_a_bad_missing_callable_is_a_one_line_error(small_data, fill, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MMRobustError, match=message):
        mmrobust.wrap(Branches(small_data), small_data, missing=fill).predict(absent_rows(small_data))


def test_a_model_that_fails_is_named_with_the_input_shapes(small_data) -> None:
    wrapped = mmrobust.wrap(nn.Linear(3, 4), small_data)  # called with a dict: fails inside torch
    with pytest.raises(MMRobustError, match=r"the wrapped model failed on inputs m0 \(8, 16\)"):
        wrapped.predict(absent_rows(small_data))


def test_mask_policy_needs_a_present_argument(small_data) -> None:
    with pytest.raises(MMRobustError, match="does not take a `present` argument"):
        mmrobust.wrap(nn.Linear(8, 4), small_data, missing="mask")


def test_wrong_output_shape_is_named(small_data) -> None:
    wrapped = mmrobust.wrap(lambda inputs: inputs["m0"], small_data)  # (B, 16), not (B, classes)
    with pytest.raises(MMRobustError, match=r"returned shape \(8, 16\); classification needs \(8, 4\) logits"):
        wrapped.predict(absent_rows(small_data))


class Unstable(Branches):
    """Branches whose logits are NaN, or +inf, where m0's first input is above 1: a diverged model."""

    def forward(self, inputs: dict[str, Tensor], present: Tensor | None = None) -> Tensor:
        out = super().forward(inputs, present)
        out[inputs["m0"][:, 0] > 1, 0] = float("nan")
        out[inputs["m0"][:, 1] > 2, 1] = float("inf")
        return out


def test_non_finite_outputs_are_an_error_naming_the_scenario_and_the_count(small_data) -> None:
    """NaN logits were audited silently (argmax reads NaN as class 0: a 'score' of 0.25)."""
    test = small_data.split("test")
    m0 = test.inputs["m0"]
    bad = int(((m0[:, 0] > 1) | (m0[:, 1] > 2)).sum())
    assert 0 < bad < len(test)
    wrapped = mmrobust.wrap(Unstable(small_data), small_data)
    needle = (
        rf"^under scenario clean the model's outputs are NaN or infinite for {bad} of the {len(test)} samples "
        rf"scored in test rows 0\.\.{len(test) - 1}: no metric can be read from them; check the model \(.*\)$"
    )
    with pytest.raises(MMRobustError, match=needle):
        mmrobust.audit(wrapped, small_data)


# --- the command line -----------------------------------------------------------------------
MODEL_FILE = """
import torch
from torch import nn

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 4), nn.Linear(16, 4)

    def forward(self, inputs):
        return self.a(inputs["m0"]) + self.b(inputs["m1"])

class Fragile(Model):
    def forward(self, inputs):
        if (inputs["m1"] == 0).all(dim=1).any():
            raise ValueError("boom: m1 is all zeros")
        return super().forward(inputs)

class Positional(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 4), nn.Linear(16, 4)

    def forward(self, m1, m0):
        return self.a(m0) + self.b(m1)

def build():
    return Model()

def build_positional():
    return Positional()

def build_fragile():
    return Fragile()

def build_other():
    return nn.Linear(3, 4)

def not_a_model():
    return 42

def build_with(width):
    return Model()
"""


@pytest.fixture
def model_file(tmp_path: Path, small_data) -> tuple[Path, Path, Path]:
    """A model file, weights for it, and a 2-modality npz to audit it on."""
    (tmp_path / "my_model.py").write_text(MODEL_FILE)
    namespace: dict = {}
    exec(MODEL_FILE, namespace)
    torch.manual_seed(1)
    weights = tmp_path / "weights.pt"
    torch.save(namespace["build"]().state_dict(), weights)
    npz = tmp_path / "data.npz"
    import numpy as np

    x = small_data.inputs
    np.savez(npz, x_m0=x["m0"].numpy(), x_m1=x["m1"].numpy(), y=small_data.target.numpy())
    return tmp_path / "my_model.py", weights, npz


def test_cli_audits_a_model_from_a_file_with_weights(model_file, tmp_path, capsys) -> None:
    path, weights, npz = model_file
    out = tmp_path / "audit"
    code, _, err = run_cli(
        ["audit", "--model", f"{path}:build", "--weights", str(weights), "--npz", str(npz), "--out", str(out)], capsys
    )
    assert code == 0, err
    table = (out / "results.csv").read_text()
    assert "build (missing=zeros)" in table and "subset[m0]" in table


RAW_MODEL_FILE = """
import torch
from torch import nn


class RawUnits(nn.Module):
    \"\"\"Trained elsewhere on the arrays as stored: class 1 when sensor a reads above 100 (its units).\"\"\"

    def forward(self, inputs):
        above = inputs["a"].mean(dim=1) - 100.0 + 0.0 * inputs["b"].mean(dim=1)
        return torch.stack([-above, above], dim=1)


def build():
    return RawUnits()
"""


def test_cli_audits_a_model_on_the_npz_arrays_as_stored(tmp_path: Path, capsys) -> None:
    """Before, `audit --model` standardised the npz's modalities (as `load_npz` does for mmrobust's own
    training), so a model trained on raw units scored chance (0.5) with nothing said."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    a = 100.0 + np.where(y == 1, 3.0, -3.0)[:, None] + rng.normal(0, 1, (200, 4))
    np.savez(tmp_path / "raw.npz", x_a=a.astype(np.float32), x_b=rng.normal(0.5, 0.01, (200, 3)).astype(np.float32),
             y=y)  # fmt: skip
    (tmp_path / "raw_model.py").write_text(RAW_MODEL_FILE)
    clean = {}
    for flag in ("", "--standardize"):
        out = tmp_path / f"audit{flag}"
        args = ["audit", "--model", f"{tmp_path / 'raw_model.py'}:build", "--npz", str(tmp_path / "raw.npz"),
                "--no-mask-check", "--out", str(out), *([flag] if flag else [])]  # fmt: skip
        with pytest.warns(UserWarning, match=r"^no --weights: audited the model as"):  # it may be untrained: said
            code, _, err = run_cli(args, capsys)
        assert code == 0, err
        table = pd.read_csv(out / "results.csv")
        clean[flag] = table[(table.scenario == "clean") & (table.metric == "accuracy")].value.item()
        inputs = json.loads((out / "results.json").read_text())["inputs"]
        assert inputs == ("standardised on the train split" if flag else "as stored in the npz")
    assert clean[""] > 0.95 and clean["--standardize"] < 0.7
    code, _, err = run_cli(["audit", "--model", f"{tmp_path / 'raw_model.py'}:build", "--data", "synthetic",
                            "--no-standardize"], capsys)  # fmt: skip
    assert code == 2 and "--standardize and --no-standardize go with --npz" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "no_such_module_x:build"], "cannot import 'no_such_module_x'"),
        (["--model", "{path}:nothing"], "has no function 'nothing'"),
        (["--model", "{path}:build", "--weights", "{npz}"], "not a readable tensors-only state dict"),
        (["--model", "{path}"], "MODULE:FUNCTION"),
        (["--model", "{path}:not_a_model"], "the model to wrap must be callable, got int"),
        (["--model", "{path}:build_other", "--weights", "{weights}"], "does not fit the model built by"),
        (["--model", "{path}:build_fragile"], "the wrapped model failed on inputs m0 (40, 16), m1 (40, 16)"),
        (["--model", "{path}:build_positional"], "pass inputs=['m1', 'm0'] (command line: --inputs m1,m0)"),
        (["--model", "{path}:build", "--weights", "{whole}"], "save model.state_dict() instead"),
        (["--model", "{path}:build", "--weights", "{empty}"], "the file is empty or cut short"),
        (["--model", "{path}:build_positional", "--inputs", "m1,m9"], "unknown modality 'm9'"),
        (["--model", "{path}:build_with"], "build_with() failed: TypeError: build_with() missing 1 required"),
        ([], "exactly one of --checkpoint FILE or --model"),
    ],
)
def test_cli_model_errors_are_one_line(model_file, tmp_path, capsys, args: list[str], needle: str) -> None:
    path, weights, npz = model_file
    torch.save(nn.Linear(16, 4), tmp_path / "whole.pt")  # a pickled module, not a state dict
    (tmp_path / "empty.pt").write_bytes(b"")
    files = {"whole": tmp_path / "whole.pt", "empty": tmp_path / "empty.pt"}
    filled = [a.format(path=path, npz=npz, weights=weights, **files) for a in args]
    code, _, err = run_cli(["audit", *filled, "--npz", str(npz), "--out", str(tmp_path / "o")], capsys)
    one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_cli_calls_a_model_positionally_in_the_given_order(model_file, tmp_path, capsys) -> None:
    path, weights, npz = model_file  # Positional(m1, m0) with Model's weights computes what Model({m0, m1}) does
    tables = []
    for target, order in (("build", []), ("build_positional", ["--inputs", "m1,m0"])):
        out = tmp_path / target
        args = ["audit", "--model", f"{path}:{target}", *order, "--weights", str(weights), "--npz", str(npz)]
        code, _, err = run_cli([*args, "--out", str(out)], capsys)
        assert code == 0, err
        tables.append(pd.read_csv(out / "results.csv").set_index(["scenario", "metric"]).value)
    pd.testing.assert_series_equal(tables[0], tables[1])  # every scenario: each branch saw its own modality
    code, _, err = run_cli([*args, "--checkpoint", str(npz), "--out", str(tmp_path / "o")], capsys)
    one_line_error(code, err, "exactly one of --checkpoint FILE or --model")


def test_the_example_runs(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["audit_your_model.py", "--epochs", "3"])
    runpy.run_path(str(REPO / "examples" / "audit_your_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "two-branch (zeros)" in out and "two-branch (mean)" in out and "mask-aware" in out
    assert "refused: masking a modality does not change" in out


def study_with_external(tmp_path: Path, npz: Path, external: str, seeds: str = "[0]") -> Path:
    """An experiment config: a `joint` model ("ours") and an external entry ("theirs", `external` params)."""
    config = tmp_path / "study.yaml"
    config.write_text(
        f"name: mixed\ndata: {{npz: {npz}}}\ntrain: {{epochs: 1}}\nseeds: {seeds}\nmodels:\n"
        "  - {method: joint, label: ours, params: {fusion: sum}}\n"
        f"  - {{method: external, label: theirs, params: {{{external}}}}}\n"
    )
    return config


def test_an_external_model_sits_beside_trained_ones_in_an_experiment(model_file, tmp_path, capsys) -> None:
    path, weights, npz = model_file
    config = study_with_external(tmp_path, npz, f"model: '{path}:build', weights: {weights}, missing: mean", "[1, 0]")
    out = tmp_path / "runs"
    code, _, err = run_cli(["run", str(config), "--out", str(out)], capsys)
    assert code == 0, err
    table = pd.read_csv(out / "results.csv")
    assert set(table.model) == {"ours", "theirs"}
    # audited once: nothing trains it, so more seeds would be copies (before: the run failed at the end,
    # `model 'theirs' seed 0 comes from two audit results`)
    assert list(table[table.model == "theirs"].seed.unique()) == [1]
    assert [p.name for p in (out / "theirs").iterdir()] == ["seed-1"]
    assert sorted(table[table.model == "ours"].seed.unique()) == [0, 1]
    assert (out / "theirs" / "seed-1" / "predictions.pt").is_file()
    assert not (out / "theirs" / "seed-1" / "checkpoint.pt").exists()  # nothing trained here
    code, _, err = run_cli(["report", str(out), "--out", str(tmp_path / "report.html")], capsys)
    assert code == 0, err
    report = (tmp_path / "report.html").read_text()
    assert "ours" in report and "theirs" in report  # side by side in one comparison report
    assert "theirs − ours" in report or "ours − theirs" in report  # paired with ours' seed 1
    manifest = out / "theirs" / "seed-1" / "manifest.json"
    written = manifest.stat().st_mtime_ns
    code, _, err = run_cli(["run", str(config), "--out", str(out)], capsys)
    assert code == 0, err
    assert manifest.stat().st_mtime_ns == written  # finished: skipped like any other run


def test_model_files_import_their_neighbours_and_configs_name_them_from_their_folder(
    model_file, tmp_path, capsys, monkeypatch
) -> None:
    """Before, `--model FILE.py:fn` could not import a module beside FILE.py (unless run as
    `python -m mmrobust`), and a config's external model file and weights were read from the current
    folder, while its `data.npz` was read from the config's."""
    path, weights, npz = model_file
    (path.parent / "neighbour_helpers.py").write_text(MODEL_FILE)
    (path.parent / "uses_helpers.py").write_text("from neighbour_helpers import build\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "audit"
    code, _, err = run_cli(["audit", "--model", f"{path.parent / 'uses_helpers.py'}:build", "--weights", str(weights),
                            "--npz", str(npz), "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    config = study_with_external(tmp_path, npz, f"model: '{path.name}:build', weights: {weights.name}")
    code, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err


def test_an_external_entry_takes_its_inputs_order(model_file, tmp_path, capsys) -> None:
    path, _, npz = model_file
    config = study_with_external(tmp_path, npz, f"model: '{path}:build_positional', inputs: [m1, m0]")
    code, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    assert (tmp_path / "runs" / "theirs" / "seed-0" / "results.csv").is_file()
    bad = study_with_external(tmp_path, npz, f"model: '{path}:build_positional', inputs: m1")
    code, _, err = run_cli(["run", str(bad), "--out", str(tmp_path / "bad")], capsys)
    one_line_error(code, err, "params.inputs must be a list of modality names")


def test_a_bad_external_entry_fails_before_anything_trains(model_file, tmp_path, capsys) -> None:
    path, _, npz = model_file
    config = study_with_external(tmp_path, npz, f"model: '{path}:nothing'")
    code, _, err = run_cli(["run", str(config), "--out", str(tmp_path / "runs")], capsys)
    one_line_error(code, err, "models.1 (theirs)", "has no function 'nothing'")
    assert not (tmp_path / "runs" / "ours").exists()
