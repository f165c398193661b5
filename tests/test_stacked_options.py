"""Every config group's every option, composed and run under hydra/launcher=stacked at least once
(in process, tiny): a stack's members each end `completed` with the option they asked for in
their own record, and the options that change a model's shape or its batch loop make stacks of
their own. Some 20 small sweeps (about a minute): marked slow, so they run in CI's second
phase beside the end-to-end tests and the default run stays short."""

from __future__ import annotations

import json

import pytest

from helpers import vae_train_in_process

pytestmark = pytest.mark.slow

TINY = ("epochs=2", "eval.iw_samples=0", "pictures=false", "device.threads=1", "data=digits")
TINY += ("data.limit=300", "hydra/launcher=stacked")


def records(sweep) -> list[dict]:
    folders = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((p / "history.json").read_text()) for p in folders]


# (sweep overrides, the config key each job's record shows, the stacks expected)
OPTIONS = {
    "optimizer": (["optimizer=adam,adamw,sgd"], "optimizer.name", [3]),
    "scheduler": (["scheduler=plateau,cosine,step,none"], "scheduler.name", [4]),
    "annealing": (
        ["annealing=constant,linear,cyclical,sigmoid", "annealing.free_bits=0,0.1"],
        "annealing.name",
        [8],
    ),
    "reduction": (["reduction=sum,mean"], "reduction.name", [1, 1]),
    "device": (["device=auto,cpu"], "device.name", [1, 1]),
    "model": (["model=mlp,conv"], "model.name", [1, 1]),
    "likelihood bernoulli": (
        ["likelihood=bernoulli", "likelihood.binarize=none,static,dynamic", "seed=0,1"],
        "likelihood.binarize",
        [2, 2, 2],
    ),
    "likelihood gaussian": (
        ["likelihood=gaussian", "likelihood.variance=fixed,learned", "model=conv", "seed=0,1"],
        "likelihood.variance",
        [2, 2],
    ),
    "logger": (["logger=none,tensorboard"], "logger.name", [2]),
    "early stop and divergence": (
        ["early_stop.patience=0,1", "on_divergence=fail,stop", "lr=1e-3"],
        "on_divergence",
        [4],
    ),
}


def value(history: dict, dotted: str):
    node = history["config"]
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("group", list(OPTIONS))
def test_every_option_runs_stacked(group, tmp_path, monkeypatch, stacks):
    overrides, key, expected = OPTIONS[group]
    sweep = tmp_path / "sweep"
    code = vae_train_in_process(monkeypatch, "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep}")
    assert code == 0
    assert [len(stack) for stack in stacks] == expected
    done = records(sweep)
    assert [h["status"] for h in done] == ["completed"] * sum(expected)
    assert all(h["epoch"] == [1, 2] for h in done)
    (swept,) = [o for o in overrides if o.split("=")[0] == key] or [overrides[0]]
    asked = swept.split("=", 1)[1].split(",")
    assert sorted({str(value(h, key)).lower() for h in done}) == sorted(
        {a.lower() for a in asked}
    ), group


def test_mnist_and_fashion_mnist_run_stacked_from_local_files(tmp_path, monkeypatch, stacks):
    from test_data import write_idx

    write_idx(tmp_path / "mnist", n_train=40, n_test=20)
    write_idx(tmp_path / "fashion", n_train=40, n_test=20, seed=1)
    for name, folder in (("mnist", "mnist"), ("fashion_mnist", "fashion")):
        sweep = tmp_path / f"sweep-{name}"
        args = ("-m", *TINY, f"data={name}", f"data.root={tmp_path / folder}", "data.limit=null")
        args += ("batch_size=16", "lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}")
        assert vae_train_in_process(monkeypatch, *args) == 0
        done = records(sweep)
        assert [h["data_name"] for h in done] == [done[0]["data_name"]] * 2
        assert [h["status"] for h in done] == ["completed"] * 2 and done[0]["n_train"] == 40
    assert [len(stack) for stack in stacks] == [2, 2]


@pytest.mark.parametrize(
    "preset, extra, jobs",
    [
        ("lr_sweep", ["seeds=1"], 4),
        ("optimizer_comparison", ["seeds=1"], 9),
        ("optuna_search", ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=4"], 4),
    ],
)
def test_every_experiment_preset_runs_stacked(preset, extra, jobs, tmp_path, monkeypatch, stacks):
    sweep = tmp_path / "sweep"
    args = ("-m", *TINY, f"experiment={preset}", *extra, f"hydra.sweep.dir={sweep}")
    assert vae_train_in_process(monkeypatch, *args) == 0
    assert sum(map(len, stacks)) == jobs
    if preset != "optuna_search":  # its trials' batch_size is searched: several stacks
        assert [len(stack) for stack in stacks] == [jobs]
    assert [h["status"] for h in records(sweep)] == ["completed"] * jobs
