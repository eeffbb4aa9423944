"""`bnr lm-eval`: general capability of a deliverable with EleutherAI's lm-evaluation-harness (`bnr[lm-eval]`).

The target is a bnr run holding a PEFT adapter (its base is the adapter's `base_model_name_or_path`, or `--base`)
or a full model folder. lm_eval's `HFLM` loads the base with the adapter (`peft=`) and `simple_evaluate` runs the
tasks the user names; `--include-path` adds task YAMLs of one's own, e.g. a local JSONL task (`dataset_path: json`,
`dataset_kwargs: {data_files: ...}`), which runs offline. Writes `lm_eval.json` (lm_eval's `results`, `versions`,
`n-shot` and the command's settings) into `--out` and prints lm_eval's table.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json
from bnr.errors import BnrError

log = logging.getLogger(__name__)
RESULT_FILE = "lm_eval.json"


def model_paths(target: Path, base: str | None) -> tuple[str, str | None]:
    """(base model, adapter folder or None) of a target: a PEFT adapter folder, or a full model folder."""
    if not target.is_dir():
        raise BnrError(f"lm-eval target {str(target)!r} is not a folder; give a bnr run or a model folder")
    adapter_cfg = target / "adapter_config.json"
    if not adapter_cfg.is_file():
        if not (target / "config.json").is_file():
            raise BnrError(f"{str(target)!r} holds neither adapter_config.json nor config.json; give a model folder")
        return str(target), None
    named = json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
    found = base or named
    if not found or str(found).startswith("builtin:"):
        raise BnrError(f"{str(target)!r}: its adapter names no loadable base ({named!r}); give --base <model folder>")
    return str(found), str(target)


def evaluate(
    target: Path,
    tasks: list[str],
    *,
    base: str | None = None,
    include_path: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    num_fewshot: int | None = None,
) -> dict[str, Any]:
    """lm_eval's `simple_evaluate` of the target on `tasks`; returns its results (without samples)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise BnrError("bnr lm-eval needs lm-evaluation-harness: pip install 'bnr[lm-eval]'") from None
    pretrained, adapter = model_paths(target, base)
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" or in {include_path}" if include_path else "; add --include-path DIR for task YAMLs of your own"
        raise BnrError(f"lm_eval knows no task {', '.join(unknown)}{where}")
    lm = HFLM(pretrained=pretrained, peft=adapter, device=device, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=num_fewshot)
    if out is None:  # a non-main rank of a launched job
        return {}
    keep = ("results", "versions", "n-shot", "higher_is_better")
    return {k: out[k] for k in keep if k in out} | {
        "target": {"base": pretrained, "adapter": adapter},
        "settings": {"tasks": tasks, "limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size},
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bnr lm-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("target", type=Path, help="a bnr run with a PEFT adapter, or a full model folder")
    p.add_argument("--tasks", required=True, help="lm_eval task names, comma-separated (e.g. arc_easy,hellaswag)")
    p.add_argument("--base", help="the base model when the adapter's base_model_name_or_path is not loadable here")
    p.add_argument("--include-path", help="a folder of task YAMLs of your own (local data sets run offline)")
    p.add_argument("--limit", type=int, help="at most this many documents per task (a smoke test, not a number)")
    p.add_argument("--num-fewshot", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help=f"folder for {RESULT_FILE} (default: the target's lm_eval/ folder)")
    return p


def main(argv: list[str]) -> int:
    """`bnr lm-eval TARGET --tasks ...` (argv[0] is the command name); bad input: one line, exit 2."""
    import sys

    try:
        return _main(argv)
    except BnrError as e:
        print(f"bnr: error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv[1:])
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise BnrError("--tasks is empty; name at least one lm_eval task")
    result = evaluate(
        args.target,
        tasks,
        base=args.base,
        include_path=args.include_path,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        num_fewshot=args.num_fewshot,
    )
    if not result:
        return 0
    out = args.out or args.target / "lm_eval"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RESULT_FILE, result)
    from lm_eval.utils import make_table

    print(make_table(result))
    print(f"results in {out / RESULT_FILE}")
    return 0
