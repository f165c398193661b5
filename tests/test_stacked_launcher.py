"""hydra/launcher=stacked: the grouping of a sweep's jobs into stacks (pure functions), the
option's composition and checks, and in-process sweeps that compare its sweep folder with the
basic launcher's and record which jobs each `run_stack` call trained."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from vae_runner.rundir import is_live
from vae_runner.sweep import finish
from vae_runner.sweep.stacks import group_stacks, stack_key, stack_lines
from vae_runner.training import runner, signals

from helpers import compose_config, help_text, typed_config, vae_train_in_process

CHEAP = ("data=digits", "epochs=1", "eval.iw_samples=0", "pictures=false", "device.threads=1")
STACKED = "hydra/launcher=stacked"


@pytest.fixture(autouse=True)
def no_stop_request_left_over():
    """A stop a test noted must not stop the next test's runs (one process)."""
    yield
    signals._process["signum"] = None


# --------------------------------------------------------------------------- the stack key
def test_members_may_differ_in_everything_but_the_shape_and_the_batch_loop():
    base = stack_key(typed_config())
    free = ("lr=1e-2", "seed=3", "beta=0.5", "grad_clip=5", "optimizer=sgd", "scheduler=cosine")
    free += ("annealing=constant", "early_stop.patience=2", "on_divergence=stop")
    for setting in free:
        assert stack_key(typed_config(setting)) == base, setting
    bound = ("model=conv", "model.latent_dim=8", "likelihood=gaussian", "data.limit=500")
    bound += ("data.val_fraction=0.1", "batch_size=64", "epochs=3", "reduction=mean")
    bound += ("device=cpu",)
    for setting in bound:
        assert stack_key(typed_config(setting)) != base, setting


def test_stacks_keep_the_sweep_order_and_split_at_max_stack():
    keys = [("a",), ("b",), ("a",), ("a",), ("b",), ("c",)]
    assert group_stacks(keys, 64) == [[0, 2, 3], [1, 4], [5]]
    assert group_stacks(keys, 2) == [[0, 2], [3], [1, 4], [5]]
    assert group_stacks(keys, 1) == [[0], [2], [3], [1], [4], [5]]
    with pytest.raises(ValueError, match="max_stack must be >= 1"):
        group_stacks(keys, 0)


def test_the_log_says_each_stacks_size_jobs_and_what_differs_between_stacks():
    keys = [stack_key(typed_config(f"batch_size={b}")) for b in (64, 128, 64)]
    stacks = group_stacks(keys, 64)
    assert stack_lines(keys, stacks, [5, 6, 7]) == [
        "Stacking 3 jobs into 2 stacks",
        "  stack 1: 2 jobs (#5 #7): batch_size=64",
        "  stack 2: 1 job (#6): batch_size=128",
    ]
    one = [stack_key(typed_config())]
    assert stack_lines(one, [[0]], [0]) == ["Stacking 1 job into 1 stack", "  stack 1: 1 job (#0)"]
    nodes = [stack_key(typed_config(s)) for s in ("data.limit=500", "data.limit=600")]
    assert stack_lines(nodes, group_stacks(nodes, 64), [0, 1])[1:] == [
        "  stack 1: 1 job (#0): data.limit=500",
        "  stack 2: 1 job (#1): data.limit=600",
    ]


# --------------------------------------------------------------------------- the option
def test_stacked_is_a_launcher_with_max_stack_64_and_composes_with_presets():
    cfg = compose_config(STACKED, "experiment=lr_sweep", hydra=True)
    assert cfg.hydra.launcher._target_.endswith("stacked_launcher.StackedLauncher")
    assert cfg.hydra.launcher.max_stack == 64
    assert cfg.hydra.sweeper.params.lr == "1e-2,1e-3,1e-4,1e-5"
    assert (
        compose_config(STACKED, "hydra.launcher.max_stack=8", hydra=True).hydra.launcher.max_stack
        == 8
    )


def test_help_lists_the_stacked_launcher():
    assert "hydra/launcher=stacked" in help_text()


@pytest.mark.parametrize("max_stack", ["0", "-3"])
def test_max_stack_below_one_is_refused_before_the_sweep(tmp_path, monkeypatch, capsys, max_stack):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    args = ("-m", "lr=1e-2,1e-3", STACKED, f"hydra.launcher.max_stack={max_stack}", *CHEAP)
    assert vae_train_in_process(monkeypatch, *args, f"hydra.sweep.dir={sweep}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"Error: hydra.launcher.max_stack must be 1 or more (got {max_stack}): the most jobs "
        "trained as one stack, e.g. hydra.launcher.max_stack=64"
    ]
    assert not sweep.exists()


