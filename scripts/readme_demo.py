"""Record a finished `bnr demo` folder's table in README.md (the block between `<!-- bnr demo: begin ... -->` and
`<!-- bnr demo: end -->`): `table.md` without its wall-time columns, the results digest of the performance
suite (benchmarks/p4_jobs.py) and the kind of CPU it ran on (`bnr.provenance.cpu_kind`, which this script must run
on too). tests/toy/test_readme_demo.py (slow) reruns the demo and compares, on that kind of CPU.

    bnr demo out=runs/demo && python scripts/readme_demo.py runs/demo
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the recorded block (tests/toy/test_readme_demo.py reads it with this pattern too); `cpu` is absent only in a
# block written before the CPU kind was recorded, which this script replaces
BLOCK = re.compile(
    r"<!-- bnr demo: begin; results_digest (?P<digest>[^ ;]+)(; cpu (?P<cpu>[^>]+))? -->\n"
    r"(?P<table>.*?)\n<!-- bnr demo: end -->",
    re.S,
)


def block(demo_out: Path) -> str:
    spec = importlib.util.spec_from_file_location("p4_jobs", ROOT / "benchmarks" / "p4_jobs.py")
    assert spec and spec.loader
    p4 = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = p4  # its dataclasses look their module up
    sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports its siblings
    spec.loader.exec_module(p4)
    table = p4._table_without_timings((demo_out / "table.md").read_text()).strip()
    digest = p4.demo_digests(demo_out)["results_digest"]
    sys.path.insert(0, str(ROOT / "src"))
    from bnr.provenance import cpu_kind

    return f"<!-- bnr demo: begin; results_digest {digest}; cpu {cpu_kind()} -->\n{table}\n<!-- bnr demo: end -->"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "results.json").is_file():
        print("usage: python scripts/readme_demo.py DEMO_OUT (a finished `bnr demo out=DEMO_OUT`)", file=sys.stderr)
        return 2
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if not BLOCK.search(text):
        print("README.md has no `<!-- bnr demo: begin ... -->` ... `<!-- bnr demo: end -->` block", file=sys.stderr)
        return 2
    readme.write_text(BLOCK.sub(lambda _: block(Path(argv[0])), text), encoding="utf-8")
    print(f"recorded {argv[0]}'s table in README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
