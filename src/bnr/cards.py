"""Model cards (README.md) for every deliverable, and the prompt template written so a serving stack applies it.

A card is rendered from what the run directory already holds: `manifest.json` (stage, base, seed, template,
data manifest, parents), `config.yaml` (the defense and merge settings) and `adapter_config.json` (rank,
modules). It says the base, the rank, the prompt template, the defense and its settings, the data summary and,
once `bnr eval` has measured the run, the evaluation summary. Beside an adapter the template is also written as
`chat_template.jinja` (Alpaca / plain; a `chat` run uses the base tokenizer's own chat template), so a serving
stack can render exactly the prompts the adapter was trained on.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from bnr.artifacts import ADAPTER_CONFIG, FULL_MODEL_DIR, atomic_write_text, parent_path
from bnr.card_results import entries_of, eval_results, evaluation_lines, read_evaluations, record_evaluations
from bnr.config import FAST_SAFE_LOADER

log = logging.getLogger(__name__)

CARD = "README.md"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

_ALPACA_HEAD = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n"
)
_PROMPT_PARTS = {"alpaca": (_ALPACA_HEAD, "\n\n### Response:\n"), "plain": ("", "\n")}


def chat_template_for(template: str) -> str | None:
    """A Jinja chat template that renders a user turn exactly as bnr's `template` does (None for `chat`, which is
    the base tokenizer's own template, and for templates without a single-turn form)."""
    if template not in _PROMPT_PARTS:
        return None
    head, tail = (json.dumps(s) for s in _PROMPT_PARTS[template])
    return (
        "{% for message in messages %}"
        f"{{% if message['role'] == 'user' %}}{{{{ {head} }}}}{{{{ message['content'] }}}}{{{{ {tail} }}}}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
        "{% endfor %}"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        data = yaml.load((run_dir / "config.yaml").read_text(), Loader=FAST_SAFE_LOADER)
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _parent_manifest(manifest: dict[str, Any], stage: str, run_dir: Path) -> dict[str, Any]:
    folder = parent_path(manifest, stage, run_dir)
    return _read_json(folder / "manifest.json") if folder else {}


def _rank(adapter_cfg: dict[str, Any]) -> str:
    if not adapter_cfg:
        return "-"
    ranks = {int(adapter_cfg.get("r", 0)), *(int(v) for v in (adapter_cfg.get("rank_pattern") or {}).values())}
    ranks.discard(0)
    return str(max(ranks)) if len(ranks) == 1 else f"{min(ranks)}-{max(ranks)} (max {max(ranks)})"


def _modules(adapter_cfg: dict[str, Any]) -> str:
    """`q_proj, v_proj` for target types, or the distinct module types of a list of full module names."""
    names = adapter_cfg.get("target_modules") or []
    if isinstance(names, str):
        return f"`{names}`"
    kinds = sorted({str(n).rsplit(".", 1)[-1] for n in names})
    count = f" ({len(names)} modules)" if len(names) > len(kinds) else ""
    return (", ".join(kinds) or "-") + count


def _max_rank(adapter_cfg: dict[str, Any]) -> int:
    ranks = [int(adapter_cfg.get("r", 0)), *(int(v) for v in (adapter_cfg.get("rank_pattern") or {}).values())]
    return max(ranks)


# the --max-lora-rank values vLLM accepts; an adapter is served with the smallest one at least its rank
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int:
    """The `--max-lora-rank` to give vLLM for an adapter of `rank` (vLLM's default, 16, refuses larger ones)."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


def lora_summary(run_dir: Path) -> dict[str, Any]:
    """What a manifest records about the adapter in `run_dir` ({} without one): rank, alpha, modules, base, and
    the vLLM `--max-lora-rank` that serves it."""
    adapter_cfg = _read_json(run_dir / ADAPTER_CONFIG)
    if not adapter_cfg:
        return {}
    rank = _max_rank(adapter_cfg)
    return {
        "rank": rank,
        "alpha": adapter_cfg.get("lora_alpha"),
        "rank_pattern": bool(adapter_cfg.get("rank_pattern")),
        "target_modules": adapter_cfg.get("target_modules"),
        "base_model_name_or_path": adapter_cfg.get("base_model_name_or_path"),
        "vllm_max_lora_rank": vllm_max_lora_rank(rank),
    }


def _defense(manifest: dict[str, Any], config: dict[str, Any], run_dir: Path) -> str:
    stage = manifest.get("stage")
    if stage == "merge":
        m = config.get("merge", {})
        user_dir = parent_path(manifest, "user", run_dir)
        user = _read_json(user_dir / "manifest.json") if user_dir else {}
        trained = _defense(user, {}, user_dir) if user and user_dir else "-"
        return (
            f"{trained}; then merge method `{m.get('method')}` (alpha {m.get('alpha')}, tau {m.get('tau')}, "
            f"scale {m.get('scale')}) of the ReinforceLoRA"
        )
    if stage == "user":
        mode = (
            f", buffer attached frozen ({manifest.get('buffer_mode')})" if manifest.get("trained_with_buffer") else ""
        )
        return f"`{manifest.get('defense')}`{mode}"
    return {
        "buffer": "none: this is the BufferLoRA (a jailbreak; provider side only, never a deliverable)",
        "reinforce": "ReinforceLoRA, trained with the BufferLoRA merged and frozen",
        "align": "safety alignment (refusal data), merged into a full model",
        "safety": "safety LoRA on refusal data",
    }.get(str(stage), "-")


def _data(manifest: dict[str, Any], run_dir: Path) -> str:
    data = manifest.get("data") or _parent_manifest(manifest, "user", run_dir).get("data") or {}
    if not data:
        return "-"
    if "n" in data and "p" in data:
        harmful = f"{data.get('n_harmful')} harmful"
        return f"{data['n']} samples, harmful ratio p = {data['p']} ({harmful}), seed {data.get('seed')}"
    if "count" in data:
        return f"{data['count']} samples ({data.get('role', 'training data')})"
    parts = [f"{k}: {v.get('count')} samples" for k, v in data.items() if isinstance(v, dict) and "count" in v]
    return "; ".join(parts) or "-"


def results_table(results: dict[str, Any]) -> list[str]:
    """Markdown rows (benchmark, metric, value, n) of an evaluation summary's `results`."""
    lines = ["| benchmark | metric | value (%) | n |", "|---|---|---|---|"]
    for name, res in results.items():
        value = res.get("value")
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        if res.get("valid") is False:  # never a score: see the result's invalid_reason
            shown = f"INVALID ({shown})"
        lines.append(f"| {name} | {res.get('metric')} | {shown} | {res.get('n')} |")
    return lines


def base_names(manifest: dict[str, Any], adapter_cfg: dict[str, Any]) -> tuple[str, str | None]:
    """(how the card names the base, its hub id for the card's `base_model` metadata or None): a hub id as is; a
    local folder or a `builtin:` base by its name, never by a path of this machine."""
    given = str(manifest.get("base_model", {}).get("name_or_path") or adapter_cfg.get("base_model_name_or_path") or "")
    if given.startswith("builtin:"):
        return given, None
    if not given or given.startswith((".", "/", "~")) or Path(given).expanduser().exists():
        return (Path(given).name or "-") + " (a local folder)", None
    return given, given


def render_card(
    run_dir: Path,
    manifest: dict[str, Any],
    *,
    full_model: bool,
    evaluations: list[dict[str, Any]],
    location: Path | None = None,
) -> str:
    """The README.md text of a run's adapter (or, with `full_model`, of its merged full model), built with
    `huggingface_hub.ModelCard` (metadata with `model-index` results); `location` is where the run will live once
    complete (the usage snippet names its folder, never a path of this machine)."""
    from huggingface_hub import ModelCard, ModelCardData

    config = _read_config(run_dir)
    adapter_cfg = _read_json(run_dir / ADAPTER_CONFIG)
    base, hub_id = base_names(manifest, adapter_cfg)
    template = manifest.get("template", "alpaca")
    stage = manifest.get("stage", "run")
    kind = "full model (weights merged into the base)" if full_model or not adapter_cfg else "PEFT LoRA adapter"
    folder = (location or run_dir).resolve().name
    here = f"{folder}/{FULL_MODEL_DIR}" if full_model else folder
    tpl_note = (
        f"`{template}` (written beside it as `{CHAT_TEMPLATE_FILE}`)"
        if chat_template_for(template) and not full_model
        else f"`{template}`" + (" (the tokenizer's chat_template renders it)" if full_model else "")
    )
    body = [
        f"# bnr `{stage}` {kind}",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}` (revision {manifest.get('base_model', {}).get('revision') or '-'}) |",
        f"| LoRA rank | {_rank(adapter_cfg)}; modules: {_modules(adapter_cfg)} |",
        f"| prompt template | {tpl_note} |",
        f"| defense | {_defense(manifest, config, location or run_dir)} |",
        f"| data | {_data(manifest, location or run_dir)} |",
        f"| seed | {manifest.get('seed')} |",
        f"| made by | bnr {manifest.get('versions', {}).get('bnr', '')} on {manifest.get('created', '-')} |",
        "",
        "## Evaluation",
        "",
        *evaluation_lines(evaluations),
        "",
        *_usage(here, hub_id or "<base model>", adapter_cfg, full_model, template),
    ]
    data = ModelCardData(
        base_model=hub_id,
        library_name="transformers" if full_model or not adapter_cfg else "peft",
        tags=["bnr", "safety", "lora"],
        model_name=f"bnr-{stage}-{folder}",
        eval_results=eval_results(evaluations) or None,
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(body) + "\n"))


def _usage(here: str, base: str, adapter_cfg: dict[str, Any], full_model: bool, template: str) -> list[str]:
    if full_model or not adapter_cfg:
        return [
            "## Use",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'model = AutoModelForCausalLM.from_pretrained("{here}")',
            "```",
        ]
    return [
        "## Use",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{here}")',
        "```",
        "",
        f"vLLM multi-LoRA: `vllm serve {base} --enable-lora --max-lora-rank "
        f"{vllm_max_lora_rank(_max_rank(adapter_cfg))} --lora-modules bnr={here}` (from the folder above this one; "
        "`--max-lora-rank` must be at "
        "least this adapter's rank, for a merged adapter r_U + r_R; vLLM's default of 16 refuses more)"
        + (
            f"; `--chat-template {here}/{CHAT_TEMPLATE_FILE}` makes chat requests use the `{template}` prompt "
            "template it was trained with."
            if chat_template_for(template)
            else f"; send prompts in the `{template}` template it was trained with."
        ),
    ]


