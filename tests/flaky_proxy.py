"""A loopback HTTP proxy in front of an OpenAI-compatible server that answers a share of chat requests
with a fault: 429, 500, a garbage 200 body, or no answer until the client has timed out."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "garbage", "timeout")


class _Server(ThreadingHTTPServer):
    request_queue_size = 256     # every concurrent client connects: no refusals the proxy would not count


class FlakyProxy:
    def __init__(self, upstream: str, fault_rate: float = 0.3, hang_s: float = 3.0, seed: int = 0,
                 client_timeout_s: float = 2.0):
        self.upstream, self.fault_rate, self.hang_s = upstream.rstrip("/"), fault_rate, hang_s
        self.client_timeout_s = client_timeout_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: Counter = Counter()   # chat requests by max_tokens
        self.faults: Counter = Counter()     # (max_tokens, fault kind); "slow": the upstream outlasted the client
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pick_fault(self, max_tokens: int) -> str | None:
        with self.lock:
            self.requests[max_tokens] += 1
            if self.rng.random() >= self.fault_rate:
                return None
            kind = self.rng.choice(FAULTS)
            self.faults[(max_tokens, kind)] += 1
            return kind

    def close(self) -> None:
        self.server.shutdown()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _forward(self, method: str, body: bytes | None, max_tokens: int = 0) -> None:
                import httpx
                start = time.monotonic()
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                resp = httpx.request(method, proxy.upstream + self.path.removeprefix("/v1"), content=body,
                                     headers=headers, timeout=120)
                if method == "POST" and time.monotonic() - start > 0.9 * proxy.client_timeout_s:
                    with proxy.lock:     # the client gave up on this one: a fault the proxy did not inject
                        proxy.faults[(max_tokens, "slow")] += 1
                self._send(resp.status_code, resp.content, {"Content-Type": resp.headers.get("content-type", "")})

            def do_GET(self):
                self._forward("GET", None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                max_tokens = json.loads(body).get("max_tokens", 0)
                fault = proxy.pick_fault(max_tokens)
                if fault == "429":
                    self._send(429, b'{"error": "rate limited"}', {"Retry-After": "0.05"})
                elif fault == "500":
                    self._send(500, b'{"error": "internal error"}')
                elif fault == "garbage":
                    self._send(200, b"<html>\x00 not json", {"Content-Type": "application/json"})
                elif fault == "timeout":
                    time.sleep(proxy.hang_s)
                    self._send(504, b"too late")
                else:
                    self._forward("POST", body, max_tokens)

        return Handler
