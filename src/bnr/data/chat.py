"""Chat rows (`messages`, as TRL and hosted fine-tuning APIs write them) -> the parts of a record.

A conversation `[system?, turn, ..., user, assistant]` becomes: the leading system turn -> `system`; the
final assistant turn -> the target (`output`); the user turn before it -> `instruction`; every earlier turn
(any role: user, assistant, tool, ...) -> `history`, in order. A conversation that does not end with an
assistant turn has no target (fine for a prompt set, an error for training data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bnr.errors import BnrError

Turn = tuple[str, str]
ROLE_ALIASES = {"developer": "system", "human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant"}


@dataclass(frozen=True)
class Conversation:
    system: str | None
    history: tuple[Turn, ...]
    instruction: str
    output: str | None


def content_text(content: Any, where: str) -> str:
    """A message's text: a string, or a list of parts (strings or {"type": "text", "text": ...}) joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise BnrError(f"{where}: has a {kind!r} content part; only text parts can be trained on, drop it")
        return "\n".join(texts)
    if content is None:
        raise BnrError(f"{where}: has no text content (tool calls are not supported); give it a 'content' string")
    raise BnrError(f"{where}: content is {type(content).__name__}, not text; give a string or a list of text parts")


def parse_turns(messages: Any, where: str) -> list[Turn]:
    """(role, text) of each message; roles lower-cased, common aliases (human, gpt, developer) mapped."""
    if not isinstance(messages, list) or not messages:
        raise BnrError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    turns = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BnrError(f"{where}: message {i} is not a {{role, content}} object")
        role = ROLE_ALIASES.get(m["role"].lower(), m["role"].lower())
        turns.append((role, content_text(m.get("content"), f"{where}: message {i} ({role})")))
    return turns


def parse_conversation(messages: Any, where: str) -> Conversation:
    """Split a message list into system / history / instruction / output; errors name `where` and the fix."""
    turns = parse_turns(messages, where)
    system = turns.pop(0)[1] if turns[0][0] == "system" else None
    output = turns.pop()[1] if turns and turns[-1][0] == "assistant" else None
    if not turns:
        raise BnrError(f"{where}: the conversation has no user turn; add the user's message before the answer")
    role, instruction = turns[-1]
    if role != "user":
        raise BnrError(
            f"{where}: the turn before the answer is {role!r}, not 'user'; a prompt must end with the user's message "
            "(drop the trailing tool turns or end the conversation after a user turn)"
        )
    return Conversation(system=system, history=tuple(turns[:-1]), instruction=instruction, output=output)
