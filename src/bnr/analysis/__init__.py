"""Read-only diagnostics: the Safety Gradient Score, damage score and gradient norms (docs/analysis.md)."""

from bnr.analysis.directions import PROBE, build_specs, load_factors
from bnr.analysis.grads import ModuleSpec, SampleStats, collect_sample_stats, find_modules
from bnr.analysis.scores import band_means, summarize

__all__ = [
    "PROBE",
    "ModuleSpec",
    "SampleStats",
    "band_means",
    "build_specs",
    "collect_sample_stats",
    "find_modules",
    "load_factors",
    "summarize",
]
