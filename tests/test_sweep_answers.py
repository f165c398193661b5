"""A sweep's answer against what it swept: loss_vs_<key>.png, typed setting values, the cautions,
curves not flattened by one far-off setting, and `vae-plot SWEEP_DIR`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from vae_runner.cli.plot import main as vae_plot
from vae_runner.report.console import make_console
from vae_runner.sweep.rundirs import collect_jobs
from vae_runner.sweep.summary import build_summary, summarize, write_summary


def _run(
    run_dir: Path,
    overrides: list[str],
    losses: list[float],
    status: str = "completed",
    kl_weight: list[float] | None = None,
    beta: float = 1.0,
) -> None:
    """A job's record as the runner writes it (the keys the summary reads). The best epoch is
    the lowest loss's."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    n = len(losses)
    history = {
        "status": status,
        "epoch": list(range(1, n + 1)),
        "test_loss": losses,
        "train_loss": losses,
        "test_kl": [1.0] * n,
        "kl_weight": kl_weight if kl_weight is not None else [beta] * n,
        "active_units": [3] * n,
        "epoch_seconds": [0.25] * n,
        "best_test_loss": min(losses),
        "best_epoch": losses.index(min(losses)) + 1,
        "config": {"epochs": n, "beta": beta},
    }
    (run_dir / "history.json").write_text(json.dumps(history))


def _summary(sweep: Path) -> dict:
    jobs = collect_jobs([sweep])
    return write_summary(build_summary(jobs, [sweep], sweep_over=True), jobs, sweep)


def lr_sweep(sweep: Path) -> dict:
    """lr over four decades, three seeds each (best loss at epoch 2 of 3: not still improving);
    lr=0.1's third seed diverged."""
    best = {
        "lr=1e-2": [25.6, 25.7, 25.8],
        "lr=1e-3": [26.3, 26.4, 26.5],
        "lr=1e-4": [34.1, 34.2, 34.4],
        "lr=0.1": [27.0, 27.2],
    }
    number = 0
    for setting, values in best.items():
        for seed, value in enumerate(values):
            _run(sweep / str(number), [setting, "epochs=3", f"seed={seed}"], [50, value, value + 1])
            number += 1
    _run(sweep / str(number), ["lr=0.1", "epochs=3", "seed=2"], [60.0], status="diverged")
    return _summary(sweep)


# --------------------------------------------------------------------------- the loss_vs plot
def test_the_x_axis_is_logarithmic_only_for_positive_numbers_spanning_100x():
    from vae_runner.sweep.against import axis_kind, plot_file

    assert axis_kind([1e-2, 1e-3, 1e-4]) == "log"
    assert axis_kind([1, 100]) == "log"  # exactly 100x
    assert axis_kind([1e-3, 5e-2]) == "linear"  # 50x
    assert axis_kind([0.0, 0.1, 10.0]) == "linear"  # 0 has no place on a log axis
    assert axis_kind([-1.0, 100.0]) == "linear"
    assert axis_kind(["adam", "sgd"]) == axis_kind([True, False]) == "category"
    assert axis_kind([1e-3, "(default)"]) == "category"  # a setting that did not set the key
    assert plot_file("optimizer.weight_decay") == "loss_vs_optimizer.weight_decay.png"
    assert plot_file("+model/x") == "loss_vs__model_x.png"


def test_an_lr_sweep_draws_its_best_loss_against_lr(tmp_path):
    from vae_runner.sweep.against import loss_vs

    summary = lr_sweep(tmp_path)
    assert summary["loss_vs"] == [
        {"key": "lr", "file": "loss_vs_lr.png", "x": "log", "measure": "best_test_loss"}
    ]
    data = loss_vs(summary, "lr")
    (series,) = data["series"]  # one key varies: one series
    points = {p["x"]: p for p in series["points"]}
    assert [p["x"] for p in series["points"]] == [1e-4, 1e-3, 1e-2, 0.1]  # along the axis
    assert sorted(points[1e-2]["seeds"]) == [25.6, 25.7, 25.8]
    assert points[1e-2]["mean"] == pytest.approx(25.7)
    half = 4.302652729911275 * 0.1 / 3**0.5  # t(0.975, 2) * sd / sqrt(3), sd = 0.1
    assert points[1e-2]["ci95"] == pytest.approx([25.7 - half, 25.7 + half])
    assert points[1e-2]["winner"] and not any(p["winner"] for x, p in points.items() if x != 1e-2)
    # the diverged seed is not averaged, and not dropped: it is drawn at the top
    assert sorted(points[0.1]["seeds"]) == [27.0, 27.2] and points[0.1]["off"] == ["diverged"]
    with Image.open(tmp_path / "loss_vs_lr.png") as image:
        drawn = image.text["Description"].splitlines()
    assert [line.split("\t")[0] for line in drawn] == ["lr=1e-4", "lr=1e-3", "lr=1e-2", "lr=0.1"]


