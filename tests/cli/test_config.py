"""Typed configs: validation with suggestions, dotted overrides, resolved config printing."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrobust import MMRobustError
from mmrobust.cli import main
from mmrobust.config import ExperimentConfig, load_config

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_resolve_to_typed_config(tmp_path: Path) -> None:
    text = "name: x\ndata: {name: synthetic}\nmodels:\n  - {method: joint, params: {fusion: sum}}\ntrain: {lr: 1}\n"
    path = write(tmp_path, text)
    config = load_config(path, ["train.epochs=7", "models.0.params.fusion=concat", "seeds=[4, 5]"])
    assert isinstance(config, ExperimentConfig)
    assert config.train.epochs == 7 and config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.models[0].params == {"fusion": "concat"}
    assert config.seeds == [4, 5]
    assert config.train.batch_size == 32  # defaults filled in


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("trian: {epochs: 3}\n", [], "unknown config key 'trian'. Did you mean 'train'"),
        ("train: {epoch: 3}\n", [], "Did you mean 'train.epochs'"),
        ("train: {epochs: many}\n", [], "'train.epochs' must be int"),
        ("seeds: 3\n", [], "'seeds' must be a list"),
        ("models: []\n", [], "'models' is empty"),
        ("models: [{method: joint}, {method: joint}]\n", [], "share a name"),
        ("", ["train.epochs"], "malformed override"),
        ("", ["experiment.yaml"], "is run by `mmrobust run CONFIG`"),
        ("", ["models.4.method=joint"], "'models.4' does not exist"),
        ("", ["audit.sede=1"], "Did you mean 'audit.seed'"),
        ("- a\n- b\n", [], "must be a mapping"),
        ("a: [\n", [], "not valid YAML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    with pytest.raises(MMRobustError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(write(tmp_path, text), overrides)


def test_hash_depends_on_content_only(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, "data: {name: basicmotions}\ntrain: {epochs: 3}\n"))
    b = load_config(None, ["train.epochs=3"])
    c = load_config(None, ["train.epochs=4"])
    assert a.hash() == b.hash() != c.hash()


def test_print_config_shows_resolved_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "name: printed\ndata: {name: basicmotions}\n")
    main(["run", str(path), "train.epochs=9", "--print-config"])  # returns normally: exit code 0
    out = capsys.readouterr().out
    assert "name: printed" in out and "epochs: 9" in out and "batch_size: 32" in out


@pytest.mark.parametrize("text", ["", "name: x\n", "models: [{method: joint}]\n"])
def test_a_config_file_naming_no_dataset_is_refused(tmp_path: Path, text: str) -> None:
    """Before: an empty (or data-less) file trained BasicMotions, 100 epochs x 3 seeds, without a word."""
    with pytest.raises(MMRobustError, match=r"the config names no dataset: add `data: \{name: NAME\}`"):
        load_config(write(tmp_path, text))
    assert load_config(write(tmp_path, text), ["data.name=synthetic"]).data.name == "synthetic"


def test_numbers_in_exponent_form_without_a_dot_are_numbers(tmp_path: Path) -> None:
    """PyYAML reads `1e-4` as a string ("train.lr must be float, got '1e-4'" before); quoted, it stays one."""
    config = load_config(write(tmp_path, "data: {name: synthetic}\ntrain: {lr: 1e-4, weight_decay: 5E-2}\n"),
                         ["train.lr=2e-3"])  # fmt: skip
    assert config.train.lr == 2e-3 and config.train.weight_decay == 0.05  # overrides too
    assert load_config(write(tmp_path, "data: {name: synthetic}\ntrain: {lr: 1e-4}\n")).train.lr == 1e-4
    with pytest.raises(MMRobustError, match=r"train\.lr' must be float, got '1e-4'"):
        load_config(write(tmp_path, "data: {name: synthetic}\ntrain: {lr: '1e-4'}\n"))


def test_a_sweep_file_given_to_run_says_to_sweep_it(tmp_path: Path) -> None:
    path = write(tmp_path, "base: {data: {name: synthetic}}\ngrid: {train.epochs: [1, 2]}\n")
    with pytest.raises(MMRobustError, match=r"is a sweep file \(it has base and grid\): run it with `mmrobust sweep "):
        load_config(path)


def test_the_printed_config_runs_again_as_it_stands_from_anywhere(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Before: it kept `recipe: recipes/r.yaml`, relative to the original file, so it failed elsewhere."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text("train: {epochs: 3, lr: 0.01}\n")
    original = write(tmp_path, "recipe: recipes/r.yaml\ndata: {name: synthetic}\nmodels: [{method: joint}]\n")
    main(["run", str(original), "--print-config"])
    printed = capsys.readouterr().out
    assert printed.startswith("# recipe recipes/r.yaml: merged below\n")
    (tmp_path / "elsewhere").mkdir()
    copy = tmp_path / "elsewhere" / "resolved.yaml"
    copy.write_text(printed)
    again = load_config(copy)
    assert again.train.epochs == 3 and again.train.lr == 0.01 and again.recipe is None
    assert again.to_dict() == {**load_config(original).to_dict(), "recipe": None}


def test_missing_config_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "nope.yaml")])
    assert exit_info.value.code == 2
    assert "config file not found" in capsys.readouterr().err


def test_unknown_methods_and_method_options_fail_when_the_config_is_read() -> None:
    with pytest.raises(MMRobustError, match=r"unknown method 'actionmea'\. Did you mean 'actionmae'"):
        load_config(DEMO, ["models.0.method=actionmea"])
    with pytest.raises(MMRobustError, match=r"models.0 \(method 'joint'\) 'fusoin'. Did you mean 'fusion'\?") as e:
        load_config(DEMO, ["models.0.params.fusoin=sum"])
    assert "self" not in str(e.value)


def test_a_recipe_is_shared_by_every_model_and_the_config_overrides_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text(
        "data: {name: synthetic, options: {n_samples: 100, seed: 3}}\n"
        "train: {epochs: 7, select: none, augment: {m0: {jitter: 0.1}}}\n"
        "audit: {scenarios: ['missing[m0@0.5]'], seed: 2}\n"
        "params: {label_smoothing: 0.1, dim: 32}\n"
    )
    (tmp_path / "exp.yaml").write_text(
        "recipe: recipes/r.yaml\n"
        "data: {options: {seed: 4}}\n"
        "audit: {seed: 5}\n"
        "train: {epochs: 9}\n"
        "models:\n"
        "  - {method: joint}\n"
        "  - {method: crossl}\n"  # takes label_smoothing but has no `dim`
        "  - {method: actionmae, params: {label_smoothing: 0.0}}\n"
    )
    config = load_config(tmp_path / "exp.yaml")
    assert config.recipe == "recipes/r.yaml" and config.data.name == "synthetic"
    assert config.data.options == {"n_samples": 100, "seed": 4} and config.train.epochs == 9
    assert config.train.select == "none" and config.train.augment == {"m0": {"jitter": 0.1}}
    assert config.audit.scenarios == ["missing[m0@0.5]"] and config.audit.seed == 5  # every study audits alike
    assert [m.params for m in config.models] == [
        {"label_smoothing": 0.1, "dim": 32},
        {"label_smoothing": 0.1},
        {"label_smoothing": 0.0, "dim": 32},
    ]
    (tmp_path / "recipes" / "bad.yaml").write_text("models: []\n")
    (tmp_path / "exp.yaml").write_text("recipe: recipes/bad.yaml\n")
    with pytest.raises(MMRobustError, match="a recipe holds only data, train, audit, params; not models"):
        load_config(tmp_path / "exp.yaml")
    (tmp_path / "exp.yaml").write_text("recipe: ../recipes/r.yaml\n")  # relative to the config, not the cwd
    with pytest.raises(MMRobustError, match=r"recipe '\.\./recipes/r\.yaml' not found: .* relative to its config"):
        load_config(tmp_path / "exp.yaml")
