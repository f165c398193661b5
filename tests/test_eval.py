"""`vae-eval RUN_DIR`: a run measured again without training (issue 23)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import write_idx
from test_runner import quiet_console

from vae_runner.cli.eval import main as vae_eval
from vae_runner.rundir import LOCK_FILE, claim
from vae_runner.training.metrics import importance_weighted_nll
from vae_runner.training.model import BernoulliLikelihood
from vae_runner.training.runner import run

from helpers import run_cli, typed_config, vae_train_in_process


def eval_in_process(*args: str) -> int:
    """`vae-eval <args>` in this process; its exit code. torch's thread count, which it sets
    as a run does, is put back for later tests."""
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as ended:
            vae_eval([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
    return ended.value.code


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny completed run of the installed command's path (Hydra, the run's thread rule),
    with its own final estimate at K=5. Tests copy it before they change anything."""
    run_dir = tmp_path_factory.mktemp("run") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        code = vae_train_in_process(
            monkeypatch,
            "data=digits",
            "epochs=2",
            "eval.iw_samples=5",
            "pictures=false",
            "device=cpu",
            f"hydra.run.dir={run_dir}",
        )
    assert code == 0
    return run_dir


def copied(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def file_bytes(run_dir: Path) -> dict[str, bytes]:
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files}


def test_the_run_s_own_k_gives_its_final_nll_exactly(finished_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert eval_in_process(finished_run, "--out", out) == 0
    result = json.loads(out.read_text())
    history = json.loads((finished_run / "history.json").read_text())
    final = history["final"]
    assert result["iw_samples"] == final["iw_samples"] == 5  # the run's K by default
    assert result["test_nll_iw"] == final["test_nll_iw"]  # same K, same seed: the same number
    assert result["test_elbo"] == final["test_elbo"] and result["elbo_samples"] == 5
    # KL per dimension and both active-unit counts need no sampling: the last epoch's record
    assert result["kl_by_dim"] == history["kl_by_dim"][-1]
    assert result["active_units"] == history["active_units"][-1]
    assert result["active_units_burda"] == history["active_units_burda"][-1]
    assert result["epoch"] == 2 and result["checkpoint"] == "last"
    assert result["run_status"] == "completed" and result["n_test"] == 359
    assert result["batch_size"] == 128 and result["threads"] == history["process"]["threads"]
    shown = capsys.readouterr().out
    assert "test NLL, IW (K=5)" in shown and f"{final['test_nll_iw']:.4f}" in shown
    assert f"Wrote {out.resolve()}" in shown.splitlines()[-1]


def test_it_changes_none_of_the_run_s_files(finished_run, tmp_path):
    run_dir = copied(finished_run, tmp_path)
    before = file_bytes(run_dir)
    assert eval_in_process(run_dir, "--iw-samples", "2") == 0
    after = file_bytes(run_dir)
    assert set(after) == set(before) | {"eval.json"}
    assert all(after[name] == data for name, data in before.items())
    assert json.loads(after["eval.json"])["iw_samples"] == 2


def test_it_runs_beside_a_run_that_holds_the_directory(finished_run, tmp_path):
    run_dir = copied(finished_run, tmp_path)
    held = claim(run_dir)  # as a live vae-train holds it
    try:
        owner = (run_dir / LOCK_FILE).read_text()
        assert eval_in_process(run_dir, "--iw-samples", "2") == 0
        assert (run_dir / LOCK_FILE).read_text() == owner  # the claim is untouched
        assert held.fd is not None
    finally:
        held.release()
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["run_status"] == "running" and result["epoch"] == 2


def test_best_evaluates_the_best_epoch(finished_run, tmp_path):
    out = tmp_path / "best.json"
    assert eval_in_process(finished_run, "--checkpoint", "best", "--out", out) == 0
    history = json.loads((finished_run / "history.json").read_text())
    result = json.loads(out.read_text())
    assert result["checkpoint"] == "best" and result["epoch"] == history["best_epoch"]
    best = history["best_epoch"] - 1
    assert result["kl_by_dim"] == history["kl_by_dim"][best]


def test_a_larger_k_is_no_higher_within_monte_carlo_error(finished_run, tmp_path):
    results = {}
    for k in (1, 50):
        out = tmp_path / f"k{k}.json"
        assert eval_in_process(finished_run, "--iw-samples", k, "--out", out) == 0
        results[k] = json.loads(out.read_text())
    one, many = results[1], results[50]
    # The two estimates' difference has a standard error of at most sqrt(se1^2 + se50^2): each
    # se is the spread over images, which holds the Monte Carlo noise and more. Three of them
    # is a 0.1% false alarm for an unbiased pair.
    tolerance = 3 * math.hypot(one["test_nll_iw_se"], many["test_nll_iw_se"])
    assert 0 < tolerance < 10  # nats: a spread, not a blanket
    assert many["test_nll_iw"] <= one["test_nll_iw"] + tolerance
    # With one sample the bound is the ELBO itself; with more it is never looser (Jensen, per
    # image, for the same samples).
    assert one["test_nll_iw"] == pytest.approx(-one["test_elbo"], rel=1e-9)
    assert many["test_nll_iw"] <= -many["test_elbo"]


class ConstantDecoder(torch.nn.Module):
    """q(z|x) is the prior and the decoder ignores z: every log w_k is log p(x), exactly."""

    latent_dim = 2

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.likelihood = BernoulliLikelihood()

    def encode(self, x):
        zeros = torch.zeros(len(x), self.latent_dim)
        return zeros, zeros

    def decode(self, z):
        return self.logits.expand(len(z), *self.logits.shape)


def test_the_standard_error_is_the_spread_of_the_per_image_estimates():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 2, (7, 1, 2, 3)).astype(np.float32)
    logits = np.array([[[-1.0, 0.5, 2.0], [0.0, -3.0, 1.0]]], dtype=np.float32)
    # log p(x) of independent Bernoullis, by hand: x log s(l) + (1 - x) log(1 - s(l))
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    nll = -(images * np.log(p) + (1 - images) * np.log(1 - p)).sum(axis=(1, 2, 3))
    model = ConstantDecoder(torch.from_numpy(logits))
    estimate = importance_weighted_nll(model, torch.from_numpy(images), samples=4)
    assert estimate.nll == pytest.approx(nll.mean(), rel=1e-6)
    assert estimate.nll_se == pytest.approx(nll.std(ddof=1) / math.sqrt(7), rel=1e-5)


