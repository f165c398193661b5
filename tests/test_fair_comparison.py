"""A crossed sweep (optimizer x lr, with seeds): each optimizer at its own best lr, chosen on
validation, compared on the test loss there (vae_runner/sweep/fair.py)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from vae_runner.report.console import print_sweep_summary
from vae_runner.sweep.fair import crossed_keys
from vae_runner.sweep.rundirs import collect_jobs
from vae_runner.sweep.summary import build_summary, write_summary

from helpers import vae_train_in_process

# t = 1.0 / sqrt(0.1²/3 + 0.1²/3) = 12.247 with Welch's df = 4: two-sided p = 0.000255
P_ONE_NAT_SD_01_N3 = 0.0002552


def _job(run_dir: Path, overrides: list[str], status: str, val: float | None, test: float) -> None:
    """A finished job of two epochs whose best epoch (the second) has these losses."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    history = {
        "status": status,
        "epoch": [1, 2],
        "train_loss": [test + 2, test + 1],
        "test_loss": [test + 1, test],
        "test_kl": [1.0, 1.0],
        "active_units": [3, 3],
        "epoch_seconds": [0.25, 0.25],
        "best_epoch": 2,
        "best_test_loss": test if status == "completed" else None,
        "config": {"epochs": 2},
    }
    if val is not None:
        history.update(val_loss=[val + 1, val], best_val_loss=val, selected_on="val")
    (run_dir / "history.json").write_text(json.dumps(history))


def crossed_sweep(tmp_path: Path, results: dict[tuple[str, str], list[tuple]]) -> dict:
    """One job per (setting, seed): `results` maps (optimizer, lr) to its seeds' (val, test)
    best losses, or (val, test, status); returns the summary, written into tmp_path."""
    number = 0
    for (optimizer, lr), seeds in results.items():
        for seed, (val, test, *status) in enumerate(seeds):
            overrides = [f"optimizer={optimizer}", f"lr={lr}", f"seed={seed}"]
            _job(tmp_path / str(number), overrides, (status or ["completed"])[0], val, test)
            number += 1
    jobs = collect_jobs([tmp_path])
    return write_summary(build_summary(jobs, [tmp_path], sweep_over=True), jobs, tmp_path)


def _seeds(val: float, test: float) -> list[tuple[float, float]]:
    """Three seeds 0.1 apart around (val, test): sd 0.1 on both."""
    return [(val - 0.1, test - 0.1), (val, test), (val + 0.1, test + 0.1)]


def _by_category(summary: dict) -> dict[str, dict]:
    return {c["category"]: c for c in summary["fair_comparison"]["categories"]}


# The case: at a shared lr=1e-3 Adam wins, but SGD at its own best lr (1e-2) beats Adam
# at Adam's own best lr (1e-3).
SGD_TUNED = {
    ("adam", "0.01"): _seeds(25.2, 25.7),
    ("adam", "0.001"): _seeds(24.1, 24.6),  # adam's best on validation
    ("sgd", "0.01"): _seeds(23.1, 23.6),  # sgd's best on validation
    ("sgd", "0.001"): _seeds(30.5, 31.0),  # "SGD is worse" at adam's lr
}


def test_each_optimizer_is_compared_at_its_own_best_lr(tmp_path):
    summary = crossed_sweep(tmp_path, SGD_TUNED)
    fair = summary["fair_comparison"]
    assert (fair["category"], fair["numeric"]) == ("optimizer", ["lr"])
    assert (fair["chosen_on"], fair["compared_on"], fair["optimistic"]) == (
        "best_val_loss",
        "best_test_loss",
        False,
    )
    sgd, adam = _by_category(summary)["sgd"], _by_category(summary)["adam"]
    assert sgd["chosen"] == {"lr": 0.01} and adam["chosen"] == {"lr": 0.001}
    assert sgd["chosen_mean"] == pytest.approx(23.1) and adam["chosen_mean"] == pytest.approx(24.1)
    # compared on the test loss at the chosen lr: mean, sd, n and Student's interval over seeds
    test = sgd["measures"]["best_test_loss"]
    assert (test["n"], test["mean"], test["sd"]) == (3, pytest.approx(23.6), pytest.approx(0.1))
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert test["ci95"] == pytest.approx([23.6 - half, 23.6 + half])
    assert (sgd["rank"], sgd["winner"], adam["rank"], adam["winner"]) == (1, True, 2, False)
    assert adam["p_vs_best"] == pytest.approx(P_ONE_NAT_SD_01_N3, rel=1e-3)
    assert [t["values"]["lr"] for t in adam["tried"]] == [0.001, 0.01]  # by lr, each tried
    said = fair["verdict"]
    assert said["kind"] == "winner" and said["winner"] == "optimizer=sgd lr=0.01"
    assert said["sentence"].startswith(
        "Each optimizer at its own best lr (chosen on the mean best validation loss, compared on"
        " the test loss at each seed's best-validation epoch): optimizer=sgd lr=0.01 is best "
        "(mean best test loss 23.6 ± 0.1, n=3), ahead of optimizer=adam lr=0.001 by 1 nats,"
    )
    # the lr grid had two values, so both choices lie on its edge: the sentence says so
    assert said["sentence"].endswith(
        "At the edge of the lr tried: optimizer=sgd lr=0.01, optimizer=adam lr=0.001."
    )