def test_a_tie_marks_the_best_and_the_settings_level_with_it_and_names_no_winner(tmp_path):
    """A tied verdict names no winner; the plot marks the best (rank 1) with those tied with
    it, so that it never shows a star on every level setting but the best."""
    from vae_runner.sweep.against import loss_vs

    best = {"lr=1e-2": [25.6, 26.4], "lr=1e-3": [25.9, 26.5], "lr=1e-4": [34.1, 34.2]}
    number = 0
    for setting, values in best.items():
        for seed, value in enumerate(values):
            _run(tmp_path / str(number), [setting, "epochs=3", f"seed={seed}"], [50, value, 60])
            number += 1
    summary = _summary(tmp_path)
    assert summary["verdict"]["kind"] == "tied" and summary["verdict"]["tied"] == ["lr=1e-3"]
    (series,) = loss_vs(summary, "lr")["series"]
    marked = {p["label"]: (p["winner"], p["tied"]) for p in series["points"]}
    assert marked == {
        "lr=1e-4": (False, False),
        "lr=1e-3": (False, True),
        "lr=1e-2": (False, True),  # the best: level with lr=1e-3, no winner
    }


def test_a_categorical_setting_gets_its_points_per_category(tmp_path):
    from vae_runner.sweep.against import loss_vs

    for number, (optimizer, best) in enumerate(
        [("adam", 26.0), ("sgd", 40.0), ("adam", 26.2), ("sgd", 41.0)]
    ):
        seed = f"seed={number // 2}"
        _run(tmp_path / str(number), [f"optimizer={optimizer}", seed], [50, best, best + 1])
    summary = _summary(tmp_path)
    assert [p["key"] for p in summary["loss_vs"]] == ["optimizer"]
    data = loss_vs(summary, "optimizer")
    assert data["x"] == "category" and data["categories"] == ["adam", "sgd"]  # ranked order
    (series,) = data["series"]
    assert [(p["x"], sorted(p["seeds"])) for p in series["points"]] == [
        (0, [26.0, 26.2]),
        (1, [40.0, 41.0]),
    ]
    assert (tmp_path / "loss_vs_optimizer.png").is_file()


def test_two_swept_keys_draw_one_plot_each_with_the_other_as_series(tmp_path):
    from vae_runner.sweep.against import loss_vs

    number = 0
    for optimizer in ("adam", "sgd"):
        for lr in ("1e-2", "1e-3", "1e-4"):
            best = 30.0 + number
            _run(tmp_path / str(number), [f"optimizer={optimizer}", f"lr={lr}"], [50, best, 60])
            number += 1
    summary = _summary(tmp_path)
    assert [(p["key"], p["x"]) for p in summary["loss_vs"]] == [
        ("optimizer", "category"),
        ("lr", "log"),
    ]
    by_lr = loss_vs(summary, "lr")
    assert [s["name"] for s in by_lr["series"]] == ["optimizer=adam", "optimizer=sgd"]
    sgd = by_lr["series"][1]["points"]
    assert [(p["x"], p["seeds"]) for p in sgd] == [(1e-4, [35.0]), (1e-3, [34.0]), (1e-2, [33.0])]
    assert (tmp_path / "loss_vs_lr.png").is_file() and (
        tmp_path / "loss_vs_optimizer.png"
    ).is_file()


# --------------------------------------------------------------------------- typed values
def test_each_setting_records_its_swept_values_typed(tmp_path):
    settings = [
        ["lr=1e-2", "optimizer=adamw", "batch_size=64", "+flag=true", "epochs=3"],
        ["lr=1e-3", "optimizer=sgd", "batch_size=128", "+flag=false", "epochs=3"],
    ]
    for number, overrides in enumerate(settings):
        _run(tmp_path / str(number), [*overrides, "seed=0"], [50.0 + number, 40.0 + number])
    _summary(tmp_path)
    written = json.loads((tmp_path / "sweep_summary.json").read_text())
    values = {s["label"]: s["values"] for s in written["settings"]}
    # epochs (the same everywhere) and the seed are not what tells the settings apart
    assert values == {
        "batch_size=64 +flag=true lr=1e-2 optimizer=adamw": {
            "lr": 0.01,
            "optimizer": "adamw",
            "batch_size": 64,
            "flag": True,
        },
        "batch_size=128 +flag=false lr=1e-3 optimizer=sgd": {
            "lr": 0.001,
            "optimizer": "sgd",
            "batch_size": 128,
            "flag": False,
        },
    }
    first = written["settings"][0]["values"]
    assert [type(first[k]) for k in ("lr", "batch_size", "flag")] == [float, int, bool]


