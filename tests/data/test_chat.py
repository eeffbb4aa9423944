"""Chat rows (`messages`) of the shapes TRL and hosted fine-tuning APIs write, loaded through the `file` source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bnr.config import DataConfig
from bnr.data.chat import parse_conversation
from bnr.data.sources import load_records
from bnr.errors import BnrError


def _write(path: Path, convs: list[list[dict[str, Any]]]) -> str:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in convs))
    return str(path)


def _msg(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


def test_single_turn_with_and_without_system(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "chat.jsonl",
        [
            [_msg("user", "hi"), _msg("assistant", "hello")],
            [_msg("system", "be brief"), _msg("user", "name a color"), _msg("assistant", "blue")],
        ],
    )
    plain, with_system = load_records(DataConfig(path=path))
    assert (plain.instruction, plain.output, plain.system, plain.history) == ("hi", "hello", None, ())
    assert (with_system.instruction, with_system.output, with_system.system) == ("name a color", "blue", "be brief")
    assert with_system.origin.endswith("chat.jsonl:2")


def test_multi_turn_keeps_history_and_trains_on_the_last_answer(tmp_path: Path) -> None:
    conv = [
        _msg("system", "s"),
        _msg("user", "u1"),
        _msg("assistant", "a1"),
        _msg("user", "u2"),
        _msg("assistant", "a2"),
    ]
    rec = load_records(DataConfig(path=_write(tmp_path / "c.jsonl", [conv])))[0]
    assert (rec.system, rec.history, rec.instruction, rec.output) == (
        "s",
        (("user", "u1"), ("assistant", "a1")),
        "u2",
        "a2",
    )


def test_tool_and_other_roles_stay_in_the_history(tmp_path: Path) -> None:
    conv = [
        _msg("user", "weather?"),
        _msg("assistant", "calling the tool"),
        _msg("tool", '{"temp": 3}'),
        _msg("assistant", "3 degrees"),
        _msg("Human", "thanks, and tomorrow?"),
        _msg("assistant", "no idea"),
    ]
    rec = load_records(DataConfig(path=_write(tmp_path / "c.jsonl", [conv])))[0]
    assert [r for r, _ in rec.history] == ["user", "assistant", "tool", "assistant"]
    assert (rec.instruction, rec.output) == ("thanks, and tomorrow?", "no idea")


def test_a_tool_turn_right_before_the_answer_is_an_error() -> None:
    conv = [_msg("user", "weather?"), _msg("tool", "3"), _msg("assistant", "3 degrees")]
    with pytest.raises(BnrError, match=r"x:1: the turn before the answer is 'tool', not 'user'"):
        parse_conversation(conv, "x:1")


def test_missing_assistant_turn_names_the_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.jsonl",
        [[_msg("user", "q"), _msg("assistant", "a")], [_msg("system", "s"), _msg("user", "no answer")]],
    )
    with pytest.raises(BnrError, match=r"c\.jsonl:2: record has no output to train on.*messages"):
        load_records(DataConfig(path=path))
    prompts = load_records(DataConfig(path=path), require_output=False)  # a prompt set may end on the user turn
    assert prompts[1].instruction == "no answer" and prompts[1].output == ""


def test_content_as_a_list_of_parts(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    conv = [_msg("user", parts), _msg("assistant", [{"type": "text", "text": "ok"}])]
    rec = load_records(DataConfig(path=_write(tmp_path / "c.jsonl", [conv])))[0]
    assert (rec.instruction, rec.output) == ("first\nsecond", "ok")
    image = [_msg("user", [{"type": "image_url", "image_url": {"url": "x"}}]), _msg("assistant", "a")]
    with pytest.raises(BnrError, match=r"c2\.jsonl:1: message 1 \(user\): has a 'image_url' content part"):
        load_records(DataConfig(path=_write(tmp_path / "c2.jsonl", [image])))


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "must be a non-empty list"),
        ("hello", "must be a non-empty list"),
        ([{"content": "no role"}], r"message 1 is not a \{role, content\} object"),
        ([_msg("user", "q"), _msg("assistant", None)], r"message 2 \(assistant\): has no text content"),
        ([_msg("user", 5), _msg("assistant", "a")], r"message 1 \(user\): content is int, not text"),
        ([_msg("system", "s"), _msg("assistant", "a")], "has no user turn"),
    ],
)
def test_malformed_conversations_name_the_line_and_the_fix(tmp_path: Path, messages: Any, error: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": messages}) + "\n")
    with pytest.raises(BnrError, match=rf"bad\.jsonl:1: .*{error}"):
        load_records(DataConfig(path=str(path)))


def test_every_row_must_have_the_first_rows_shape(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"messages": [_msg("user", "q"), _msg("assistant", "a")]})
        + "\n\n"
        + json.dumps({"instruction": "q", "output": "a"})
        + "\n"
    )
    with pytest.raises(BnrError, match=r"mixed\.jsonl:3: has no 'messages'"):
        load_records(DataConfig(path=str(path)))


def test_messages_column_can_be_remapped(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"conversation": [_msg("user", "q"), _msg("assistant", "a")]}]))
    rec = load_records(DataConfig(path=str(path), fields={"messages": "conversation"}))[0]
    assert (rec.instruction, rec.output) == ("q", "a")
