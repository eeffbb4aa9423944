"""`/v1/chat/completions` for the bases and the caller's fine-tuned models (transformers with the adapter merged;
greedy; for one-machine use and tests - a serving stack such as vLLM is the production path, docs/service.md).

The prompt is built with the base's training template, as the adapter saw it in training. Another tenant's model
is a 404, and a provider artifact is never a model name here."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from bnr.errors import BnrError
from bnr.service.api_models import own_model, ready_bases
from bnr.service.auth import OrgDep
from bnr.service.db import new_id
from bnr.service.errors import ApiError, not_found

router = APIRouter(prefix="/v1")
_LOADED: dict[tuple[str, str], tuple[Any, Any, str]] = {}
_LOCK = threading.Lock()
MAX_LOADED = 2


class ChatRequest(BaseModel):
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = Field(default=None, ge=1, le=1024)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1024)
    temperature: float | None = None  # accepted; decoding is greedy
    stream: bool = False


def _load(request: Request, base: str, adapter: Path | None) -> tuple[Any, Any, str]:
    """(model, tokenizer, template) for a base and an optional adapter; the last `MAX_LOADED` stay in memory."""
    from bnr.eval.target import load_target, resolve_target
    from bnr.service.jobspec import policy_config

    key = (base, str(adapter or ""))
    if key not in _LOADED:
        policy = request.app.state.settings.base(base)
        cfg = policy_config(policy)
        model, tokenizer = load_target(resolve_target(str(adapter) if adapter else "", cfg.model))
        while len(_LOADED) >= MAX_LOADED:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = (model, tokenizer, cfg.template)
    return _LOADED[key]


def _complete(request: Request, base: str, adapter: Path | None, messages: list[Any], max_tokens: int) -> str:
    from bnr.data.chat import parse_conversation
    from bnr.data.records import Record
    from bnr.data.templates import build_prompt, uses_special_tokens
    from bnr.eval.generate import generate

    try:
        conv = parse_conversation(messages, "messages")
    except BnrError as e:
        raise ApiError(400, str(e), param="messages", code="invalid_value") from None
    with _LOCK:  # one generation at a time per server process: CPU-bound, and the cache is shared
        model, tokenizer, template = _load(request, base, adapter)
        record = Record(id="chat", instruction=conv.instruction, system=conv.system, history=conv.history)
        prompt = build_prompt(template, record, tokenizer)
        return generate(
            model,
            tokenizer,
            [prompt],
            max_new_tokens=max_tokens,
            progress=False,
            add_special_tokens=uses_special_tokens(template),
        )[0]


@router.post("/chat/completions")
def chat(body: ChatRequest, request: Request, org: OrgDep) -> dict[str, Any]:
    if body.stream:
        raise ApiError(
            400, "stream=true is not offered by this server; omit it", param="stream", code="unsupported_value"
        )
    if body.model in ready_bases(request):
        base, adapter = body.model, None
    else:
        row = own_model(request, org, body.model)
        if row is None:
            raise not_found("model", body.model, "model")
        base, adapter = row.base, request.app.state.store / row.path
    text = _complete(request, base, adapter, body.messages, body.max_completion_tokens or body.max_tokens or 64)
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": None,
    }
