"""Presets: named recipes of data, specs and training settings, shipped with the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from nri_pyro import NRI, TrajectoryDataset, load_preset, simulate, simulate_preset
from nri_pyro.api import resolve_specs
from nri_pyro.cli import main
from nri_pyro.data.io import save_dataset
from nri_pyro.presets import DEFAULT_PRESET, preset_names
from nri_pyro.specs import spec_names

ROOT = Path(__file__).resolve().parents[1]
SIZES = [f"{s}{n}" for s in ("springs", "charged", "kuramoto") for n in (5, 10)]
TINY = {
    "data": {"train": 24, "valid": 8, "test": 8, "frames": 16, "test_frames": 16},
    "model": {"decoder": {"msg_hidden": 8, "msg_out": 8, "hidden": 8}},
    "guide": {"encoder": {"hidden": 8}},
    "train": {"epochs": 1, "batch_size": 8, "progress": False},
}


def _tiny_preset(tmp_path: Path, base: str) -> Path:
    path = tmp_path / f"tiny-{base}.yaml"
    path.write_text(json.dumps({"base": base, **TINY}))  # JSON is YAML
    return path


def test_every_system_and_size_has_a_cpu_and_a_paper_preset():
    names = preset_names()
    for name in SIZES:
        assert name in names and f"{name}-paper" in names
        cpu, paper = load_preset(name), load_preset(f"{name}-paper")
        assert cpu.system == paper.system and cpu.num_objects == paper.num_objects
        assert (paper.data["train"], paper.data["valid"], paper.data["test"]) == (
            50_000,
            10_000,
            10_000,
        )
        # The paper's network and recipe: hidden 256 everywhere, the TrainConfig defaults,
        # and our step guard (it changes no step a run of the paper's would take well).
        assert paper.model["decoder"].get("hidden", 256) == 256
        assert paper.guide["encoder"]["hidden"] == 256
        assert paper.train == {"step_guard": 10}
    assert load_preset("charged5").model["decoder"]["skip_first"] is False
    assert load_preset("kuramoto5").guide["encoder"]["name"] == "cnn"


def test_a_preset_holds_only_its_changes_and_inherits_the_rest():
    springs5, springs10 = load_preset("springs5"), load_preset("springs10")
    assert springs10.num_objects == 10 and springs10.data["train"] == 10_000
    assert springs10.model == springs5.model and springs10.guide == springs5.guide
    assert springs10.train == {**springs5.train, "epochs": 30, "lr_decay_every": 10}
    assert springs10.data["valid"] == springs5.data["valid"]


def test_the_main_job_is_exactly_the_springs5_preset(capsys, monkeypatch):
    import nri_pyro.cli as cli

    seen = {}

    def stop(preset, *args, **kwargs):
        seen["preset"] = preset
        raise KeyboardInterrupt  # stop before simulating anything

    monkeypatch.setattr(cli, "simulate_preset", stop)
    assert main(["train"]) == 130
    assert (
        DEFAULT_PRESET == "springs5"
        and seen["preset"].to_dict() == load_preset("springs5").to_dict()
    )
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("preset springs5 (") and "model nri with" in first


def test_specs_and_presets_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, guide, _ = resolve_specs("nri_sparse", "cnn")
    assert model["prior"]["name"] == "sparse" and guide["encoder"]["name"] == "cnn"
    assert load_preset("charged5").system == "charged"
    with pytest.raises(FileNotFoundError, match="valid model specs: nri, nri_charges, nri_dirichlet"):
        resolve_specs("nri_sprase")
    own = tmp_path / "mine.yaml"  # a preset of one's own, on a shipped base
    own.write_text("base: charged5\ntrain: {lr: 0.01}\n")
    mine = load_preset(own)
    assert mine.train["lr"] == 0.01 and mine.system == "charged" and mine.name == "mine"


def test_bad_presets_are_clear_errors_before_any_work(tmp_path, capsys):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("base: springs5\nmodle: {}\n")
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop\n")
    bad_train = tmp_path / "bad_train.yaml"
    bad_train.write_text("base: springs5\ntrain: {lr: -1}\n")
    bad_spec = tmp_path / "bad_spec.yaml"
    bad_spec.write_text("base: springs5\nmodel: {decoder: {hiden: 3}}\n")
    bad_param = tmp_path / "bad_param.yaml"
    bad_param.write_text("base: springs5\ndata: {params: {spring: 2}}\n")
    cases = [
        (["--preset", "charged7"], "unknown preset 'charged7'; valid presets: charged10"),
        (["--preset", str(bad_key)], "unknown key(s) modle"),
        (["--preset", str(loop)], "names itself as a base"),
        (["--preset", str(bad_train)], "train.lr must be positive"),
        (["--preset", str(bad_param)], "unknown parameter 'spring'"),
        (["--preset", str(bad_spec)], "unknown key(s) decoder.hiden"),
        (["--preset", "none"], "--preset none trains on --data alone"),
        (["--preset", "springs5", "--model", "nope"], "valid model specs"),
    ]
    for argv, message in cases:
        assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_preset_refuses_data_of_another_system_size_or_features(tmp_path, capsys):
    folder = tmp_path / "springs3"
    splits = {"train": simulate("springs", 8, 3, num_frames=12), "valid": None}
    save_dataset(folder, {"train": splits["train"]})
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "preset springs5 is for springs with 5 objects" in err and "3 objects" in err
    assert main(["train", "--preset", "charged5", "--data", str(folder)]) == 2
    assert "system 'springs'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="system 'springs', 3 objects"):
        NRI(preset="kuramoto5").fit(splits["train"])
    three_features = TrajectoryDataset(torch.zeros(4, 5, 12, 3), metadata={"system": "springs"})
    with pytest.raises(ValueError, match="3 features"):
        load_preset("springs5").check_data(three_features)


def test_a_tiny_preset_trains_from_the_command_line_and_says_what_it_used(tmp_path, capsys):
    preset = _tiny_preset(tmp_path, "charged5")
    run = tmp_path / "run"
    assert main(["train", "--preset", str(preset), "--out", str(run), "--set",
                 "train.lr=0.002"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0].startswith(f"preset tiny-charged5 ({preset})") and "charged with 5 objects" in out[0]
    )
    assert "--set train.lr=0.002" in out[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["preset"] == "tiny-charged5" and summary["seconds"]["total"] > 0
    assert (run / "model.yaml").read_text().count("skip_first: false") == 1
    assert "lr: 0.002" in (run / "train.yaml").read_text()


def test_python_takes_presets_and_simulates_their_data():
    splits = simulate_preset("springs5-quick", splits=("train", "valid"))
    assert set(splits) == {"train", "valid"}
    assert splits["valid"].trajectories.shape == (500, 5, 49, 4)
    # The reference's statistics: one min and max for positions, one for velocities.
    assert splits["valid"].metadata["normalization"]["groups"] == [[0, 1], [2, 3]]
    assert simulate_preset("springs5-quick", splits=("test",))["test"].num_frames == 99
    nri = NRI(preset="charged5", epochs=3)
    assert nri.config.epochs == 3 and nri.config.lr == load_preset("charged5").train["lr"]
    assert nri.model_spec["decoder"]["skip_first"] is False


@pytest.mark.slow
def test_a_wheel_ships_the_specs_and_presets(tmp_path):
    """A non-editable install, used from a folder outside the checkout, has every spec."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    wheel = next((tmp_path / "dist").glob("nri_pyro-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for kind, folder in (("models", ROOT / "models"), ("guides", ROOT / "guides")):
        for spec in folder.glob("*.yaml"):
            assert f"nri_pyro/configs/{kind}/{spec.name}" in names
    assert f"nri_pyro/configs/presets/{DEFAULT_PRESET}.yaml" in names
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code = (
        "import nri_pyro, sys; from nri_pyro import load_preset; "
        "from nri_pyro.api import resolve_specs; "
        "assert 'site' in nri_pyro.__file__, nri_pyro.__file__; "
        "print(load_preset('kuramoto10-paper').describe()); "
        "print(resolve_specs('nri_dirichlet', 'cnn')[0]['prior']['name'])"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run([sys.executable, "-c", code], cwd=outside, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "kuramoto with 10 objects" in result.stdout and "dirichlet" in result.stdout


def test_kuramoto_presets_read_the_papers_three_features_in_fit_and_afterwards(tmp_path):
    preset = load_preset(_tiny_preset(tmp_path, "kuramoto5"))
    assert preset.data["features"] == ["dphi_dt", "sin_phi", "omega"]
    assert "features dphi_dt, sin_phi, omega" in preset.describe()
    splits = simulate_preset(preset)
    assert splits["train"].num_features == 4  # the generator's layout is unchanged
    nri = NRI(preset=preset).fit(splits["train"], splits["valid"], out=tmp_path / "run")
    assert nri.data_info["num_features"] == 3 and nri.model.num_features == 3
    test = splits["test"]
    three = test.trajectories[..., [0, 1, 3]]  # the same three features, already cut
    loaded = NRI.load(tmp_path / "run")
    assert torch.allclose(loaded.infer_edges(test), nri.infer_edges(test))
    assert torch.allclose(loaded.infer_edges(three), nri.infer_edges(test))
    assert nri.predict(test, steps=2).shape[-1] == 3
    with pytest.raises(ValueError, match=r"reads the features dphi_dt.*have 2 features"):
        loaded.infer_edges(test.trajectories[..., :2])


def test_a_preset_takes_data_holding_its_features_by_name_and_refuses_others():
    kuramoto5 = load_preset("kuramoto5")  # reads dphi_dt, sin_phi, omega
    four = simulate("kuramoto", 2, 5, num_frames=12)
    kuramoto5.check_data(four.select_features([0, 1, 3]))  # exactly its three
    kuramoto5.check_data(four.select_features([3, 2, 1, 0]))  # all four, in another order
    with pytest.raises(ValueError, match=r"preset kuramoto5 is for kuramoto with 5 objects and "
                       r"the features dphi_dt, sin_phi, omega, but the data have the features "
                       r"dphi_dt, sin_phi, phase \(no omega\)"):  # fmt: skip
        kuramoto5.check_data(four.select_features([0, 1, 2]))


def test_unknown_or_repeated_features_are_refused_naming_the_systems_features(tmp_path):
    for features, message in (
        (["dphi_dt", "cos_phi"], "no feature.*'cos_phi'.*its features: dphi_dt, sin_phi"),
        (["omega", "omega"], "distinct names"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(json.dumps({"base": "kuramoto5", "data": {"features": features}}))
        with pytest.raises(ValueError, match=message):
            load_preset(path)
    custom = TrajectoryDataset.from_arrays(torch.zeros(4, 3, 16, 4))
    with pytest.raises(ValueError, match="system 'custom', whose features have no names"):
        NRI(features=["dphi_dt", "sin_phi"]).fit(custom)


def test_a_spec_file_may_name_a_base_and_hold_only_its_changes(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: nri_sparse\nprior: {no_edge: 0.8}\ndecoder: {hidden: 32}\n")
    model, _, _ = resolve_specs(mine)
    sparse, _, _ = resolve_specs("nri_sparse")
    assert model["prior"] == {**sparse["prior"], "no_edge": 0.8}
    assert model["decoder"] == {**sparse["decoder"], "hidden": 32}
    # A sibling file is found before a shipped spec of that name; a loop is an error.
    (tmp_path / "second.yaml").write_text("base: mine.yaml\ngraph: {symmetric: true}\n")
    assert resolve_specs(tmp_path / "second.yaml")[0]["graph"]["symmetric"] is True
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ValueError, match="names itself as a base"):
        resolve_specs(tmp_path / "loop.yaml")
    # The shipped specs hold only their difference from nri.yaml.
    for name in ("nri_sparse", "nri_symmetric", "nri_dirichlet", "nri_shared", "nri_rnn"):
        text = (ROOT / "models" / f"{name}.yaml").read_text()
        assert "base: nri" in text and "likelihood" not in text, name


def test_every_shipped_preset_and_spec_resolves_as_recorded():
    """The resolved settings of every shipped preset and spec file, against a record made
    before the spec pipeline was rebuilt (tests/data/resolved_configs.json): moving code
    between modules must not change what a run does. A deliberate change of a shipped file
    updates the record: ``python tests/test_presets.py > tests/data/resolved_configs.json``."""
    recorded = json.loads((Path(__file__).parent / "data" / "resolved_configs.json").read_text())
    assert json.loads(json.dumps(resolved_configs(), sort_keys=True)) == recorded


def resolved_configs() -> dict:
    """Every shipped preset's sections and every shipped spec, resolved."""
    out: dict = {"presets": {}, "models": {}, "guides": {}}
    for name in preset_names():
        resolved = load_preset(name).to_dict()
        out["presets"][name] = {k: resolved[k] for k in ("data", "model", "guide", "train")}
    for name in spec_names("model"):
        out["models"][name] = resolve_specs(name, None)[0]
    for name in spec_names("guide"):
        out["guides"][name] = resolve_specs(None, name)[1]
    return out


if __name__ == "__main__":
    print(json.dumps(resolved_configs(), indent=1, sort_keys=True))