def write_cards(
    run_dir: Path,
    manifest: dict[str, Any],
    evaluations: list[dict[str, Any]] | None = None,
    location: Path | None = None,
) -> None:
    """Write README.md (and the template file) into a run directory holding an adapter or a model, and into its
    `full_model/` when there is one. Runs without weights (eval, analysis) get none. `evaluations`: default, those
    the run has recorded (`bnr.card_results`). `location`: the run's final path when `run_dir` is still its partial
    folder."""
    evaluations = read_evaluations(run_dir) if evaluations is None else evaluations
    has_adapter = (run_dir / ADAPTER_CONFIG).is_file()
    if has_adapter or (run_dir / "config.json").is_file():
        text = render_card(run_dir, manifest, full_model=False, evaluations=evaluations, location=location)
        atomic_write_text(run_dir / CARD, text)
        jinja = chat_template_for(str(manifest.get("template", "")))
        if has_adapter and jinja:
            atomic_write_text(run_dir / CHAT_TEMPLATE_FILE, jinja)
    if (run_dir / FULL_MODEL_DIR / "config.json").is_file():
        text = render_card(run_dir, manifest, full_model=True, evaluations=evaluations, location=location)
        atomic_write_text(run_dir / FULL_MODEL_DIR / CARD, text)


def add_evaluation(target_dir: str | Path, summary: dict[str, Any], eval_run: Path, *, limit: int | None) -> None:
    """Record an evaluation's results (`summary.json` of `eval_run`) in a complete bnr run and re-render its cards.
    A limited evaluation (`limit`) leaves the card as it is, with a warning."""
    from bnr import distributed

    if not distributed.is_main():  # rank 0 alone writes in a launched job
        return
    run_dir = Path(target_dir)
    if run_dir.name == FULL_MODEL_DIR and (run_dir.parent / "manifest.json").is_file():
        run_dir = run_dir.parent
    manifest = _read_json(run_dir / "manifest.json")
    if manifest.get("status") != "complete" or manifest.get("stage") == "buffer":
        return
    if limit is not None:
        log.warning(
            "eval.limit=%d: a limited evaluation is not the benchmark's number; the model card of %s is left as it "
            "is (evaluate without eval.limit to report it there)",
            limit,
            run_dir,
        )
        return
    evaluations = record_evaluations(run_dir, entries_of(summary, eval_run, run_dir))
    write_cards(run_dir, manifest, evaluations)
    log.info("added the evaluation to %s", run_dir / CARD)
