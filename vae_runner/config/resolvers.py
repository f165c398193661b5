"""Registering what Hydra needs before it composes: the schema, and the resume resolvers.

`resume=DIR` continues a run in DIR itself. conf/config.yaml chooses `hydra.run.dir` and
`hydra.output_subdir` through these resolvers, so Hydra itself runs the job in DIR and leaves
DIR/.hydra (the original run's record) alone; nothing rewrites the command line.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from vae_runner.config.schema import register_configs


def run_dir(resume: str | None, new_run_dir: str) -> str:
    """`hydra.run.dir`: the resumed run's own directory, else a new one."""
    return os.path.expanduser(str(resume)) if resume is not None else new_run_dir


def output_subdir(resume: str | None) -> str | None:
    """`hydra.output_subdir`: none on resume, so the run's original .hydra/ is kept as it was."""
    return None if resume is not None else ".hydra"


def register() -> None:
    """Idempotent: called by every entry point and by the tests before composing."""
    register_configs()
    OmegaConf.register_new_resolver("vae.run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("vae.output_subdir", output_subdir, replace=True)
