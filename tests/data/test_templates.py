"""Prompt templates: plain records render exactly as before; chat records bring their system turn and history."""

from __future__ import annotations

from typing import Any

import pytest

from bnr.data.records import Record
from bnr.data.templates import ALPACA_NO_INPUT, ALPACA_WITH_INPUT, build_prompt
from bnr.errors import BnrError
from bnr.tiny import word_tokenizer

PLAIN = [Record(id="a", instruction="q"), Record(id="b", instruction="q", input="ctx")]
CHAT = Record(
    id="c",
    instruction="u2",
    output="a2",
    system="be brief",
    history=(("user", "u1"), ("assistant", "a1"), ("tool", "t1")),
    origin="c.jsonl:3",
)


@pytest.fixture(scope="module")
def tok() -> Any:
    return word_tokenizer(["q ctx u1 u2 a1 t1 be brief"])


def test_plain_records_render_bit_identically(tok: Any) -> None:
    no_input, with_input = PLAIN
    assert build_prompt("alpaca", no_input, None) == ALPACA_NO_INPUT.format(instruction="q")
    assert build_prompt("alpaca", with_input, None) == ALPACA_WITH_INPUT.format(instruction="q", input="ctx")
    assert build_prompt("plain", no_input, None) == "q\n" and build_prompt("plain", with_input, None) == "q\nctx\n"
    assert build_prompt("chat", no_input, tok) == "<|user|>\nq\n<|assistant|>\n"
    assert build_prompt("alpaca", Record(id="d", instruction="q", system=""), None) == build_prompt(
        "alpaca", no_input, None
    )


def test_alpaca_renders_system_and_history_before_the_instruction() -> None:
    prompt = build_prompt("alpaca", CHAT, None)
    assert prompt == (
        "be brief\n\n"
        "### Instruction:\nu1\n\n### Response:\na1\n\n### Tool:\nt1\n\n"
        "### Instruction:\nu2\n\n### Response:\n"
    )
    history_only = build_prompt("alpaca", Record(id="h", instruction="u2", input="x", history=(("user", "u1"),)), None)
    assert history_only.startswith(ALPACA_WITH_INPUT.split("\n\n")[0] + "\n\n### Instruction:\nu1\n\n")
    assert history_only.endswith("### Instruction:\nu2\n\n### Input:\nx\n\n### Response:\n")


def test_plain_and_chat_templates_render_the_whole_conversation(tok: Any) -> None:
    assert build_prompt("plain", CHAT, None) == "be brief\nu1\na1\nt1\nu2\n"
    assert build_prompt("chat", CHAT, tok) == (
        "<|system|>\nbe brief\n<|user|>\nu1\n<|assistant|>\na1\n<|tool|>\nt1\n<|user|>\nu2\n<|assistant|>\n"
    )


def test_a_chat_template_that_rejects_a_role_is_one_line(tok: Any) -> None:
    strict = word_tokenizer(["u1"])
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool role') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(BnrError, match=r"c\.jsonl:3: the model's chat template rejects this conversation \(no tool"):
        build_prompt("chat", CHAT, strict)
