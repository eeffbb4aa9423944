"""The orchestration layer, above the plug-ins: a user job, provider artifacts, evaluation runs, the grid.

- `api`: the Python API, plain-argument entry points (`fine_tune`, `build_provider_artifacts`, `merge`,
  `evaluate`; docs/python.md) - what a notebook, the service and attack harnesses call;
- `userjob`: the user job's hooks in their fixed order and its two stages, each reused while its key holds;
- `providers`: provider artifacts built once and shared;
- `evaluation`: an evaluation run (named apart from the API's `evaluate`, which a submodule import would shadow);
- `grid`: the sweep's cells and how one runs (`run_cell`: user job, evaluation; `bnr sweep` and `bnr attack-search`).

Recipes (`bnr.recipes`, one per command) and the service sit above: config -> arguments -> orchestration -> print.
"""

from __future__ import annotations

from bnr import plugins
from bnr.orchestrate.api import (
    JobKnobs,
    JobResult,
    build_provider_artifacts,
    evaluate,
    fine_tune,
    job_config,
    merge,
)

plugins.load()  # the Python API runs with every plug-in registered, as the CLI does

__all__ = ["JobKnobs", "JobResult", "build_provider_artifacts", "evaluate", "fine_tune", "job_config", "merge"]
