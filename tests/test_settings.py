"""A sweep's settings (jobs grouped over their seeds) and the verdict: the maths and the words."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from vae_runner.sweep.plan import SeedsConflict, expand_seeds
from vae_runner.sweep.rundirs import collect_jobs
from vae_runner.sweep.settings import spread, welch_p
from vae_runner.sweep.summary import build_summary, write_summary


def test_spread_is_the_mean_sd_and_students_95_percent_interval():
    s = spread([1.0, 2.0, 3.0, None, float("nan")])  # non-finite values are not averaged
    assert s["n"] == 3 and s["mean"] == 2.0 and s["sd"] == 1.0
    half = 4.302652729911275 / 3**0.5  # t(0.975, df=2) * sd / sqrt(n)
    assert s["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    assert spread([5.0]) == {"n": 1, "mean": 5.0, "sd": None, "ci95": None}
    assert spread([]) == {"n": 0, "mean": None, "sd": None, "ci95": None}


def test_welch_p_matches_the_textbook_value():
    # t = -3 / sqrt(1/3 + 1/3) = -3.674, Welch's df = 4: two-sided p = 0.0213
    assert welch_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.02131, abs=1e-4)
    assert welch_p([1.0], [2.0, 3.0]) is None  # no spread on one side: no test
    assert welch_p([2.0, 2.0], [2.0, 2.0]) == 1.0 and welch_p([2.0, 2.0], [3.0, 3.0]) == 0.0


def test_spread_and_welch_p_are_scipy_stats_values():
    """settings.py takes Student's t from scipy.special (scipy.stats' import is 0.5 s): its
    interval and p are held here against scipy.stats' own t.ppf and ttest_ind."""
    import random
    import warnings

    import numpy as np
    from scipy import stats

    rng = random.Random(7)
    for _ in range(300):
        n_a, n_b = rng.randint(2, 12), rng.randint(2, 12)
        scale_a, scale_b = 10 ** rng.uniform(-3, 1), 10 ** rng.uniform(-3, 1)
        a = [rng.gauss(24.0, scale_a) for _ in range(n_a)]
        b = [rng.gauss(24.0 + rng.uniform(-1, 1), scale_b) for _ in range(n_b)]
        expected = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        assert welch_p(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-15)
        s = spread(a)
        half = float(stats.t.ppf(0.975, n_a - 1)) * float(np.std(a, ddof=1)) / n_a**0.5
        assert s["ci95"][1] - s["mean"] == pytest.approx(half, rel=1e-12)
    # extreme scales (squares of 1e-160 underflow, scipy's own p is off there): the p of the
    # same samples at scale 1, t = -2 sqrt(2) with 2 degrees of freedom
    plain = float(stats.ttest_ind([1.0, 2.0], [3.0, 4.0], equal_var=False).pvalue)
    assert plain == pytest.approx(0.10557, abs=1e-5)
    for scale in (1e-160, 1e150):
        tiny = ([1 * scale, 2 * scale], [3 * scale, 4 * scale])
        assert welch_p(*tiny) == pytest.approx(plain, rel=1e-9)
    # one side without spread: scipy's p stands (it only warns)
    one_flat = ([24.0, 24.0, 24.0], [24.5, 24.9, 25.3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = float(stats.ttest_ind(*one_flat, equal_var=False).pvalue)
    assert welch_p(*one_flat) == pytest.approx(expected, rel=1e-12)


def _run(run_dir: Path, overrides: list[str], status: str, losses: list[float]) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    history = {
        "status": status,
        "epoch": list(range(1, len(losses) + 1)),
        "test_loss": losses,
        "train_loss": losses,
        "test_kl": [1.0] * len(losses),
        "active_units": [3] * len(losses),
        "epoch_seconds": [0.25] * len(losses),
        "best_test_loss": min(losses) if losses else None,
        "best_epoch": losses.index(min(losses)) + 1 if losses else None,
        "config": {"epochs": len(losses)},
        "final": {"test_nll_iw": min(losses) - 1} if status == "completed" else None,
    }
    (run_dir / "history.json").write_text(json.dumps(history))


def sweep_of(tmp_path: Path, results: dict[str, list[tuple[str, float]]]) -> dict:
    """A sweep directory with one job per (setting, seed): `results` maps a setting's override
    to its seeds' (status, best loss); returns its summary, written."""
    number = 0
    for setting, seeds in results.items():
        for seed, (status, best) in enumerate(seeds):
            losses = [best + 1.0, best] if status == "completed" else [best + 1.0]
            _run(tmp_path / str(number), [setting, f"seed={seed}"], status, losses)
            number += 1
    jobs = collect_jobs([tmp_path])
    return write_summary(build_summary(jobs, [tmp_path], sweep_over=True), jobs, tmp_path)


def test_a_lead_larger_than_the_noise_names_the_winner(tmp_path):
    summary = sweep_of(
        tmp_path,
        {
            "lr=0.001": [("completed", 244.1), ("completed", 244.3), ("completed", 244.5)],
            "lr=0.0001": [("completed", 245.2), ("completed", 245.4), ("completed", 245.6)],
        },
    )
    said = summary["verdict"]
    assert said["kind"] == "winner" and said["winner"] == "lr=0.001"
    assert said["sentence"].startswith(
        "lr=0.001 is best (mean best test loss 244.3 ± 0.2, n=3), ahead of lr=0.0001 by 1.1 nats,"
    )
    assert "p=0.0" in said["sentence"] and "Welch's two-sided t-test at 0.05" in said["sentence"]
    best, second = summary["settings"]
    assert best["winner"] and best["rank"] == 1 and not second["tied_with_best"]
    assert second["p_vs_best"] < 0.05
    assert summary["winner"]["setting"] == "lr=0.001" and summary["seeds_per_setting"] == 3
    assert best["measures"]["final_test_nll_iw"]["mean"] == pytest.approx(243.3)


def test_a_lead_within_the_noise_is_a_tie_and_names_no_winner(tmp_path):
    summary = sweep_of(
        tmp_path,
        {
            "lr=0.001": [("completed", 244.0), ("completed", 244.6), ("completed", 245.2)],
            "lr=0.0001": [("completed", 244.2), ("completed", 244.9), ("completed", 245.1)],
            "lr=0.01": [("completed", 250.0), ("completed", 250.1), ("completed", 250.2)],
        },
    )
    said = summary["verdict"]
    assert said["kind"] == "tied" and said["tied"] == ["lr=0.0001"] and said["winner"] is None
    assert said["sentence"].startswith("lr=0.001 and lr=0.0001 are tied within noise")
    assert summary["winner"] is None and not any(r["winner"] for r in summary["jobs"])
    ranked = [s["label"] for s in summary["settings"]]
    assert ranked == ["lr=0.001", "lr=0.0001", "lr=0.01"]
    assert [s["tied_with_best"] for s in summary["settings"]] == [False, True, False]
    drawn = summary["plot"]["lines"]  # one curve per setting, the tie marked
    assert drawn == ["lr=0.001 (n=3)", "= lr=0.0001 (n=3)", "lr=0.01 (n=3)"]


def test_failed_or_diverged_seeds_are_counted_never_averaged(tmp_path):
    summary = sweep_of(
        tmp_path,
        {
            "lr=0.01": [("completed", 240.0), ("diverged", 1e9), ("completed", 240.2)],
            "lr=0.001": [("completed", 250.0), ("completed", 250.2), ("completed", 250.4)],
        },
    )
    first = summary["settings"][0]
    assert first["label"] == "lr=0.01" and first["n_completed"] == 2 and first["n_jobs"] == 3
    assert first["counts"] == {"completed": 2, "diverged": 1}
    assert first["measures"]["best_test_loss"]["mean"] == pytest.approx(240.1)
    with open(tmp_path / "sweep_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["row"] == "setting" and rows[0]["status"] == "2 completed, 1 diverged"
    assert float(rows[0]["best_test_loss_mean"]) == pytest.approx(240.1)
    assert rows[0]["n_completed"] == "2" and rows[0]["n_jobs"] == "3"
    assert [r["row"] for r in rows] == ["setting", "setting"] + ["job"] * 6


def test_one_seed_per_setting_stays_as_before_and_says_no_spread_was_measured(tmp_path):
    summary = sweep_of(
        tmp_path, {"lr=0.001": [("completed", 244.0)], "lr=0.0001": [("completed", 245.0)]}
    )
    said = summary["verdict"]
    assert said["kind"] == "no spread" and said["winner"] == "lr=0.001"
    assert "no spread was measured (one seed per setting)" in said["sentence"]
    assert summary["jobs"][0]["winner"] and summary["winner"]["label"] == "lr=0.001"
    assert summary["plot"]["lines"][0].startswith("★ ")  # one line per job, as before


def test_settings_that_trained_identically_name_no_winner(tmp_path):
    summary = sweep_of(
        tmp_path,
        {"optimizer=adam": [("completed", 244.0)], "optimizer=adamw": [("completed", 244.0)]},
    )
    said = summary["verdict"]
    assert said["kind"] == "identical" and said["winner"] is None
    assert said["sentence"].startswith(
        "optimizer=adam and optimizer=adamw trained identically (every per-epoch value equal)"
    )
    assert summary["winner"] is None


def test_seeds_expands_to_a_seed_dimension():
    assert expand_seeds(["lr=1e-3,1e-4", "seeds=3"], None) == ["lr=1e-3,1e-4", "seed=range(3)"]
    assert expand_seeds(["lr=1e-3"], 3) == ["lr=1e-3", "seed=range(3)"]  # a preset's seeds
    assert expand_seeds(["lr=1e-3", "seed=7"], 3) == ["lr=1e-3", "seed=7"]  # seed= wins a preset's
    assert expand_seeds(["seeds=1"], 3) == []  # one seed: the configured seed
    assert expand_seeds(["seeds=null"], 3) == []
    # seeds=0 once ran one job with the configured seed: the typed rule holds here too
    for bad in ("0", "-1", "1001"):
        with pytest.raises(
            ValueError, match=f"seeds must be a count from 1 to 1000 \\(got {bad}\\)"
        ):
            expand_seeds([f"seeds={bad}"], None)
    with pytest.raises(SeedsConflict, match="seeds=3 runs seed=0..2 and seed=1,2 names seeds"):
        expand_seeds(["seeds=3", "seed=1,2"], None)


def test_collapsed_jobs_are_flagged_in_the_rows_and_counted_per_setting(tmp_path):
    summary = sweep_of(
        tmp_path,
        {
            "beta=30": [("completed", 300.0), ("completed", 301.0)],
            "beta=1": [("completed", 250.0)] * 2,
        },
    )
    for number in (0, 1):  # beta=30's seeds: no active unit left at their last epoch
        record = json.loads((tmp_path / str(number) / "history.json").read_text())
        record.update(active_units=[3, 0], active_units_burda=[3, 0])
        (tmp_path / str(number) / "history.json").write_text(json.dumps(record))
    jobs = collect_jobs([tmp_path])
    summary = build_summary(jobs, [tmp_path], sweep_over=True)
    assert {r["label"]: r["collapsed"] for r in summary["jobs"]} == {
        "beta=30 seed=0": True,
        "beta=30 seed=1": True,
        "beta=1 seed=0": False,
        "beta=1 seed=1": False,
    }
    assert {s["label"]: s["n_collapsed"] for s in summary["settings"]} == {
        "beta=1": 0,
        "beta=30": 2,
    }


def test_an_adamw_decay_that_rounds_to_nothing_is_warned():
    from vae_runner.training.config_warnings import config_warnings

    from helpers import typed_config

    (said,) = config_warnings(typed_config("optimizer=adamw", "optimizer.weight_decay=1e-5"))
    assert said.startswith("optimizer.weight_decay=1e-05 at lr=0.001: AdamW scales each weight")
    assert "trains bit for bit like Adam; use weight_decay >= 3e-05" in said
    assert config_warnings(typed_config("optimizer=adamw")) == []  # its own 1e-2 acts
    assert config_warnings(typed_config("optimizer=adamw", "optimizer.weight_decay=3e-5")) == []


# --------------------------------------------------------------------------- validation split
def test_the_validation_split_is_fixed_held_out_and_binarised_like_the_test_set():
    import torch

    from vae_runner.data.images import load_data

    from helpers import typed_config

    plain = load_data(typed_config("data=digits").data)
    cfg = typed_config("data=digits", "data.val_fraction=0.1", "seed=5")
    data = load_data(cfg.data)
    assert len(data.val) == round(len(plain.train) * 0.1) == 144
    assert len(data.train) + len(data.val) == len(plain.train)
    again = load_data(typed_config("data=digits", "data.val_fraction=0.1", "seed=9").data)
    assert torch.equal(data.val, again.val)  # the same images whatever the run's seed
    rows = {tuple(r.flatten().tolist()) for r in plain.train}
    assert all(tuple(v.flatten().tolist()) in rows for v in data.val)
    assert cfg.data.train_size() == len(data.train)  # what batch_size is checked against
    binary = load_data(
        *(lambda c: (c.data, c.likelihood))(
            typed_config("data=digits", "data.val_fraction=0.1", "likelihood.binarize=static")
        )
    )
    assert set(binary.val.unique().tolist()) <= {0, 16}


def test_a_run_with_a_validation_split_chooses_its_best_epoch_on_it(tmp_path, monkeypatch):
    from vae_runner.training import engine as engine_module
    from vae_runner.training.runner import run

    from helpers import typed_config

    watched = []
    real = engine_module.step_scheduler
    monkeypatch.setattr(
        engine_module, "step_scheduler", lambda s, loss: (watched.append(loss), real(s, loss))
    )
    cfg = typed_config("data=digits", "epochs=4", "data.val_fraction=0.2", "eval.iw_samples=0")
    from rich.console import Console

    with open(os.devnull, "w") as quiet:
        history = run(cfg, tmp_path / "run", Console(file=quiet))
    assert history["selected_on"] == "val" and len(history["val_loss"]) == 4
    best = min(range(4), key=lambda i: history["val_loss"][i])
    assert history["best_epoch"] == best + 1
    assert history["best_val_loss"] == history["val_loss"][best]
    assert history["best_test_loss"] == history["test_loss"][best]  # reported, not chosen on
    assert watched == history["val_loss"]  # ReduceLROnPlateau watched the validation loss
    from vae_runner.cli.job import _outcome

    assert _outcome(history)[1] == history["best_val_loss"]  # Optuna's objective


def test_a_sweep_whose_jobs_chose_on_validation_is_ranked_on_it(tmp_path):
    results = {"lr=0.001": [245.0, 245.2, 245.4], "lr=0.01": [244.0, 244.1, 244.2]}
    number = 0
    for setting, vals in results.items():
        for seed, val in enumerate(vals):
            _run(tmp_path / str(number), [setting, f"seed={seed}"], "completed", [val + 5, val + 4])
            record = json.loads((tmp_path / str(number) / "history.json").read_text())
            # validation says lr=0.001 (lower), the test set would say lr=0.01
            record.update(best_val_loss=val - (10 if setting == "lr=0.001" else 0))
            (tmp_path / str(number) / "history.json").write_text(json.dumps(record))
            number += 1
    jobs = collect_jobs([tmp_path])
    summary = build_summary(jobs, [tmp_path], sweep_over=True)
    assert summary["ranked_on"] == "val" and summary["verdict"]["winner"] == "lr=0.001"
    assert "mean best validation loss" in summary["verdict"]["sentence"]
    assert summary["jobs"][0]["setting"] == "lr=0.001"
