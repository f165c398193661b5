"""MLflow (`logger=mlflow`): the tracking store, a run's MLflow run, a sweep's parent run.

- A single run is one MLflow run: the resolved config as params, the chosen group options as
  tags (optimizer=adamw, ...), every per-epoch series of history.json as metrics (step = epoch),
  the final measures, the status, and history.json, the PNGs and Hydra's record as artifacts.
- A sweep is one parent run (made before any job starts, by cli.callbacks) whose jobs are child
  runs; its per-setting summary is logged on it at the end (sweep.finish).
- The run directory's `mlflow_run.json` holds the run's id: a resumed or restarted run carries on
  in the same MLflow run, and logs the epochs the store lacks. The sweep directory's
  `mlflow_parent.json` holds the parent's.
- The tracker is a second record: when the store cannot be written during a run, the run goes on
  (history.json holds every epoch) with a warning, and the missing epochs are logged as soon as
  the store answers again. A store that cannot be opened before training is a config error.

Imports mlflow only inside functions: `import mlflow` takes seconds, and only logger=mlflow pays.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vae_runner.config.errors import ConfigError
from vae_runner.config.schema import GROUP_SCHEMAS, MLflowLoggerConfig
from vae_runner.config.typed import flat_config
from vae_runner.files import write_json_atomic
from vae_runner.report.loggers import NoLogger, final_measures

DEFAULT_TRACKING_URI = "sqlite:///outputs/mlflow.db"
RUN_FILE = "mlflow_run.json"  # in a run directory: the MLflow run it logs to
PARENT_FILE = "mlflow_parent.json"  # in a sweep directory: the sweep's parent run
ARTIFACTS_DIR = "mlartifacts"  # beside a SQLite store's file: the artifacts of its experiments
INSTALL_HINT = "logger=mlflow needs the mlflow package: pip install 'vae-runner[mlflow]'"

# history.json's status -> the MLflow run's status
RUN_STATUS = {
    "completed": "FINISHED",
    "diverged": "FAILED",
    "failed": "FAILED",
    "interrupted": "KILLED",
}
GROUPS = tuple(GROUP_SCHEMAS)  # optimizer, scheduler, ...: each run's chosen option is a tag


# --------------------------------------------------------------------------- the store
def resolve_uri(configured: str | None, start_dir: Path | None = None) -> str:
    """logger.tracking_uri, else $MLFLOW_TRACKING_URI, else the SQLite file under outputs/. A
    relative sqlite:/// path is made absolute from `start_dir` (where vae-train started), so
    every job of a sweep, in whatever process or folder, writes to the same file."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    path = sqlite_path(uri)
    if path is not None and not path.is_absolute():
        path = Path(start_dir or Path.cwd()) / path
        return "sqlite:///" + str(path.resolve())
    return uri


def uri_source(configured: str | None) -> str:
    """Where resolve_uri took the store from, as an error message names it."""
    if configured:
        return "logger.tracking_uri"
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default store"


def sqlite_path(uri: str) -> Path | None:
    """The file of a sqlite:/// URI (None for other stores and in-memory databases)."""
    match = re.fullmatch(r"sqlite:///(.+)", uri)
    if match is None or match.group(1) == ":memory:":
        return None
    return Path(match.group(1).split("?", 1)[0])


# A tracking server that does not answer must not hold a run for minutes: MLflow's defaults
# retry each request 7 times with a growing backoff and wait 120 s for each (a user's own
# settings of these variables win).
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError(f"{INSTALL_HINT} (or logger=none)") from None
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:  # its INFO lines (tables made, migrations)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        # A store that fails mid-run (deleted, read-only): MLflow logs each SQLAlchemy error
        # with its traceback, then raises it, and the run records it as one warning line.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # "Retrying (...)"
    return mlflow


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time opens a SQLite store that may be new, and makes its experiment:
    processes that create a fresh store at the same moment fail with schema errors."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def first_line(err: BaseException) -> str:
    # SQLAlchemy's errors go on with the whole statement ("[SQL: SELECT ...") and its
    # parameters: the reason is what comes before
    text = " ".join(re.split(r"\s\[SQL:", str(err))[0].split())
    return (text[:300] or type(err).__name__).rstrip(".")


