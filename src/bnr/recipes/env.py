"""`bnr env`: what a bug report needs - bnr's version and commit, Python, the libraries that decide results, the
platform, CPU threads and accelerators, and the environment variables bnr reads."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

from bnr.errors import BnrError

LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "datasets",
    "huggingface_hub",
    "tokenizers",
    "numpy",
    "trl",
    "vllm",
    "ray",
    "wandb",
)
ENV_VARS = (
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "BNR_CACHE",
    "BNR_BUFFER_REGISTRY",
    "CUDA_VISIBLE_DEVICES",
)


def report() -> list[tuple[str, str]]:
    """(name, value) lines of the report."""
    import torch

    from bnr import provenance

    src = provenance.source()
    commit = src["commit"] or "(installed package, no checkout)"
    lines = [("bnr", f"{src['version']}; commit {commit}{' (uncommitted changes)' if src['dirty'] else ''}")]
    lines += [("python", f"{platform.python_version()} ({platform.python_implementation()})")]
    lines += [("platform", f"{platform.platform()}; {platform.machine()}")]
    for lib in LIBRARIES:
        try:
            lines.append((lib, version(lib)))
        except PackageNotFoundError:
            lines.append((lib, "not installed"))
    lines.append(("cpus", f"{os.cpu_count()} (torch threads {torch.get_num_threads()})"))
    lines.append(("cpu kind", provenance.cpu_kind()))
    cuda = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    lines.append(("cuda", f"{torch.version.cuda}: {', '.join(cuda)}" if cuda else "none"))
    lines.append(("mps", str(torch.backends.mps.is_available())))
    lines += [(f"${v}", os.environ[v]) for v in ENV_VARS if v in os.environ]
    return lines


def main(args: list[str]) -> None:
    if args:
        raise BnrError(f"`bnr env` takes no arguments (got {' '.join(args)})")
    for name, value in report():
        print(f"{name:<20} {value}")
