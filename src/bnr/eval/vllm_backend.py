"""`eval.backend=vllm`: completions from vLLM instead of `transformers.generate` (the `vllm` extra, a GPU path).

The target is served the way a deliverable is served in production: the base model with the adapter as a vLLM
LoRA (`enable_lora`, `max_lora_rank` = the smallest vLLM rank at least the adapter's, r_U + r_R for a merged
Buffer-and-Reinforce adapter). Prompts are tokenized by the target's own tokenizer with the same special-token
rule as the transformers loop, so both backends see the same token ids; decoding is greedy unless a benchmark
asks otherwise, and stop strings cut the text as in `bnr.eval.generate`. Completions are cached under their own
key (`<target key>-vllm`): two backends may decode the same prompt differently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from bnr.errors import BnrError

log = logging.getLogger(__name__)


def require_vllm() -> None:
    """Fail before anything is written when vLLM cannot run here (`eval.backend=vllm`)."""
    _vllm()


def _vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise BnrError(
            "eval.backend=vllm needs vLLM (a CUDA package): pip install 'bnr[vllm]' in an environment of its own "
            "(vLLM pins its own torch), or use eval.backend=hf"
        ) from None
    return vllm


class VllmModel:
    """A vLLM engine holding the target's base and (optionally) its adapter as a LoRA; `complete` generates."""

    def __init__(self, base: str, adapter: str | None, *, dtype: str = "auto", **engine: Any) -> None:
        from bnr.cards import vllm_max_lora_rank

        vllm = _vllm()
        self.lora: Any = None
        kwargs: dict[str, Any] = {"model": base, "dtype": dtype, "seed": 0, **engine}
        if adapter:
            rank = adapter_rank(Path(adapter))
            kwargs |= {"enable_lora": True, "max_lora_rank": vllm_max_lora_rank(rank), "max_loras": 1}
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("bnr", 1, str(adapter))
        log.info("vLLM engine for %s (adapter %s)", base, adapter or "none")
        self.engine = vllm.LLM(**kwargs)
        self.sampling_params = vllm.SamplingParams
        self.training = False

    def complete(
        self, prompt_ids: list[list[int]], *, max_new_tokens: int, stop: list[str] | None, do_sample: bool, **kw: Any
    ) -> list[str]:
        """Completions (new text only) of the tokenized prompts, in order; greedy unless `do_sample`."""
        params = self.sampling_params(
            max_tokens=max_new_tokens, stop=stop or None, temperature=kw.pop("temperature", 1.0) if do_sample else 0.0
        )
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
        outputs = self.engine.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    # the transformers loop toggles these around generation; an engine has no training mode
    def eval(self) -> VllmModel:
        return self

    def train(self, mode: bool = True) -> VllmModel:
        return self


def adapter_rank(folder: Path) -> int:
    """The largest LoRA rank of the adapter in `folder` (r and every rank_pattern entry)."""
    try:
        cfg = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise BnrError(f"{str(folder)!r}: unreadable adapter_config.json") from None
    return max([int(cfg.get("r", 0)), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())])


def load_vllm_target(target: Any) -> tuple[VllmModel, Any]:
    """(engine, tokenizer) of a resolved `bnr.eval.target.Target`: its base (resolved like `bnr.models`) plus its
    adapter as a vLLM LoRA."""
    from bnr.models import load_tokenizer, resolve

    base = resolve(target.base)
    if base.gguf_file:
        raise BnrError("eval.backend=vllm does not load GGUF bases here; use eval.backend=hf")
    engine = VllmModel(base.name_or_path, target.adapter, dtype=base.dtype, revision=base.revision)
    return engine, load_tokenizer(target.base)