def test_the_comparison_uses_the_test_loss_not_the_validation_loss_that_chose(tmp_path):
    # sgd's chosen lr is 1 nat ahead on validation, which chose it; on the test set the two
    # chosen settings are equal (the same values, from other seeds), and that is what the
    # comparison reports
    results = {**SGD_TUNED, ("sgd", "0.01"): _seeds(23.1, 24.6)[::-1]}
    fair = crossed_sweep(tmp_path, results)["fair_comparison"]
    said = fair["verdict"]
    assert said["kind"] == "tied" and said["winner"] is None
    assert "p=1 ≥ 0.05" in said["sentence"]
    assert "Behind" not in said["sentence"]  # nobody is: the two are tied


def test_a_tie_also_names_who_is_behind_it(tmp_path):
    # adam's and adamw's chosen lrs tie on test (same values, other seeds); sgd's is 1 nat behind
    results = {**SGD_TUNED, ("adamw", "0.001"): _seeds(24.2, 24.6)[::-1]}
    results.update({("adamw", "0.01"): _seeds(25.3, 25.8), ("sgd", "0.01"): _seeds(23.0, 25.6)})
    said = crossed_sweep(tmp_path, results)["fair_comparison"]["verdict"]
    assert said["kind"] == "tied"
    assert said["sentence"].endswith(
        "Behind the best: optimizer=sgd lr=0.01 by 1 nats (p=0.00026). "  # P_ONE_NAT_SD_01_N3
        "At the edge of the lr tried: optimizer=adam lr=0.001, optimizer=adamw lr=0.001, "
        "optimizer=sgd lr=0.01."  # in rank order
    )


def test_a_value_that_diverged_in_some_seed_is_not_chosen(tmp_path):
    lucky = [(20.0, 20.5), (20.1, 20.6), (float("nan"), 0.0, "diverged")]  # 2 of 3 completed
    summary = crossed_sweep(tmp_path, {**SGD_TUNED, ("sgd", "0.1"): lucky})
    sgd = _by_category(summary)["sgd"]
    assert sgd["chosen"] == {"lr": 0.01} and sgd["every_seed_completed"] is True
    assert [(t["values"]["lr"], t["n_completed"], t["n_jobs"]) for t in sgd["tried"]] == [
        (0.001, 3, 3),
        (0.01, 3, 3),
        (0.1, 2, 3),
    ]
    assert sgd["at_edge"] is False  # 0.01 lies inside 0.001..0.1


def test_without_a_validation_split_the_comparison_is_marked_optimistic(tmp_path):
    results = {key: [(None, test) for _, test in seeds] for key, seeds in SGD_TUNED.items()}
    summary = crossed_sweep(tmp_path, results)
    fair = summary["fair_comparison"]
    assert summary["ranked_on"] == "test"
    assert (fair["chosen_on"], fair["optimistic"]) == ("best_test_loss", True)
    assert _by_category(summary)["sgd"]["chosen"] == {"lr": 0.01}
    assert (
        "Optimistic: the test set chose each optimizer's lr; choose on a validation split with "
        "data.val_fraction=0.1." in fair["verdict"]["sentence"]
    )
    out = io.StringIO()
    print_sweep_summary(Console(file=out, width=300), summary, tmp_path)
    assert "Verdict: Each optimizer at its own best lr (chosen on the same test losses" in (
        out.getvalue()
    )  # never "Winner:" for a choice made on the test set


def test_the_table_the_csv_rows_and_the_sentence(tmp_path):
    summary = crossed_sweep(tmp_path, SGD_TUNED)
    out = io.StringIO()
    print_sweep_summary(Console(file=out, width=300), summary, tmp_path)
    text = out.getvalue()
    assert "each optimizer at its own best lr: chosen on mean best validation loss" in text
    lines = [line for line in text.splitlines() if "│ sgd " in line or "│ adam " in line]
    assert [line.split("│")[2].strip() for line in lines] == ["sgd", "adam"]
    assert [line.split("│")[3].strip() for line in lines] == ["0.01 (edge)", "0.001 (edge)"]
    assert f"Winner: {summary['fair_comparison']['verdict']['sentence']}" in text
    with open(tmp_path / "sweep_summary.csv", newline="") as f:
        fair_rows = [r for r in csv.DictReader(f) if r["row"] == "fair"]
    assert [(r["label"], r["setting"], r["rank"]) for r in fair_rows] == [
        ("optimizer=sgd lr=0.01", "lr=0.01 optimizer=sgd", "1"),
        ("optimizer=adam lr=0.001", "lr=0.001 optimizer=adam", "2"),
    ]
    assert float(fair_rows[0]["best_test_loss_mean"]) == pytest.approx(23.6)
    assert float(fair_rows[1]["p_vs_best"]) == pytest.approx(P_ONE_NAT_SD_01_N3, rel=1e-3)