def one_line_refusal(capsys, *args) -> str:
    assert eval_in_process(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_folder_without_a_run_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no vae-train run (no history.json, no checkpoints/)" in one_line_refusal(
        capsys, empty
    )
    assert "no such directory" in one_line_refusal(capsys, tmp_path / "absent")
    (empty / "history.json").write_text("{}")  # a run stopped in its first epoch
    assert "stopped before its first epoch finished, so there is nothing to evaluate" in (
        one_line_refusal(capsys, empty)
    )
    assert sorted(p.name for p in empty.iterdir()) == ["history.json"]


def test_best_without_best_pt_is_refused(finished_run, tmp_path, capsys):
    run_dir = copied(finished_run, tmp_path)
    (run_dir / "checkpoints" / "best.pt").unlink()
    err = one_line_refusal(capsys, run_dir, "--checkpoint", "best")
    assert err == f"Error: {run_dir} has no checkpoints/best.pt: use --checkpoint last"
    assert not (run_dir / "eval.json").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--iw-samples", "0"], "--iw-samples must be >= 1 (got 0), e.g. --iw-samples 5000"),
        (["--batch-size", "-3"], "--batch-size must be >= 1 (got -3), e.g. --batch-size 1000"),
        (["--iw-samples", "many"], "argument --iw-samples: invalid int value: 'many'"),
        (["--checkpoint", "first"], "argument --checkpoint: invalid choice: 'first'"),
        # K x one image is one allocation: K=10**9 was a 27-line allocator traceback
        (["--iw-samples", "1000000001"], "--iw-samples must be at most 1000000 (got 1000000001)"),
    ],
)
def test_bad_options_are_refused_in_one_line(finished_run, capsys, args, words):
    err = one_line_refusal(capsys, finished_run, *args)
    assert words in err
    assert not (finished_run / "eval.json").exists()


def test_an_earlier_evaluation_is_never_overwritten(finished_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    out.write_text("earlier\n")
    err = one_line_refusal(capsys, finished_run, "--out", out)
    assert "already exists (an earlier evaluation)" in err and "--out FILE" in err
    assert out.read_text() == "earlier\n"


def test_an_out_file_that_cannot_be_made_is_refused_before_any_work(finished_run, tmp_path, capsys):
    err = one_line_refusal(capsys, finished_run, "--out", tmp_path)
    assert (
        err == f"Error: --out {tmp_path} is a folder: give a file name, e.g. {tmp_path}/eval.json"
    )
    missing = tmp_path / "absent" / "eval.json"
    err = one_line_refusal(capsys, finished_run, "--out", missing)
    assert err == f"Error: --out {missing}: no such folder {missing.parent}"
    assert list(tmp_path.iterdir()) == []


def test_missing_data_files_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VAE_RUNNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    write_idx(tmp_path / "idx", n_train=20, n_test=10)  # a tiny Fashion-MNIST look-alike
    overrides = ("data=fashion_mnist", "data.root=idx", "batch_size=10", "epochs=1")
    cfg = typed_config("device=cpu", "eval.iw_samples=0", "pictures=false", *overrides)
    history = run(cfg, tmp_path / "run", quiet_console()[0])
    assert history["status"] == "completed"
    for f in (tmp_path / "idx").iterdir():
        f.unlink()
    err = one_line_refusal(capsys, tmp_path / "run")
    assert f"the run's data (data=fashion_mnist data.root=idx) is not found from {tmp_path}" in err
    assert "run vae-eval from the folder the run was started in" in err
    assert not (tmp_path / "run" / "eval.json").exists()


def test_help_imports_no_torch():
    code = (
        "import sys\n"
        "from vae_runner.cli.eval import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--iw-samples K" in done.stdout and "--checkpoint {last,best}" in done.stdout


@pytest.mark.e2e
def test_installed_vae_eval_refuses_a_folder_without_a_run(tmp_path):
    done = run_cli(str(tmp_path), cwd=tmp_path, program="vae-eval")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"Error: {tmp_path} holds no vae-train run (no history.json, no checkpoints/): give a "
        "run directory, such as outputs/<date>/<time> or a sweep's job folder"
    )


def test_an_estimate_that_does_not_fit_in_memory_is_one_line(finished_run, tmp_path, capsys):
    from vae_runner.training import evaluation

    run_dir = copied(finished_run, tmp_path)

    def too_big(*args, **kwargs):  # what torch's CPU allocator raises for K=10**9
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 80000000000 bytes. Error code 12 (Cannot allocate "
            "memory)"
        )

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(evaluation, "evaluate_checkpoint", too_big)
        assert eval_in_process(run_dir, "--iw-samples", "1000000") == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        "Error: out of memory with --iw-samples 1000000 (the estimate holds K samples of one "
        "test image at once): use a smaller --iw-samples; nothing was written"
    ], err
    assert not (run_dir / "eval.json").exists()
