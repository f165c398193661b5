"""early_stop.patience and early_stop.min_delta: the rule, its keys, a run that stops, its
resume and requeue, a sweep's table. Expected stops come from `reference_stop`, a plain loop over
the losses of the same run trained without early stopping."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest
from rich.console import Console

from vae_runner.exit_codes import exit_code
from vae_runner.training import signals
from vae_runner.training.checkpoint import load_checkpoint
from vae_runner.training.early_stop import epochs_without_improvement, stops_early
from vae_runner.training.runner import run

from helpers import one_line, typed_config, vae_train_in_process

CHEAP = ("data=digits", "eval.iw_samples=0", "pictures=false")
ONE_THREAD = "device.threads=1"  # as vae-train's default on a small machine: fast when busy


@pytest.fixture(autouse=True)
def torch_threads_put_back():
    """A run with device.threads sets torch's threads for the process: put them back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_stop_request_left_over():
    yield
    signals._process["signum"] = None


def reference_stop(losses: list[float], patience: int, min_delta: float) -> int | None:
    """The epoch after which the rule ends a run whose selected loss went `losses`, written
    as the docs say it: stop once `patience` epochs have passed since the last epoch that beat
    the loss of the improvement before it by more than `min_delta` (None: it never stops)."""
    improved_at, improved_loss = 1, losses[0]
    for epoch, loss in enumerate(losses[1:], start=2):
        if improved_loss - loss > min_delta:
            improved_at, improved_loss = epoch, loss
        elif epoch - improved_at >= patience:
            return epoch
    return None


def quiet() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200), buffer


# --------------------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    "losses, min_delta, counts",
    [
        # 8.95 is 0.05 below 9 (not > 0.1); 8.5 is 0.5 below 9, the last improvement's loss
        ([10, 9, 8.95, 9.1, 8.5, 8.6, 8.7], 0.1, [0, 0, 1, 2, 0, 1, 2]),
        ([5, 5, 5], 0.0, [0, 1, 2]),  # an equal loss is no improvement
        ([5, 4.9, 4.8], 0.0, [0, 0, 0]),  # with min_delta 0, any decrease is one
        # small decreases that add up to more than min_delta: measured from 5, the
        # reference, only 4.85 is an improvement
        ([5, 4.95, 4.9, 4.85], 0.1, [0, 1, 2, 0]),
    ],
)
def test_the_count_is_the_epochs_since_an_improvement_larger_than_min_delta(
    losses, min_delta, counts
):
    got = [epochs_without_improvement(losses[: i + 1], min_delta) for i in range(len(losses))]
    assert got == counts


def test_the_rule_reads_the_validation_loss_when_there_is_one_and_is_off_at_0_or_null():
    rule = typed_config("early_stop.patience=2").early_stop
    # the test loss stalls, the validation loss improves: a run with a split goes on
    history = {"epoch": [1, 2, 3], "test_loss": [3.0, 3.0, 3.0], "val_loss": [3.0, 2.0, 1.0]}
    assert not stops_early(history, rule)
    assert stops_early({"epoch": [1, 2, 3], "test_loss": [3.0, 3.0, 3.0]}, rule)
    for off in ("early_stop.patience=0", "early_stop.patience=null"):
        assert not stops_early(
            {"epoch": [1, 2, 3], "test_loss": [3.0, 3.0, 3.0]}, typed_config(off).early_stop
        )


def test_early_stop_keys_compose_and_bad_values_are_one_line():
    cfg = typed_config()
    assert (cfg.early_stop.patience, cfg.early_stop.min_delta) == (None, 0.0)  # off by default
    cfg = typed_config("early_stop.patience=5", "early_stop.min_delta=0.1")
    assert (cfg.early_stop.patience, cfg.early_stop.min_delta) == (5, 0.1)
    assert one_line("early_stop.patience=-1") == (
        "early_stop.patience must be >= 0 epochs or null (got -1); 0 or null turns early "
        "stopping off, e.g. early_stop.patience=5"
    )
    for bad in ("-0.1", "nan", "inf"):
        assert one_line(f"early_stop.min_delta={bad}") == (
            f"early_stop.min_delta must be a finite number >= 0 nats (got {float(bad)}); "
            "0 counts any decrease as an improvement"
        )
    assert one_line("early_stop.patience=abc").startswith("early_stop.patience: Value 'abc'")
    assert one_line("+early_stop.pateince=1") == (
        "early_stop.pateince is not a key of early_stop (did you mean early_stop.patience?): "
        "its keys are patience, min_delta"
    )