# --------------------------------------------------------------------------- sweeps in process
def sweep(monkeypatch, where: Path, *args: str) -> int:
    return vae_train_in_process(monkeypatch, "-m", *args, *CHEAP, f"hydra.sweep.dir={where}")


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_stacked_sweeps_folder_and_summary_are_the_basic_launchers(tmp_path, monkeypatch, stacks):
    monkeypatch.chdir(tmp_path)
    basic, stacked = tmp_path / "basic", tmp_path / "stacked"
    grid = ("lr=1e-2,1e-3", "seeds=2")
    assert sweep(monkeypatch, basic, *grid) == 0
    assert [len(call) for call in stacks] == [1, 1, 1, 1]  # the basic launcher: a job each
    del stacks[:]
    assert sweep(monkeypatch, stacked, *grid, STACKED) == 0
    assert [len(call) for call in stacks] == [4]  # the four jobs: one stack
    assert [m.run_dir for m in stacks[0]] == [stacked / str(n) for n in range(4)]
    assert [(m.cfg.lr, m.cfg.seed) for m in stacks[0]] == [
        (1e-2, 0),
        (1e-2, 1),
        (1e-3, 0),
        (1e-3, 1),
    ]

    assert files(stacked) == files(basic)
    assert "0/.hydra/hydra.yaml" in files(stacked) and "sweep_summary.csv" in files(stacked)
    for job in range(4):
        for name in ("overrides.yaml", "config.yaml"):
            ours, theirs = (
                yaml.safe_load((d / str(job) / ".hydra" / name).read_text())
                for d in (stacked, basic)
            )
            assert ours == theirs
        ours, theirs = (
            json.loads((d / str(job) / "history.json").read_text()) for d in (stacked, basic)
        )
        assert set(ours) == set(theirs)
        assert (
            (ours["status"], ours["epoch"])
            == (theirs["status"], theirs["epoch"])
            == ("completed", [1])
        )
    ours, theirs = (json.loads((d / "sweep_summary.json").read_text()) for d in (stacked, basic))
    assert set(ours) == set(theirs)
    rows = lambda s: sorted((r["job"], r["status"], r["setting"], sorted(r)) for r in s["jobs"])  # noqa: E731
    assert rows(ours) == rows(theirs)
    assert {s["label"] for s in ours["settings"]} == {s["label"] for s in theirs["settings"]}
    assert ours["counts"] == theirs["counts"] == {"completed": 4}
    assert ours["exit_code"] == theirs["exit_code"] == 0


def test_jobs_that_cannot_share_a_stack_run_as_further_stacks(
    tmp_path, monkeypatch, stacks, capsys
):
    monkeypatch.chdir(tmp_path)
    assert sweep(monkeypatch, tmp_path / "s", "batch_size=64,128", "lr=1e-2,1e-3", STACKED) == 0
    assert [[(m.cfg.batch_size, m.cfg.lr) for m in call] for call in stacks] == [
        [(64, 1e-2), (64, 1e-3)],
        [(128, 1e-2), (128, 1e-3)],
    ]
    out = capsys.readouterr().out
    assert "Stacking 4 jobs into 2 stacks" in out
    assert "  stack 1: 2 jobs (#0 #1): batch_size=64" in out
    assert "  stack 2: 2 jobs (#2 #3): batch_size=128" in out


def test_max_stack_splits_a_group_in_the_sweeps_order(tmp_path, monkeypatch, stacks):
    monkeypatch.chdir(tmp_path)
    where = tmp_path / "s"
    assert (
        sweep(monkeypatch, where, "lr=1e-2,1e-3", "seeds=2", STACKED, "hydra.launcher.max_stack=3")
        == 0
    )
    assert [[m.run_dir.name for m in call] for call in stacks] == [["0", "1", "2"], ["3"]]
    statuses = [
        json.loads((where / str(n) / "history.json").read_text())["status"] for n in range(4)
    ]
    assert statuses == ["completed"] * 4