# --------------------------------------------------------------------------- the curves
def test_one_far_off_setting_does_not_flatten_the_leaders_curves():
    from vae_runner.report.plots import focus_limits

    # per epoch: two leaders 2 nats apart at the end, one setting at 10x their loss
    leader = [200.0, 120.0, 105.0, 100.0]
    runner_up = [210.0, 125.0, 107.0, 102.0]
    far_off = [2000.0, 1500.0, 1200.0, 1000.0]
    low, high = focus_limits([leader, runner_up], [leader, runner_up, far_off])
    assert low <= 100.0 and high >= 125.0  # the leaders after their first epoch: all visible
    assert high < 1000.0  # the far-off setting is cut off
    assert (102.0 - 100.0) / (high - low) > 0.05  # their final gap: over 5% of the axis
    # today's axis (min to max of every value) gave that gap 0.1% of its height
    assert (102.0 - 100.0) / (2000.0 - 100.0) < 0.002
    # the whole range is under twice the leaders' (with margins): the axis is left as it was
    start = [140.0, 120.0, 105.0, 100.0]
    assert focus_limits([start, runner_up[1:]], [start, runner_up[1:], [130.0, 110.0]]) is None
    assert focus_limits([[float("nan")]], [[1.0]]) is None


def test_the_sweep_curves_say_which_panels_were_fitted_to_the_leaders(tmp_path):
    for number, (setting, scale) in enumerate(
        [("lr=1e-2", 1.0), ("lr=1e-3", 1.02), ("lr=1e-5", 10)]
    ):
        losses = [scale * v for v in (200.0, 120.0, 105.0, 100.0)]
        _run(tmp_path / str(number), [setting], losses)
    _summary(tmp_path)
    with Image.open(tmp_path / "curves.png") as image:
        assert image.text["Clipped"].split() == ["test_loss", "train_loss"]


# --------------------------------------------------------------------------- cautions
def _improving_sweep(sweep: Path, last_best: int, n: int = 3, **kl) -> dict:
    """n jobs; the first `last_best` still falling at their last epoch."""
    for number in range(n):
        losses = [50.0, 40.0, 30.0] if number < last_best else [50.0, 30.0, 40.0]
        _run(sweep / str(number), [f"lr=1e-{number + 2}"], losses, **kl)
    return build_summary(collect_jobs([sweep]), [sweep], sweep_over=True)


def test_a_sweep_still_improving_at_its_end_is_cautioned(tmp_path):
    (said,) = _improving_sweep(tmp_path / "a", last_best=2)["cautions"]
    assert said == (
        "2 of 3 completed jobs had their best epoch at their last (epoch 3): still improving at "
        "the end, so the ranking measures speed, not the end point; run longer (more epochs)."
    )
    assert _improving_sweep(tmp_path / "b", last_best=1)["cautions"] == []  # 1 of 3: not most


def test_a_kl_weight_that_never_reached_beta_is_cautioned(tmp_path):
    ramp = {"kl_weight": [0.1, 0.2, 0.3], "beta": 1.0}  # linear warm-up of 10 epochs, 3 run
    (said,) = _improving_sweep(tmp_path / "a", last_best=0, **ramp)["cautions"]
    assert said.startswith(
        "the KL weight never reached beta in 3 of 3 jobs (it rose to 0.3 × beta, beta=1)"
    )
    assert "run more epochs than the annealing's warm-up" in said
    sigmoid = {"kl_weight": [2.0, 3.5, 3.97], "beta": 4.0}  # 99.25% of beta: reached
    assert _improving_sweep(tmp_path / "b", last_best=0, **sigmoid)["cautions"] == []


def test_the_cautions_are_printed_one_line_each(tmp_path):
    _improving_sweep(tmp_path, last_best=3, kl_weight=[0.1, 0.2, 0.3])
    out = io.StringIO()
    summary = summarize([tmp_path], tmp_path, sweep_over=True, console=make_console(out))
    lines = [line for line in out.getvalue().splitlines() if line.startswith("Caution:")]
    assert len(summary["cautions"]) == 2
    assert lines[:2] == [f"Caution: {c}" for c in summary["cautions"]]
    assert lines[2].startswith("Caution: ranked on the test set")  # as before
    written = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert written["cautions"] == summary["cautions"]


# --------------------------------------------------------------------------- vae-plot
def test_vae_plot_redraws_a_sweeps_plots_and_leaves_its_summary_alone(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    lr_sweep(sweep)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    summary_bytes = (sweep / "sweep_summary.json").read_bytes()
    for name in ("curves.png", "loss_vs_lr.png"):
        (sweep / name).unlink()
    with pytest.raises(SystemExit) as done:
        vae_plot([str(sweep)])
    assert done.value.code == 0
    assert capsys.readouterr().out.splitlines() == [
        str(sweep / "curves.png"),
        str(sweep / "loss_vs_lr.png"),
    ]
    assert (sweep / "curves.png").is_file() and (sweep / "loss_vs_lr.png").is_file()
    assert (sweep / "sweep_summary.json").read_bytes() == summary_bytes

    # a folder that is neither a run's nor a sweep's: nothing is written into it
    loose = tmp_path / "loose"
    _run(loose / "a", ["lr=1e-2"], [2.0, 1.0])
    with pytest.raises(SystemExit) as done:
        vae_plot([str(loose)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "neither a run directory" in err and "vae-summary DIR... --out OUT" in err
    assert sorted(p.name for p in loose.iterdir()) == ["a"]
