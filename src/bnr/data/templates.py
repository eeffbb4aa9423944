"""Prompt templates: Alpaca (with and without Input, as Booster / the paper use) and the model's chat template."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bnr.data.records import Record
from bnr.errors import BnrError
from bnr.registry import Registry

Template = Callable[[Record, Any], str]
TEMPLATES: Registry[Template] = Registry("template")

ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


@TEMPLATES.register("alpaca")
def alpaca(record: Record, tokenizer: Any = None) -> str:
    """Alpaca prompt; the Input block appears only when the record has an input."""
    tpl = ALPACA_WITH_INPUT if record.input else ALPACA_NO_INPUT
    return tpl.format(instruction=record.instruction, input=record.input)


@TEMPLATES.register("plain")
def plain(record: Record, tokenizer: Any = None) -> str:
    """Instruction (and input) followed by a newline; for models trained without a template."""
    return f"{record.instruction}\n{record.input}\n" if record.input else f"{record.instruction}\n"


@TEMPLATES.register("chat")
def chat(record: Record, tokenizer: Any) -> str:
    """The tokenizer's own chat template (system message from the record when present)."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise BnrError("template 'chat' needs a tokenizer with a chat_template; use template=alpaca for this model")
    user = f"{record.instruction}\n\n{record.input}" if record.input else record.instruction
    messages = [{"role": "system", "content": record.system}] if record.system else []
    messages.append({"role": "user", "content": user})
    text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


def uses_special_tokens(template: str) -> bool:
    """Chat templates write their own BOS; the others get the tokenizer's special tokens."""
    return template != "chat"


def build_prompt(template: str, record: Record, tokenizer: Any) -> str:
    return TEMPLATES.get(template)(record, tokenizer)
