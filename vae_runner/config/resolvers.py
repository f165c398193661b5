"""Registering what Hydra needs before it composes: the schema, and the resume resolvers.

`resume=DIR` continues a run in DIR itself. conf/config.yaml chooses `hydra.run.dir` and
`hydra.output_subdir` through these resolvers, so Hydra itself runs the job in DIR and leaves
DIR/.hydra (the original run's record) alone; nothing rewrites the command line. A job started
again in its own directory keeps that directory's .hydra/ the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from vae_runner.config.schema import register_configs
from vae_runner.config.search_path import searchpath_groups


def _resume(resume: str | None, root) -> str | None:
    """`resume`, as conf/config.yaml hands it over (`${oc.select:resume,null}`). `--cfg hydra
    --resolve` resolves Hydra's node alone, without the run's settings: there, `resume` is read
    from the command line's settings that Hydra recorded in the node (hydra.overrides.task)."""
    if "resume" in root or "hydra" not in root:
        return resume
    from vae_runner.config.overrides import parse, task_overrides

    given = [o for o in parse(task_overrides(root.hydra)) if o.key_or_group == "resume"]
    return given[-1].value() if given else None


def run_dir(resume: str | None, new_run_dir: str, *, _root_) -> str:
    """`hydra.run.dir`: the resumed run's own directory, else a new one."""
    resume = _resume(resume, _root_)
    return os.path.expanduser(str(resume)) if resume is not None else new_run_dir


def output_subdir(resume: str | None, *, _root_) -> str | None:
    """`hydra.output_subdir`: none on resume, or when the job's directory already holds the
    .hydra/ of an earlier attempt (a requeue, a retry): a run's record is kept as it was."""
    if _resume(resume, _root_) is not None:
        return None
    runtime = _root_.hydra.runtime
    # output_dir is set by Hydra just before it writes .hydra/ (unset while composing)
    set_ = not OmegaConf.is_missing(runtime, "output_dir")
    if set_ and (Path(str(runtime.output_dir)) / ".hydra").is_dir():
        return None
    return ".hydra"


def register() -> None:
    """Idempotent: called by every entry point and by the tests before composing."""
    register_configs()
    OmegaConf.register_new_resolver("vae.run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("vae.output_subdir", output_subdir, replace=True)
    OmegaConf.register_new_resolver("vae.searchpath_groups", searchpath_groups, replace=True)