def _client_for(uri: str) -> Any:
    mlflow = _mlflow()
    with _store_lock(uri):
        client = mlflow.MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens (and, if new, makes) the store now
    return client


def open_store(uri: str, experiment: str, source: str = "logger.tracking_uri") -> tuple[Any, str]:
    """(MlflowClient, experiment id): the store made if new, the experiment made if missing.
    Raises ConfigError naming where the URI came from (`source`) when it cannot be opened."""
    mlflow = _mlflow()
    try:
        with _store_lock(uri):
            client = mlflow.MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    raise ConfigError(
                        f"the MLflow experiment {experiment} is deleted in {uri}: restore it "
                        "(mlflow experiments restore) or choose another logger.experiment"
                    )
                return client, found.experiment_id
            path = sqlite_path(uri)
            # Artifacts beside the SQLite file (MLflow's default is ./mlruns of the caller)
            where = None if path is None else str(path.parent / ARTIFACTS_DIR)
            # The kind MLflow's UI opens on its runs table (not its GenAI overview)
            tags = {"mlflow.experimentKind": "custom_model_development"}
            made = client.create_experiment(experiment, artifact_location=where, tags=tags)
            return client, made
    except ConfigError:
        raise
    except Exception as err:
        said = f"{source}={uri}" if source != "the default store" else f"the default store {uri}"
        raise ConfigError(
            f"{said}: MLflow could not open this store ({first_line(err)}); give another "
            "logger.tracking_uri (sqlite:///outputs/mlflow.db, http://host:5000)"
        ) from None


def open_configured_store(cfg: MLflowLoggerConfig, start_dir: Path | None) -> tuple[Any, str, str]:
    """(client, experiment id, uri) of the store `cfg` names (resolve_uri)."""
    uri = resolve_uri(cfg.tracking_uri, start_dir)
    client, experiment_id = open_store(uri, cfg.experiment, uri_source(cfg.tracking_uri))
    return client, experiment_id, uri


def _safe_key(text: str) -> str:
    """A metric or param name MLflow takes (letters, digits, _ - . space : /)."""
    return re.sub(r"[^\w.\- :/]", "_", text).strip("/") or "_"