@pytest.mark.parametrize(
    "settings, expected",
    [
        ([["optimizer=adam", "lr=0.1"], ["optimizer=sgd", "lr=0.1"]], None),  # no numeric varies
        ([["lr=0.1"], ["lr=0.01"]], None),  # no category
        (  # each optimizer at one lr only: nothing to choose
            [["optimizer=adam", "lr=0.001"], ["optimizer=sgd", "lr=0.01"]],
            None,
        ),
        (  # two categorical keys: which one to compare is unclear
            [
                [f"optimizer={o}", f"model={m}", f"lr={lr}"]
                for o in "ab"
                for m in "xy"
                for lr in "12"
            ],
            None,
        ),
        (
            [[f"optimizer={o}", f"lr={lr}", "epochs=3"] for o in "ab" for lr in ("0.1", "1e-2")],
            ("optimizer", ["lr"]),
        ),
        (  # two numeric keys: the chosen value is a pair
            [
                [f"optimizer={o}", f"lr={lr}", f"batch_size={b}"]
                for o in "ab"
                for lr in "12"
                for b in "34"
            ],
            ("optimizer", ["batch_size", "lr"]),
        ),
    ],
)
def test_a_crossed_sweep_is_one_category_key_beside_numeric_ones(settings, expected):
    from vae_runner.config.overrides import by_key
    from vae_runner.sweep.settings import setting_key

    assert crossed_keys([setting_key(by_key(s)) for s in settings]) == expected


def test_a_sweep_that_crosses_nothing_has_no_fair_comparison(tmp_path):
    results = {("adam", lr): _seeds(24.0 + i, 24.5 + i) for i, lr in enumerate(("0.01", "0.001"))}
    assert "fair_comparison" not in crossed_sweep(tmp_path, results)


def test_the_preset_runs_and_chooses_as_a_reference_loop_does(tmp_path, monkeypatch, capsys):
    """optimizer_comparison, shrunk to 2 optimizers x 2 lrs x 2 seeds of 2 epochs, in process:
    the choice and the comparison recomputed from the jobs' own history.json files."""
    from scipy import stats

    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    args = ("-m", "experiment=optimizer_comparison", "optimizer=adam,sgd", "lr=1e-2,1e-3")
    cheap = ("seeds=2", "epochs=2", "eval.iw_samples=0", "pictures=false")
    assert vae_train_in_process(monkeypatch, *args, *cheap, f"hydra.sweep.dir={sweep}") == 0
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    fair = summary["fair_comparison"]
    assert len(summary["jobs"]) == 8 and fair["optimistic"] is False
    # the reference: read every job's record, group by (optimizer, lr), choose, compare
    runs: dict[tuple[str, float], list[dict]] = {}
    for job in sweep.iterdir():
        if (job / "history.json").is_file():
            history = json.loads((job / "history.json").read_text())
            overrides = dict(
                o.split("=") for o in yaml.safe_load((job / ".hydra/overrides.yaml").read_text())
            )
            runs.setdefault((overrides["optimizer"], float(overrides["lr"])), []).append(history)
    chosen = {}
    for optimizer in ("adam", "sgd"):
        lrs = {lr: h for (o, lr), h in runs.items() if o == optimizer}
        best = min(lrs, key=lambda lr: sum(h["best_val_loss"] for h in lrs[lr]) / len(lrs[lr]))
        chosen[optimizer] = (best, [h["best_test_loss"] for h in lrs[best]])
    got = _by_category(summary)
    for optimizer, (lr, tests) in chosen.items():
        assert got[optimizer]["chosen"] == {"lr": lr}
        assert got[optimizer]["measures"]["best_test_loss"]["mean"] == pytest.approx(sum(tests) / 2)
    loser = next(c for c in fair["categories"] if c["rank"] == 2)
    a, b = (chosen[c["category"]][1] for c in sorted(fair["categories"], key=lambda c: c["rank"]))
    assert loser["p_vs_best"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(fair["verdict"]["sentence"].split()) in out
    assert "each optimizer at its own best lr: chosen on mean best validation loss" in out
