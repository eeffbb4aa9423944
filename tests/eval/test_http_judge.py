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
        if mode == "429-twice" and len(srv.requests) <= 2:
            # the first asks for a 1 s pause in Retry-After, the second leaves the wait to the client's backoff
            self._send(429, b'{"error": "rate limited"}', {"Retry-After": "1"} if len(srv.requests) == 1 else {})
            return
        if mode == "503":
            self._send(503, b"unavailable")
            return
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

    def _send(self, code: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
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
    judge = make_judge("http", url=stub.url, retries=1, backoff=0.01, concurrency=1)
    with pytest.raises(BnrError, match=pattern):
        judge.judge(["q"], ["zorp"])


def test_http_judge_timeout_is_an_error(stub: Any) -> None:
    stub.mode = "slow"
    judge = make_judge("http", url=stub.url, timeout=0.2, retries=1, backoff=0.01)
    start = time.time()
    with pytest.raises(BnrError, match=r"failed after 2 tries \(no answer within 0.2s\)"):
        judge.judge(["q"], ["a"])
    assert time.time() - start < 5


def test_http_judge_waits_out_rate_limits(stub: Any) -> None:
    """429 twice, then an answer: the run goes on, after the server's Retry-After and then the exponential backoff."""
    stub.mode = "429-twice"
    judge = make_judge("http", url=stub.url, backoff=0.2, concurrency=1)
    start = time.monotonic()
    assert [v.flagged for v in judge.judge(["q"], ["zorp"])] == [True]
    elapsed = time.monotonic() - start
    assert len(stub.requests) == 3
    assert 1.0 + 0.2 <= elapsed < 5, elapsed  # Retry-After: 1, then backoff 0.2 * 2^1 (at least 0.4 with jitter >= 0)


def test_http_judge_gives_up_after_bounded_retries(stub: Any) -> None:
    stub.mode = "503"
    judge = make_judge("http", url=stub.url, retries=3, backoff=0.01, concurrency=1)
    with pytest.raises(BnrError) as err:
        judge.judge(["q"], ["a"])
    message = str(err.value)
    assert "\n" not in message and "failed after 4 tries (HTTP 503: unavailable)" in message
    assert len(stub.requests) == 4


def test_http_judge_backoff_is_exponential_and_bounded() -> None:
    from bnr.eval.http_judge import HttpJudge, parse_retry_after

    judge = HttpJudge("http://127.0.0.1:1/v1", backoff=1.0, max_backoff=5.0)
    waits = [judge.delay(k) for k in range(6)]
    assert all(2**k <= w <= 1.25 * 2**k for k, w in enumerate(waits[:2]))
    assert max(waits) == 5.0 and waits == sorted(waits)
    assert judge.delay(0, retry_after=3.0) == 3.0 and judge.delay(0, retry_after=600.0) == 5.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    past = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    assert past is not None and past < 0 and judge.delay(0, retry_after=past) == 0.0


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