# --------------------------------------------------------------------------- a run
@pytest.mark.parametrize("split", ["test", "val"])
def test_a_run_stops_where_the_rule_says_and_evaluates_its_last_epoch(tmp_path, split):
    settings = ("device=cpu", ONE_THREAD, "epochs=6", *CHEAP)
    if split == "val":
        settings += ("data.val_fraction=0.1",)
    reference = run(typed_config(*settings), tmp_path / "reference", quiet()[0])
    expected = reference_stop(reference[f"{split}_loss"], patience=1, min_delta=1.0)
    assert expected is not None and expected < 6  # this run really stops early

    console, output = quiet()
    rule = ("early_stop.patience=1", "early_stop.min_delta=1.0")
    history = run(typed_config(*settings, *rule), tmp_path / "run", console)
    assert (history["status"], exit_code(history)) == ("completed", 0)
    assert (history["stopped_early"], history["stopped_epoch"]) == (True, expected)
    assert history["epoch"] == list(range(1, expected + 1))
    assert history["test_loss"] == reference["test_loss"][:expected]  # the same training
    # the final evaluation is of the last epoch's model, which last.pt holds
    assert (history["final"]["epoch"], history["final"]["checkpoint"]) == (expected, "last.pt")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == expected
    on_disk = json.loads((tmp_path / "run" / "history.json").read_text())
    assert (on_disk["stopped_early"], on_disk["stopped_epoch"]) == (True, expected)
    said = output.getvalue()
    assert f"completed (stopped early after epoch {expected})" in said
    assert re.search(rf"epochs run +│ {expected} of 6 ", said)
    assert re.search(rf"final evaluation +│ epoch {expected} \(the last epoch's model\)", said)
    # a run without the rule says it did not stop early
    assert (reference["stopped_early"], reference["stopped_epoch"]) == (False, None)


def test_a_restart_after_the_stopping_epoch_does_not_train_again(tmp_path):
    """Killed between its stopping epoch's last.pt and the end: the same job started again
    decides from the record alone, and only finishes the run."""
    cfg = typed_config("device=cpu", ONE_THREAD, "epochs=6", *CHEAP, "early_stop.patience=1",
                       "early_stop.min_delta=1.0")  # fmt: skip
    first = run(cfg, tmp_path / "run", quiet()[0])
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    again = run(cfg, tmp_path / "again", quiet()[0], checkpoint=checkpoint, how="restart")
    assert again["epoch"] == first["epoch"] and again["test_loss"] == first["test_loss"]
    assert (again["status"], again["stopped_epoch"]) == ("completed", first["stopped_epoch"])
    assert again["final"]["epoch"] == first["stopped_epoch"]


def test_divergence_and_interruption_keep_their_statuses(tmp_path):
    rule = ("early_stop.patience=1", "early_stop.min_delta=1.0", "epochs=3", ONE_THREAD, *CHEAP)
    diverging = typed_config("optimizer=sgd", "lr=1e6", "grad_clip=0", *rule)
    history = run(diverging, tmp_path / "diverged", quiet()[0])
    assert (history["status"], history["stopped_early"]) == ("diverged", False)
    assert exit_code(history) == 3
    stop_file = tmp_path / signals.STOP_FILE
    stop_file.write_text("SIGTERM\n")  # a sweep's stop, seen at the first batch
    history = run(typed_config(*rule), tmp_path / "stopped", quiet()[0], stop_file=stop_file)
    assert (history["status"], history["stopped_early"]) == ("interrupted", False)
    assert exit_code(history) == 143


