"""The config search path (issue 23): a `-cd DIR` file Hydra passes over is refused, not
silently ignored; `--help` lists the presets of `hydra.searchpath`; `--cfg hydra --resolve`.

In process (`vae_train_in_process`): each goes through vae-train's main as a user's command does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vae_runner.config.errors import ConfigError
from vae_runner.config.search_path import refuse_shadowed, shadowed

from helpers import compose_config, vae_train_in_process

SMALL = ("epochs=1", "eval.iw_samples=0", "pictures=false")


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_config_dir_config_yaml_that_hydra_passes_over_is_refused(tmp_path, monkeypatch, capsys):
    """`-cd DIR` appends DIR after vae-train's own configs: DIR/config.yaml (lr: 0.01) is never
    read, and the run would train at lr=1e-3 without a word. It is refused, with the way out."""
    mine, run_dir = tmp_path / "mine", tmp_path / "run"
    mine.mkdir()
    (mine / "config.yaml").write_text("lr: 0.01\n")
    code = vae_train_in_process(monkeypatch, "-cd", str(mine), f"hydra.run.dir={run_dir}", *SMALL)
    assert code == 2
    line = error_line(capsys)
    assert line.startswith(f"Error: {mine}/config.yaml is not read: Hydra takes config.yaml ")
    assert line.endswith(
        "rename it (e.g. mine.yaml, starting with `defaults: [config, _self_]`) and run "
        f"vae-train -cd {mine} -cn mine"
    )
    assert not run_dir.exists()


def test_the_named_config_the_refusal_suggests_takes_effect(tmp_path, monkeypatch):
    mine, run_dir = tmp_path / "mine", tmp_path / "run"
    mine.mkdir()
    (mine / "config.yaml").write_text("lr: 0.01\n")  # left there: -cn mine does not read it
    (mine / "mine.yaml").write_text("defaults: [config, _self_]\nlr: 0.01\n")
    args = ("-cd", str(mine), "-cn", "mine", f"hydra.run.dir={run_dir}", *SMALL)
    assert vae_train_in_process(monkeypatch, *args) == 0
    assert json.loads((run_dir / "history.json").read_text())["config"]["lr"] == 0.01


def test_a_search_path_option_file_that_hydra_passes_over_is_refused(tmp_path):
    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "adam.yaml").write_text("name: adam\nbetas: [0.5, 0.9]\n")
    cfg = compose_config(f"hydra.searchpath=[file://{tmp_path}]", hydra=True)
    with pytest.raises(ConfigError) as refused:
        refuse_shadowed(cfg.hydra)
    assert str(refused.value).startswith(
        f"{tmp_path}/optimizer/adam.yaml is not read: Hydra takes optimizer=adam from "
    )
    assert str(refused.value).endswith(
        "rename yours (e.g. adam_mine.yaml) and choose it with optimizer=adam_mine"
    )
    refuse_shadowed(compose_config("optimizer=sgd", hydra=True).hydra)  # adam is not chosen


def test_only_the_first_of_different_files_is_read_and_a_copy_loses_nothing(tmp_path):
    first, second, copy = (tmp_path / name for name in ("first", "second", "copy"))
    for folder, text in ((first, "lr: 1e-3\n"), (second, "lr: 0.01\n"), (copy, "lr: 1e-3\n")):
        folder.mkdir()
        (folder / "config.yaml").write_text(text)
    sources = [{"schema": "file", "path": str(p)} for p in (first, copy, second)]
    sources.append({"schema": "structured", "path": ""})  # ConfigStore: nothing to read
    assert shadowed(sources, ["config.yaml", "none.yaml"]) == [
        ("config.yaml", f"{second}/config.yaml", f"{first}/config.yaml")
    ]


def test_help_lists_the_presets_of_hydra_searchpath(tmp_path, monkeypatch, capsys):
    """Hydra lists the groups of the search path it starts with; hydra.searchpath's after."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nlr: 0.0042\n")
    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "lion.yaml").write_text("name: adam\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert vae_train_in_process(monkeypatch, "--help", searchpath) == 0
    assert (
        f"\nOn hydra.searchpath (file://{tmp_path}):\nexperiment: mine\noptimizer: lion\n\n"
        in capsys.readouterr().out
    )


def test_help_without_a_search_path_is_hydras_listing(monkeypatch, capsys):
    assert vae_train_in_process(monkeypatch, "--help") == 0
    out = capsys.readouterr().out
    assert "On hydra.searchpath" not in out
    assert "scheduler: cosine, none, plateau, step\n\n\nLaunchers (with -m)" in out


@pytest.mark.parametrize("resume", [None, "/tmp/some/run"])
def test_cfg_hydra_resolve_prints_where_the_run_goes(monkeypatch, capsys, resume):
    """`--cfg hydra` shows Hydra's node without the run's settings; it still resolves, and
    says the resumed run's own folder for resume=DIR."""
    args = ["--cfg", "hydra", "--resolve"] + ([f"resume={resume}"] if resume else [])
    assert vae_train_in_process(monkeypatch, *args) == 0
    shown = yaml.safe_load(capsys.readouterr().out)["hydra"]
    if resume:
        assert shown["run"]["dir"] == resume and shown["output_subdir"] is None
    else:
        assert Path(shown["run"]["dir"]).parts[0] == "outputs"
        assert shown["output_subdir"] == ".hydra"
