"""The README's demo table is what `bnr demo` writes on this stack (the lock, requirements.lock), bit for bit, on
the kind of CPU that recorded it (`bnr.provenance.cpu_kind`, in the block's header: float kernels differ between
CPUs; on another kind the test skips and says how to record one).

Slow: the demo takes about 6 minutes on 2 idle cores. The comparison uses the digests the performance suite
computes (benchmarks/p4_jobs.py: `results.json`'s numbers and `table.md`, both without wall times).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bnr.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str, folder: str) -> ModuleType:
    """A module of the repository's `folder` (not a package), loaded from its file."""
    sys.path.insert(0, str(ROOT / folder))  # p4_jobs imports its siblings
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def readme_demo() -> tuple[str, str, str]:
    """(the table, the results digest, the kind of CPU) the README records for `bnr demo`."""
    found = _script("readme_demo", "scripts").BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found and found["cpu"], "README.md has no `<!-- bnr demo: begin; results_digest ...; cpu ... -->` block"
    return found["table"].strip(), found["digest"], found["cpu"].strip()


def test_the_readme_block_names_its_cpu_kind() -> None:
    from bnr.provenance import cpu_kind

    table, digest, cpu = readme_demo()
    assert len(digest) == 64 and table.startswith("**n = 1000**")
    assert cpu.count(", ") == 1 and cpu.rsplit(", ", 1)[1] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256")
    assert cpu_kind().count(", ") == 1  # the same form here


@pytest.mark.slow
def test_readme_demo_table_is_what_bnr_demo_writes(tmp_path: Path) -> None:
    from bnr.provenance import cpu_kind

    table, digest, cpu = readme_demo()
    if cpu != cpu_kind():
        pytest.skip(
            f"the README's demo was recorded on {cpu}, this CPU is {cpu_kind()} (float kernels differ): "
            "record it here with bnr demo out=runs/demo && python scripts/readme_demo.py runs/demo"
        )
    assert digest != "NOT-RECORDED", (
        "record the demo: bnr demo out=runs/demo && python scripts/readme_demo.py runs/demo"
    )
    assert main(["demo", f"out={tmp_path}"]) == 0
    p4 = _script("p4_jobs", "benchmarks")
    assert p4._table_without_timings((tmp_path / "table.md").read_text()).strip() == table
    assert p4.demo_digests(tmp_path)["results_digest"] == digest
