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


ALPACA_TURN = {"user": "### Instruction:\n{}\n\n", "assistant": "### Response:\n{}\n\n"}


def _alpaca_turn(role: str, text: str) -> str:
    return ALPACA_TURN.get(role, f"### {role.capitalize()}:\n{{}}\n\n").format(text)


@TEMPLATES.register("alpaca")
def alpaca(record: Record, tokenizer: Any = None) -> str:
    """Alpaca prompt; the Input block appears only when the record has an input.

    A chat record's system turn replaces Alpaca's opening sentence, and its earlier turns come before the
    instruction as `### Instruction:` / `### Response:` blocks (other roles as `### Tool:` and the like).
    """
    tpl = ALPACA_WITH_INPUT if record.input else ALPACA_NO_INPUT
    prompt = tpl.format(instruction=record.instruction, input=record.input)
    if not record.system and not record.history:
        return prompt
    preamble, _, body = prompt.partition("\n\n")
    turns = "".join(_alpaca_turn(role, text) for role, text in record.history)
    return f"{record.system or preamble}\n\n{turns}{body}"


@TEMPLATES.register("plain")
def plain(record: Record, tokenizer: Any = None) -> str:
    """Instruction (and input) followed by a newline; for models trained without a template.

    A chat record's system turn and earlier turns come first, one line each.
    """
    prompt = f"{record.instruction}\n{record.input}\n" if record.input else f"{record.instruction}\n"
    context = [record.system] if record.system else []
    return "".join(f"{t}\n" for t in [*context, *(text for _, text in record.history)]) + prompt


@TEMPLATES.register("chat")
def chat(record: Record, tokenizer: Any) -> str:
    """The tokenizer's own chat template: the record's system turn, its earlier turns, then the user turn."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise BnrError("template 'chat' needs a tokenizer with a chat_template; use template=alpaca for this model")
    user = f"{record.instruction}\n\n{record.input}" if record.input else record.instruction
    messages = [{"role": "system", "content": record.system}] if record.system else []
    messages += [{"role": role, "content": text} for role, text in record.history]
    messages.append({"role": "user", "content": user})
    try:
        text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja2 raises its own errors (e.g. a role the template does not know)
        if not type(e).__module__.startswith("jinja2"):
            raise
        raise BnrError(
            f"{record.origin or record.id}: the model's chat template rejects this conversation ({e}); "
            "drop the roles it does not know, or use template=alpaca"
        ) from None
    return text


def uses_special_tokens(template: str) -> bool:
    """Chat templates write their own BOS; the others get the tokenizer's special tokens."""
    return template != "chat"


def build_prompt(template: str, record: Record, tokenizer: Any) -> str:
    return TEMPLATES.get(template)(record, tokenizer)