# --------------------------------------------------------------------------- resume, requeue
def test_a_stopped_run_stays_stopped_unless_resumed_with_a_larger_patience(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    run_dir, reference_dir = tmp_path / "run", tmp_path / "reference"
    common = ("epochs=10", *CHEAP)
    assert vae_train_in_process(monkeypatch, *common, f"hydra.run.dir={reference_dir}") == 0
    losses = json.loads((reference_dir / "history.json").read_text())["test_loss"]
    stopped_at = reference_stop(losses, patience=1, min_delta=1.0)
    extended_to = reference_stop(losses, patience=3, min_delta=1.0)
    assert stopped_at < extended_to < 10  # both stop early: not a vacuous test

    rule = ("early_stop.patience=1", "early_stop.min_delta=1.0")
    command = (*common, *rule, f"hydra.run.dir={run_dir}")
    assert vae_train_in_process(monkeypatch, *command) == 0
    record = (run_dir / "history.json").read_bytes()
    assert json.loads(record)["stopped_epoch"] == stopped_at
    capsys.readouterr()

    # the same command again (a requeue): nothing to do, nothing rewritten
    assert vae_train_in_process(monkeypatch, *command) == 0
    assert (
        f"{run_dir} already holds this run, completed after {stopped_at} epochs: nothing to do"
        in capsys.readouterr().out
    )
    assert (run_dir / "history.json").read_bytes() == record

    # resumed with more epochs and the same rule: it stays stopped, said in one line
    assert vae_train_in_process(monkeypatch, f"resume={run_dir}", "epochs=12") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert errors == [
        f"Error: resume={run_dir}: the run stays stopped after epoch {stopped_at}: no "
        f"improvement of the test loss larger than 1 nats in the 1 epoch since epoch "
        f"{stopped_at - 1} (early_stop.patience=1); to train on, give a larger "
        "early_stop.patience (its count goes on from the record) or early_stop.patience=0"
    ]
    assert (run_dir / "history.json").read_bytes() == record

    # with a larger patience it trains on, its count restored from the record
    assert vae_train_in_process(monkeypatch, f"resume={run_dir}", "early_stop.patience=3") == 0
    resumed = json.loads((run_dir / "history.json").read_text())
    assert resumed["status"] == "completed" and resumed["stopped_epoch"] == extended_to
    assert resumed["test_loss"] == losses[:extended_to]  # as the uninterrupted run trained
    assert resumed["resumed"][0]["after_epoch"] == stopped_at
    assert resumed["config"]["early_stop"] == {"patience": 3, "min_delta": 1.0}
    assert resumed["final"]["epoch"] == extended_to


# --------------------------------------------------------------------------- a sweep
def test_a_sweeps_table_json_and_csv_say_which_jobs_stopped_early(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    args = ("-m", "early_stop.patience=0,1", "early_stop.min_delta=1.0", "epochs=6", *CHEAP)
    assert vae_train_in_process(monkeypatch, *args, f"hydra.sweep.dir={sweep}") == 0
    losses = json.loads((sweep / "0" / "history.json").read_text())["test_loss"]
    expected = reference_stop(losses, patience=1, min_delta=1.0)
    assert expected is not None and expected < 6

    summary = json.loads((sweep / "sweep_summary.json").read_text())
    rows = {row["job"]: row for row in summary["jobs"]}
    assert (rows["0"]["stopped_early"], rows["0"]["stopped_epoch"]) == (False, None)
    assert (rows["1"]["stopped_early"], rows["1"]["stopped_epoch"]) == (True, expected)
    assert rows["1"]["status"] == "completed" and rows["1"]["epochs_run"] == expected
    with open(sweep / "sweep_summary.csv", newline="") as f:
        cells = {r["job"]: r for r in csv.DictReader(f) if r["row"] == "job"}
    assert (cells["1"]["stopped_early"], cells["1"]["stopped_epoch"]) == ("true", str(expected))
    assert (cells["0"]["stopped_early"], cells["0"]["stopped_epoch"]) == ("false", "")
    table = capsys.readouterr().out
    assert f"completed (stopped early at {expected})" in table
    assert math.isfinite(rows["1"]["best_test_loss"])
