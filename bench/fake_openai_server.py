"""A loopback OpenAI-compatible chat server with a fixed latency per request, for measuring how HTTP
judge throughput scales with requests in flight (it does no work, so only concurrency shows).

    python bench/fake_openai_server.py PORT LATENCY_S
"""
from __future__ import annotations

import asyncio
import sys

from aiohttp import web

ANSWER = {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "A"},
                       "logprobs": {"content": [{"token": "A", "logprob": -0.3, "top_logprobs": [
                           {"token": "A", "logprob": -0.3}, {"token": "B", "logprob": -1.4}]}]}}],
          "usage": {"prompt_tokens": 300, "completion_tokens": 1, "total_tokens": 301}}


def app(latency_s: float) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        await request.json()
        await asyncio.sleep(latency_s)
        return web.json_response(ANSWER)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "fake"}]})

    application = web.Application()
    application.add_routes([web.post("/v1/chat/completions", chat), web.get("/v1/models", models)])
    return application


if __name__ == "__main__":
    web.run_app(app(float(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
