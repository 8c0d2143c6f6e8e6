"""A small OpenAI-compatible chat-completions server on loopback for the HTTP judge's fault tests: it
starts in milliseconds, checks the bearer key, and answers deterministically. Logprob requests get
top_logprobs over "A"/"B" (first position favoured), text requests "[[A]]" or, for every third prompt,
the unparseable "[[A]" (as a small model stops short); usage counts one token per four characters."""
from __future__ import annotations

import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def answer(request: dict) -> dict:
    prompt = json.dumps(request.get("messages", []))
    prompt_tokens = max(1, len(prompt) // 4)
    if request.get("logprobs"):
        top = [{"token": "A", "logprob": -0.2}, {"token": "B", "logprob": -1.8}, {"token": " A", "logprob": -4.0}]
        content = [{"token": "A", "logprob": -0.2, "top_logprobs": top[:request.get("top_logprobs", 20)]}]
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "A"},
                             "logprobs": {"content": content}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1}}
    text = "[[A]" if zlib.crc32(prompt.encode()) % 3 == 0 else "[[A]]"
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 2}}


class FakeOpenAIServer:
    def __init__(self, api_key: str, model: str = "tiny-judge"):
        self.api_key, self.model = api_key, model
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, {"data": [{"id": outer.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.headers.get("Authorization") != f"Bearer {outer.api_key}":
                    return self._send(401, {"error": {"message": "bad key"}})
                if body.get("model") != outer.model:
                    return self._send(404, {"error": {"message": f"no model {body.get('model')}"}})
                self._send(200, answer(body))
        return Handler