# --------------------------------------------------------------------------- one run
def params_of(config: dict[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params (text, as MLflow stores them)."""
    import json

    out = {}
    for key, value in flat_config(config).items():
        out[_safe_key(key)] = value if isinstance(value, str) else json.dumps(value)
    return out


def group_tags(config: dict[str, Any]) -> dict[str, str]:
    """The chosen option of each config group: optimizer=adamw, scheduler=plateau, ..."""
    return {
        group: str(config[group]["name"])
        for group in GROUPS
        if isinstance(config.get(group), dict) and "name" in config[group]
    }


def epoch_metrics(history: dict[str, Any], index: int) -> dict[str, float]:
    """Epoch `index`'s values of every per-epoch series (kl_by_dim as kl_by_dim/<dim>)."""
    from vae_runner.record import epoch_keys

    values: dict[str, float] = {}
    for key in epoch_keys(history):
        if key == "epoch":
            continue
        value = history[key][index]
        if isinstance(value, list):
            width = len(str(len(value) - 1))
            values.update({f"{key}/{i:0{width}d}": float(v) for i, v in enumerate(value)})
        elif value is not None:
            values[key] = float(value)
    return values


RETRY_SECONDS = 60.0  # a store that failed is tried again after this long (or at the end)
# How history.json's status and a sweep's end read in the `vae.status` tag
PARENT_STATUS = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "interrupted"}


class MLflowLogger(NoLogger):
    def __init__(
        self,
        cfg: MLflowLoggerConfig,
        run_dir: Path,
        start_dir: Path | None,
        sweep_dir: Path | None,
        run_name: str | None,
        warn: Callable[[str], None] | None,
    ) -> None:
        self.cfg, self.run_dir, self.start_dir = cfg, run_dir, start_dir
        self.sweep_dir, self.run_name = sweep_dir, run_name
        self.warn = warn or (lambda message: None)
        self.client: Any = None
        self.run_id: str | None = None
        self.logged_through = 0  # the last epoch the store holds
        self.failing = False  # a warning was given and no write has succeeded since
        self.retry_at = 0.0  # while failing: when to try the store again (time.monotonic)

    # ---------------------------------------------------------------- start
    def start(self, history: dict[str, Any]) -> None:
        """A new run's MLflow run (a store that cannot take it is a config error: nothing has
        trained yet), or the earlier attempt's, continued (a store that lost it or does not
        answer is a warning: the training done so far goes on)."""
        earlier = _read_json(self.run_dir / RUN_FILE)
        if earlier is None:
            self._new_run(history)
            return
        if self._carry_on(earlier, history):
            return
        try:
            self._new_run(history, earlier["tracking_uri"])
        except ConfigError as err:
            self.warn(f"{err}; this run goes on without MLflow")
            self.run_id = None

    def _new_run(self, history: dict[str, Any], uri: str | None = None) -> None:
        parent = _read_json(self.sweep_dir / PARENT_FILE) if self.sweep_dir else None
        if uri is not None:  # the store that held this run before
            self.client, experiment_id = open_store(uri, self.cfg.experiment)
        elif parent:  # a sweep's job: in its parent's store and experiment
            uri, experiment_id = parent["tracking_uri"], parent["experiment_id"]
            self.client = _client_for(uri)
        else:
            self.client, experiment_id, uri = open_configured_store(self.cfg, self.start_dir)
        tags = {
            "mlflow.runName": self._name(parent),
            "mlflow.source.name": "vae-train",
            "mlflow.source.type": "LOCAL",
            "mlflow.user": _user(),
            "vae.run_dir": str(self.run_dir.resolve()),
            "vae.status": "running",
            **group_tags(history.get("config") or {}),
        }
        if parent:
            tags["mlflow.parentRunId"] = parent["run_id"]
            tags["vae.sweep_dir"] = str(self.sweep_dir.resolve())
        try:
            run = self.client.create_run(experiment_id, tags=tags)
        except Exception as err:
            raise ConfigError(
                f"MLflow could not start a run in {uri} ({first_line(err)}); check "
                "logger.tracking_uri, or run with logger=none"
            ) from None
        self.run_id = run.info.run_id
        write_json_atomic(
            self.run_dir / RUN_FILE,
            {
                "tracking_uri": uri,
                "experiment_id": experiment_id,
                "run_id": self.run_id,
                "parent_run_id": parent["run_id"] if parent else None,
            },
        )
        self._try("log the config", self._log_params, history)
        self._sync(history)

    def _name(self, parent: dict | None) -> str:
        """A sweep's job: what varies (lr=0.001 seed=1); a single run: its folder, from where
        vae-train started (outputs/2026-12-02/07-23-41-299418)."""
        if parent:
            varying = child_name(self.run_name or "", parent.get("constant_overrides") or ())
            if varying:
                return varying
        with contextlib.suppress(ValueError):
            return str(self.run_dir.resolve().relative_to(Path(self.start_dir or Path.cwd())))
        return str(self.run_dir)

    def _carry_on(self, earlier: dict[str, Any], history: dict[str, Any]) -> bool:
        """Continue the MLflow run of an earlier attempt; False when that cannot be done."""
        run_id = earlier.get("run_id")
        try:
            self.client = _client_for(earlier["tracking_uri"])
            run = self.client.get_run(run_id)
            if run.info.lifecycle_stage == "deleted":
                raise LookupError("it was deleted")
            metrics = self.client.get_metric_history(run_id, "train_loss")
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "vae.status", "running")
        except Exception as err:
            self.warn(
                f"MLflow run {run_id} of {earlier.get('tracking_uri')} cannot be continued "
                f"({first_line(err)}): this run is logged as a new MLflow run"
            )
            return False
        self.run_id = run_id
        self.logged_through = max((m.step for m in metrics), default=0)
        self._try("log the config", self._log_params, history, run.data.params)
        self._sync(history)
        return True

    def _log_params(self, history: dict[str, Any], logged: dict[str, str] | None = None) -> None:
        from mlflow.entities import Param, RunTag

        logged = logged or {}
        params = params_of(history.get("config") or {})
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        # An MLflow param never changes: a value changed on resume (epochs=) becomes a tag
        changed = [
            RunTag(f"vae.resumed.{k}", v) for k, v in params.items() if logged.get(k, v) != v
        ]
        self.client.log_batch(self.run_id, params=new, tags=changed)

    # ---------------------------------------------------------------- per epoch
    def epoch(self, history: dict[str, Any], record: dict[str, Any]) -> None:
        self._sync(history)

    def _sync(self, history: dict[str, Any], force: bool = False) -> None:
        """Log every epoch of `history` the store does not hold yet. A store that failed is
        left alone until RETRY_SECONDS have passed (or `force`, at the end): one that does not
        answer costs a timeout per try, and the run must not wait on it every epoch."""
        from mlflow.entities import Metric

        if self.run_id is None or (self.failing and not force and time.monotonic() < self.retry_at):
            return
        todo = [i for i, e in enumerate(history["epoch"]) if e > self.logged_through]
        if not todo:
            return
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, history["epoch"][i])
            for i in todo
            for key, value in epoch_metrics(history, i).items()
        ]
        what = f"log epoch {history['epoch'][todo[0]]}"
        if self._try(what, self.client.log_batch, self.run_id, metrics):
            self.logged_through = history["epoch"][todo[-1]]

    def _try(self, what: str, call: Callable, *args: Any) -> bool:
        """Call the store; on failure warn (once until a write succeeds again) and go on."""
        try:
            call(*args)
        except Exception as err:
            if not self.failing:
                self.warn(
                    f"MLflow could not {what} ({first_line(err)}); the run goes on: "
                    "history.json holds every epoch, and the store gets them once it answers"
                )
            self.failing = True
            self.retry_at = time.monotonic() + RETRY_SECONDS
            return False
        self.failing = False
        return True

    # ---------------------------------------------------------------- the end
    def finish(self, history: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        self._sync(history, force=True)
        if self.failing:  # it did not answer again: no more waiting on it
            self.warn(
                f"MLflow did not answer at the end: its run {self.run_id} is left as it was; "
                "history.json and the run directory are complete"
            )
            return
        step = history["epoch"][-1] if history.get("epoch") else 0
        now = int(time.time() * 1000)
        measures = [Metric(k, v, now, step) for k, v in final_measures(history).items()]
        status = str(history.get("status"))
        self._try("log the final measures", self.client.log_batch, self.run_id, measures)
        self._try("log the status", self.client.set_tag, self.run_id, "vae.status", status)
        stopped = "true" if history.get("stopped_early") else "false"  # epoch: stopped_epoch
        self._try("log the status", self.client.set_tag, self.run_id, "stopped_early", stopped)
        self._try("log the artifacts", self._log_artifacts)
        self._try(
            "end the MLflow run",
            self.client.set_terminated,
            self.run_id,
            RUN_STATUS.get(status, "FAILED"),
        )

    def _log_artifacts(self) -> None:
        from vae_runner.record import HISTORY_FILE

        self.client.log_artifact(self.run_id, str(self.run_dir / HISTORY_FILE))
        for picture in sorted(self.run_dir.glob("*.png")):
            self.client.log_artifact(self.run_id, str(picture))
        for folder, under in (("images", "images"), (".hydra", "hydra")):
            if (self.run_dir / folder).is_dir():
                self.client.log_artifacts(self.run_id, str(self.run_dir / folder), under)


def recorded_run_status(run_dir: Path) -> str | None:
    """The status (RUNNING, FINISHED, ...) of the MLflow run that `run_dir` logs to; None when
    it logs to none, or its store cannot say."""
    earlier = _read_json(Path(run_dir) / RUN_FILE)
    if not earlier:
        return None
    try:
        return str(_client_for(earlier["tracking_uri"]).get_run(earlier["run_id"]).info.status)
    except Exception:  # no store, no such run: nothing anyone can end there
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(Path(path).read_text())
        return loaded if isinstance(loaded, dict) else None
    return None


def _user() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"


# --------------------------------------------------------------------------- a sweep
def start_sweep(
    cfg: MLflowLoggerConfig, sweep_dir: Path, overrides: list[str], start_dir: Path
) -> str:
    """Make the store, the experiment and the sweep's parent run before any job starts; the
    parent's id goes to the sweep directory. A sweep started again in its directory carries on
    in its parent run. Returns the parent's id."""
    path = Path(sweep_dir) / PARENT_FILE
    earlier = _read_json(path)
    if earlier:
        with contextlib.suppress(Exception):
            client = _client_for(earlier["tracking_uri"])
            if client.get_run(earlier["run_id"]).info.lifecycle_stage != "deleted":
                client.update_run(earlier["run_id"], status="RUNNING")
                client.set_tag(earlier["run_id"], "vae.status", "running")
                earlier["attempts"] = int(earlier.get("attempts", 1)) + 1
                write_json_atomic(path, earlier)
                return earlier["run_id"]
    client, experiment_id, uri = open_configured_store(cfg, start_dir)
    swept = " ".join(overrides) or Path(sweep_dir).name
    tags = {
        "mlflow.runName": swept,
        "mlflow.source.name": "vae-train -m",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": _user(),
        "vae.sweep_dir": str(Path(sweep_dir).resolve()),
        "vae.status": "running",
    }
    try:
        parent = client.create_run(experiment_id, tags=tags)
        from mlflow.entities import Param

        params = [_override_param(o) for o in overrides]
        client.log_batch(parent.info.run_id, params=[Param(k, v) for k, v in params])
    except Exception as err:
        raise ConfigError(
            f"MLflow could not start the sweep's run in {uri} ({first_line(err)}); check "
            "logger.tracking_uri, or run with logger=none"
        ) from None
    record = {
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "run_id": parent.info.run_id,
        "constant_overrides": _constant(overrides),
        "attempts": 1,  # how many times this sweep ran in its directory
    }
    write_json_atomic(path, record)
    return parent.info.run_id


def _override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def child_name(job_overrides: str, constant: list[str] | tuple[str, ...]) -> str:
    """A sweep job's name: its overrides less those every job shares, compared by key. Hydra
    hands a job its shared overrides rewritten (`pictures=false` as `pictures=False`, a `:`
    escaped), so comparing whole strings kept them in every child's name."""
    shared = {_override_key(o) for o in constant}
    return " ".join(o for o in job_overrides.split(" ") if o and _override_key(o) not in shared)


def _constant(overrides: list[str]) -> list[str]:
    """The sweep's overrides that every job shares (epochs=3, logger=mlflow): a child run is
    named by the others, what varies (lr=0.001 seed=1)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra parsed them already; a name is not worth failing over
        return []
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def _override_param(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return _safe_key(key.lstrip("+~")), value


def finish_sweep(
    sweep_dir: Path, summary: dict[str, Any] | None, stopped: bool, files: Sequence[str]
) -> None:
    """Log the sweep's per-setting summary and its files (`files`: the summary's file names,
    those present attached) on the parent run, and end it: KILLED when a signal stopped the
    sweep, FINISHED when its exit code is 0, else FAILED."""
    parent = _read_json(Path(sweep_dir) / PARENT_FILE)
    if parent is None:
        return
    if stopped:
        status = "KILLED"
    else:
        status = "FINISHED" if summary is not None and summary["exit_code"] == 0 else "FAILED"
    client, run_id = _client_for(parent["tracking_uri"]), parent["run_id"]
    try:
        if summary is not None:
            _log_settings(client, run_id, summary, step=int(parent.get("attempts", 1)))
            for name in files:
                if (Path(sweep_dir) / name).is_file():
                    client.log_artifact(run_id, str(Path(sweep_dir) / name))
    finally:  # the parent ends whatever the summary's logging met
        _end_parent(client, run_id, status)
        write_json_atomic(Path(sweep_dir) / PARENT_FILE, {**parent, "ended": status})


def _end_parent(client: Any, run_id: str, status: str) -> None:
    client.set_tag(run_id, "vae.status", PARENT_STATUS[status])
    client.set_terminated(run_id, status)


def discard_sweep(sweep_dir: Path) -> None:
    """A sweep refused before any job ran: its parent run goes (nothing was tracked) and so
    does mlflow_parent.json, so that nothing is left of the refused command; a parent that an
    earlier run of the sweep made is ended as that run left it."""
    path = Path(sweep_dir) / PARENT_FILE
    parent = _read_json(path)
    if parent is None:
        return
    attempts = int(parent.get("attempts", 1))
    with contextlib.suppress(Exception):
        client = _client_for(parent["tracking_uri"])
        if attempts == 1:
            client.delete_run(parent["run_id"])
        else:  # an earlier run of this sweep made it: it ends as that run left it
            _end_parent(client, parent["run_id"], parent.get("ended") or "FAILED")
    if attempts == 1:
        path.unlink(missing_ok=True)
    else:
        write_json_atomic(path, {**parent, "attempts": attempts - 1})


def _log_settings(client: Any, run_id: str, summary: dict[str, Any], step: int) -> None:
    """The verdict as tags, each setting's mean and sd of every measure as metrics
    (<setting>/<measure>_mean, at step = the sweep's attempt), and the settings table as
    settings.json (rewritten, never appended to, when the sweep runs again)."""
    from mlflow.entities import Metric, RunTag

    said = summary["verdict"]
    tags = [
        RunTag("vae.verdict", said["sentence"]),
        RunTag("vae.winner", said["winner"] or "none"),
        RunTag("vae.ranked_on", summary["ranked_on"]),
        RunTag("vae.seeds_per_setting", str(summary["seeds_per_setting"])),
    ]
    now = int(time.time() * 1000)
    metrics, table = [], []
    for setting in summary["settings"]:
        name = _safe_key(setting["label"].replace("=", ":").replace(",", " "))
        row = {
            "rank": setting["rank"],
            "setting": setting["label"],
            "winner": setting["winner"],
            "tied_with_best": setting["tied_with_best"],
            "p_vs_best": setting["p_vs_best"],
            "n_jobs": setting["n_jobs"],
            "n_completed": setting["n_completed"],
        }
        for measure, spread in setting["measures"].items():
            row[f"{measure}_mean"], row[f"{measure}_sd"] = spread["mean"], spread["sd"]
            for stat in ("mean", "sd"):
                if spread[stat] is not None:
                    metrics.append(Metric(f"{name}/{measure}_{stat}", spread[stat], now, step))
        table.append(row)
    client.log_batch(run_id, metrics=metrics, tags=tags)
    client.log_dict(run_id, {"verdict": said["sentence"], "settings": table}, "settings.json")
