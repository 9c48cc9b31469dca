"""The spec layer: one rule that finds specs, presets and their bases by name or path."""

from __future__ import annotations

import pytest
import yaml

from nri_pyro import NRI, load_preset, resolve_specs
from nri_pyro.specs import find_config, is_path, load_spec


def _write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def test_a_name_never_has_a_suffix_or_a_slash_and_a_path_always_has_one():
    assert not is_path("nri") and not is_path("springs5-quick")
    assert is_path("mine.yaml") and is_path("./mine") and is_path("specs/mine")


def test_files_and_folders_in_the_working_folder_do_not_shadow_shipped_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nri").write_text("decoder: {hidden: 8}\n")  # a file without a suffix
    for name in ("mlp", "cnn", "springs5-quick"):
        (tmp_path / name).mkdir()
    model, _, _ = resolve_specs("nri", "mlp")
    assert model["decoder"]["hidden"] == 256  # the shipped nri, not the file nri here
    assert load_preset("springs5-quick").system == "springs"
    # Shipped model specs that name `base: nri` still reach the shipped nri.
    assert load_spec("model", "nri_sparse")["prior"]["name"] == "sparse"
    assert load_spec("model", "nri_sparse")["decoder"]["hidden"] == 256


def test_a_name_that_is_not_shipped_says_how_to_give_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "mine.yaml", {"prior": {"name": "sparse"}})
    hint = r"for the file mine\.yaml here, write \./mine\.yaml"
    with pytest.raises(FileNotFoundError, match=hint):
        find_config("model", "mine")
    assert load_spec("model", "mine.yaml")["prior"]["name"] == "sparse"
    assert load_spec("model", "./mine.yaml")["prior"]["name"] == "sparse"


def test_a_base_is_found_beside_the_file_that_names_it_for_specs_and_presets_alike(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    # Decoys in the working folder, which the old rules picked.
    _write(tmp_path / "parent.yaml", {"base": "springs5-quick", "train": {"epochs": 99}})
    _write(tmp_path / "mine.yaml", {"decoder": {"hidden": 99}})
    sub = tmp_path / "sub"
    _write(sub / "parent.yaml", {"base": "springs5-quick", "train": {"epochs": 3}})
    _write(sub / "child.yaml", {"base": "parent.yaml", "train": {"lr": 0.01}})
    _write(sub / "named.yaml", {"base": "parent", "train": {"lr": 0.02}})
    preset = load_preset("sub/child.yaml")
    assert preset.train["epochs"] == 3 and preset.train["lr"] == 0.01
    assert load_preset(sub / "named.yaml").train["epochs"] == 3
    # A spec's `base: mine` (a name) finds mine.yaml beside it, as a preset's does.
    _write(sub / "mine.yaml", {"decoder": {"hidden": 7}})
    _write(sub / "spec.yaml", {"base": "mine", "prior": {"name": "sparse"}})
    _write(sub / "spec2.yaml", {"base": "mine.yaml"})
    assert load_spec("model", "sub/spec.yaml")["decoder"]["hidden"] == 7
    assert load_spec("model", "sub/spec2.yaml")["decoder"]["hidden"] == 7
    # A preset's model section names a spec file beside the preset.
    _write(sub / "with_model.yaml", {"base": "springs5-quick", "model": "mine.yaml"})
    assert load_preset("sub/with_model.yaml").model["decoder"]["hidden"] == 7


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"base": 5}, r"by name or path \(a string\), got 5"),
        ({"base": ["a", "b"]}, r"by name or path \(a string\), got \['a', 'b'\]"),
        ({"base": "springs5-quick", "data": {"params": [1, 2]}}, r"data\.params must be a mapping"),
        ({"base": "springs5-quick", "data": {"frames": "ten"}}, r"data\.frames must be a whole"),
        ({"base": "springs5-quick", "data": {"system": "spring"}}, r"data: unknown system"),
        ({"base": "self.yaml"}, "names itself as a base"),
    ],
)
def test_preset_files_with_wrong_types_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "self.yaml"
    _write(path, content)
    with pytest.raises(ValueError, match=message) as err:
        load_preset(path)
    if "frames" in message or "params" in message:
        assert str(path) in str(err.value)  # names the preset file


def test_a_folder_where_a_file_is_expected_is_a_clear_error(tmp_path):
    (tmp_path / "spec.yaml").mkdir()
    with pytest.raises(ValueError, match="is a folder; expected a YAML file"):
        load_spec("model", tmp_path / "spec.yaml")


def test_nri_takes_preset_none_as_the_cli_does_and_refuses_a_number():
    assert NRI(preset="none").preset is None
    with pytest.raises(ValueError, match=r"by name or path \(a string\), got 5"):
        NRI(preset=5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("decoder.hidden=abc", r"decoder\.hidden must be a whole number >= 1, got 'abc'"),
        ("decoder.hidden=2.5", r"decoder\.hidden must be a whole number >= 1, got 2\.5"),
        ("decoder.hidden=-1", r"decoder\.hidden must be a whole number >= 1, got -1"),
        ("decoder.hidden=0", r"decoder\.hidden must be a whole number >= 1, got 0"),
        ("guide.encoder.hidden=abc", r"encoder\.hidden must be a whole number >= 1"),
        ("decoder.dropout=abc", r"decoder\.dropout must be a number, got 'abc'"),
        ("decoder.dropout=1.5", r"decoder\.dropout must be a number in \[0, 1\)"),
        ("decoder.skip_first=maybe", r"decoder\.skip_first must be true or false"),
        (
            "decoder.recompute_messages=3",
            r"recompute_messages must be true or false or null",
        ),
        ("guide.temperature=abc", r"temperature must be a positive number, got 'abc'"),
        ("prior.temperature=abc", r"prior\.temperature must be a positive number, got 'abc'"),
    ],
)
def test_bad_component_settings_name_the_key_before_any_work(override, message):
    with pytest.raises(ValueError, match=message):
        resolve_specs(None, None, [override])


def test_a_bad_setting_on_the_command_line_is_one_line(tmp_path, capsys):
    from nri_pyro.cli import main

    code = main(["train", "--preset", "springs5-quick", "--set", "decoder.hidden=abc",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "decoder.hidden" in err
    assert not (tmp_path / "run").exists()
