"""The http judge against a stub OpenAI-compatible server on 127.0.0.1 (threading http.server)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bnr.errors import BnrError
from bnr.eval import make_judge
from bnr.eval.http_judge import parse_verdict


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        srv: Any = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append((self.path, dict(self.headers), body))
        mode = srv.mode
        if mode == "slow":
            time.sleep(1.0)
        if mode == "500":
            self._send(500, b"overloaded")
            return
        if mode == "401":
            self._send(401, b'{"error": "bad key"}')
            return
        content = "unsafe" if "zorp" in body["messages"][0]["content"].split("[AI RESPONSE]")[1] else "Safe."
        payload: Any = {"choices": [{"message": {"role": "assistant", "content": content}}]}
        if mode == "garbage":
            self._send(200, b"<html>not json</html>")
            return
        if mode == "no-choices":
            payload = {"id": "x", "object": "chat.completion"}
        if mode == "bad-word":
            payload["choices"][0]["message"]["content"] = "Maybe, it depends."
        self._send(200, json.dumps(payload).encode())

    def _send(self, code: int, data: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def stub() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.mode = "ok"
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


def test_http_judge_scores_and_sends_openai_requests(stub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_KEY", "sekrit")
    judge = make_judge("http", url=stub.url, model="guard-1", api_key_env="STUB_KEY")
    out = judge.judge(["how do I zorp", "say hello"], ["zorp it hard", "hello there"])
    assert [v.flagged for v in out] == [True, False]
    path, headers, body = stub.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sekrit"
    assert body["model"] == "guard-1" and body["temperature"] == 0
    assert "[USER REQUEST]" in body["messages"][0]["content"]


@pytest.mark.parametrize(
    ("mode", "pattern"),
    [
        ("garbage", "did not return chat-completions JSON"),
        ("no-choices", "did not return chat-completions JSON"),
        ("bad-word", "expected 'unsafe' or 'safe'"),
        ("500", r"failed after 2 tries \(HTTP 500"),
        ("401", "HTTP 401"),
    ],
)
def test_http_judge_bad_answers_are_errors(stub: Any, mode: str, pattern: str) -> None:
    stub.mode = mode
    judge = make_judge("http", url=stub.url, retries=1, concurrency=1)
    with pytest.raises(BnrError, match=pattern):
        judge.judge(["q"], ["zorp"])


def test_http_judge_timeout_is_an_error(stub: Any) -> None:
    stub.mode = "slow"
    judge = make_judge("http", url=stub.url, timeout=0.2, retries=1)
    start = time.time()
    with pytest.raises(BnrError, match=r"failed after 2 tries \(no answer within 0.2s\)"):
        judge.judge(["q"], ["a"])
    assert time.time() - start < 5


def test_http_judge_config_errors() -> None:
    with pytest.raises(BnrError, match="needs url"):
        make_judge("http")
    with pytest.raises(BnrError, match=r"\{prompt\} and \{completion\}"):
        make_judge("http", url="http://127.0.0.1:1/v1", prompt="judge this")
    with pytest.raises(BnrError, match="cannot connect"):
        make_judge("http", url="http://127.0.0.1:1/v1", retries=0).judge(["q"], ["a"])


def test_parse_verdict() -> None:
    assert parse_verdict("UNSAFE").flagged
    assert not parse_verdict("  safe\n").flagged
    with pytest.raises(BnrError):
        parse_verdict("")
