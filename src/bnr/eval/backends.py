"""Generation backends by name (`eval.backend`): `hf` (the one batched `transformers` loop) and `vllm` (a vLLM
engine, the `vllm` extra on a GPU). A backend loads a resolved target for generation, says early whether it can
run here, and whether the model it loads exposes logits (the finite-logits check needs them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bnr.registry import Registry


@dataclass(frozen=True)
class Backend:
    """`load(target) -> (model, tokenizer)`; `require()` raises a one-line `BnrError` where it cannot run;
    `logits`: the loaded model is a torch model whose logits can be checked; `cache_suffix`: what the response
    cache's model key adds, since two backends may decode the same prompt differently."""

    name: str
    load: Callable[[Any], tuple[Any, Any]]
    require: Callable[[], None]
    logits: bool
    cache_suffix: str


BACKENDS: Registry[Backend] = Registry("generation backend")


def _load_hf(target: Any) -> tuple[Any, Any]:
    from bnr.eval.target import load_target

    return load_target(target)


def _load_vllm(target: Any) -> tuple[Any, Any]:
    from bnr.eval.vllm_backend import load_vllm_target

    return load_vllm_target(target)


def _require_vllm() -> None:
    from bnr.eval.vllm_backend import require_vllm

    require_vllm()


BACKENDS.add("hf", Backend("hf", _load_hf, lambda: None, True, ""), "transformers generate, batched (default)")
BACKENDS.add("vllm", Backend("vllm", _load_vllm, _require_vllm, False, "-vllm"), "a vLLM engine (the vllm extra)")


def require_backend(name: str) -> Backend:
    """The backend `name`, after checking it can run here (before anything is written)."""
    backend = BACKENDS.get(name)
    backend.require()
    return backend