def test_a_job_that_finished_before_is_not_trained_again(tmp_path, monkeypatch, stacks):
    monkeypatch.chdir(tmp_path)
    where = tmp_path / "s"
    assert sweep(monkeypatch, where, "lr=1e-2,1e-3", STACKED) == 0
    kept = (where / "0" / "history.json").read_bytes()
    for name in ("history.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        (where / "1" / name).unlink()  # job 1 as if it never trained: it trains again
    del stacks[:]
    assert sweep(monkeypatch, where, "lr=1e-2,1e-3", STACKED) == 0
    assert [[m.run_dir for m in call] for call in stacks] == [[where / "1"]]
    assert (where / "0" / "history.json").read_bytes() == kept
    assert json.loads((where / "1" / "history.json").read_text())["status"] == "completed"


def test_a_stop_before_a_stack_leaves_it_not_started(tmp_path, monkeypatch, capsys):
    """A SIGINT noted while the first stack trains (as the sweep's handler notes it): the
    second stack never starts, its jobs are listed as not started, the sweep exits 130."""
    monkeypatch.chdir(tmp_path)
    original = runner.run_stack
    trained: list[list[str]] = []

    def first_then_stop(members, *args, **kwargs):
        trained.append([m.run_dir.name for m in members])
        results = original(members, *args, **kwargs)
        signals.request_stop(signal.SIGINT)  # after the stack: nothing of it is interrupted
        return results

    monkeypatch.setattr(runner, "run_stack", first_then_stop)
    where = tmp_path / "s"
    summarize, claimed = finish.summarize, []

    def summarize_claimed(*args, **kwargs):  # the stopped sweep's summary, in its own claim
        claimed.append(is_live(where))
        return summarize(*args, **kwargs)

    monkeypatch.setattr(finish, "summarize", summarize_claimed)
    assert sweep(monkeypatch, where, "batch_size=64,128", STACKED) == 130
    assert claimed == [True] and not is_live(where)  # given back only once it was written
    assert trained == [["0"]]
    assert json.loads((where / "0" / "history.json").read_text())["status"] == "completed"
    assert not (where / "1" / "history.json").exists() and not (where / "1" / ".hydra").exists()
    summary = json.loads((where / "sweep_summary.json").read_text())
    assert {r["job"]: r["status"] for r in summary["jobs"]} == {
        "0": "completed",
        "#1": "not started",  # the summary's name for a job without a folder
    }


def test_on_job_end_sees_each_jobs_objective_after_its_stack_trained(tmp_path, monkeypatch, capsys):
    """Hydra's run_job calls on_job_end once its task (here the job's preparation) returns: the
    launcher holds it back until the job is finished, so a callback reads the objective the
    basic launcher's job returns (its best test loss)."""
    monkeypatch.chdir(tmp_path)
    where = tmp_path / "s"
    callback = "+hydra.callbacks.returns._target_=hydra.experimental.callbacks.LogJobReturnCallback"
    assert sweep(monkeypatch, where, "lr=1e-2,1e-3", STACKED, callback) == 0
    out = capsys.readouterr().out  # Hydra's logging writes to stdout (hydra.hydra_logging)
    said = [line.split("] ", 1)[-1] for line in out.splitlines() if "with return value" in line]
    best = [
        json.loads((where / str(n) / "history.json").read_text())["best_test_loss"] for n in (0, 1)
    ]
    assert said == [f"Succeeded with return value: {loss}" for loss in best]


@pytest.mark.parametrize("grid", [("lr=1e-2,1e-3", "seeds=2"), ("lr=1e-2,1e-3,1e-4",)])
def test_a_stacked_launch_composes_and_types_no_job_that_its_sweeper_checked(
    tmp_path, monkeypatch, grid
):
    """The `checked` sweeper composes one job of each setting (its other seeds derived) and
    types every job; it hands them to the stacked launcher, which composes and types none of
    them again (each composition costs about 0.1 s)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    import vae_runner.cli.checks as checks
    import vae_runner.cli.job as job

    composed, typed = [], []
    load, to_typed = ConfigLoaderImpl.load_sweep_config, checks.job_config
    monkeypatch.setattr(
        ConfigLoaderImpl,
        "load_sweep_config",
        lambda self, cfg, overrides: composed.append(overrides) or load(self, cfg, overrides),
    )
    for module in (checks, job):  # the job's preparation types a job it was not handed
        monkeypatch.setattr(module, "job_config", lambda c: typed.append(c.lr) or to_typed(c))
    monkeypatch.chdir(tmp_path)
    assert sweep(monkeypatch, tmp_path / "s", *grid, STACKED) == 0
    settings = 3 if len(grid) == 1 else 2
    assert len(composed) == settings  # by the checked sweeper, none by the launcher
    assert len(typed) == settings  # the first job of each setting; its seeds are derived
    jobs = sorted((tmp_path / "s").glob("*/history.json"))
    assert len(jobs) == (3 if len(grid) == 1 else 4)
    assert all(json.loads(p.read_text())["status"] == "completed" for p in jobs)


def test_two_jobs_of_one_stacked_sweep_aimed_at_one_folder_are_not_trained_together(
    tmp_path, monkeypatch, capsys
):
    """Every job of a stacked sweep is prepared in the sweep's own process: a second job whose
    folder the first one holds is refused (Busy), never trained into the same folder."""
    monkeypatch.chdir(tmp_path)
    original, trained = runner.run_stack, []

    def run_stack(members, *args, **kwargs):
        trained.append([str(m.run_dir) for m in members])
        return original(members, *args, **kwargs)

    monkeypatch.setattr(runner, "run_stack", run_stack)
    where = tmp_path / "s"
    assert sweep(monkeypatch, where, "lr=1e-3,1e-3", "hydra.sweep.subdir=same", STACKED) != 0
    assert f"{where / 'same'} is in use by another vae-train" in capsys.readouterr().err
    assert trained == [[str(where / "same")]]  # the first job alone
    assert json.loads((where / "same" / "history.json").read_text())["status"] == "completed"
