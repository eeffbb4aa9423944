"""The orchestration layer, above the plug-ins: a user job, provider artifacts, evaluation runs, the grid.

- `api`: the Python API, plain-argument entry points (`fine_tune`, `build_provider_artifacts`, `merge`,
  `evaluate`; docs/python.md) - what a notebook, the service and attack harnesses call;
- `userjob`: the user job's hooks in their fixed order and its two stages, each reused while its key holds;
- `providers`: provider artifacts built once and shared;
- `evaluate`: an evaluation run;
- `grid`: the sweep's cells.

Recipes (`bnr.recipes`, one per command) and the service sit above: config -> arguments -> orchestration -> print.
"""

from __future__ import annotations

# the submodule `evaluate` is loaded first: a later first import of it would rebind the package's `evaluate` (the
# API function below) to the module (`from bnr.orchestrate import evaluate` then gave a module once a recipe had
# imported `bnr.orchestrate.evaluate`)
import bnr.orchestrate.evaluate  # noqa: F401
from bnr.orchestrate.api import JobKnobs, JobResult, build_provider_artifacts, evaluate, fine_tune, job_config, merge

__all__ = ["JobKnobs", "JobResult", "build_provider_artifacts", "evaluate", "fine_tune", "job_config", "merge"]
