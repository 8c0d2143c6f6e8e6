"""HTTP judge replicas: async clients of an OpenAI-compatible chat-completions server.

`OpenAIClientActor` answers the same two calls as an engine actor (`choice_logprobs`, `generate`), so
`ModelJudge` and the replica pool treat a served model exactly like a local engine. Each replica keeps
`endpoint.concurrency` requests in flight; 429, 5xx, timeouts, transport errors and unreadable answers
are retried with exponential backoff and full jitter (Retry-After is honoured up to the cap); other 4xx
fail at once. Every result records its attempts and token usage. The API key comes from the
environment variable named in the config, travels to the replica wrapped in `Secret` (never in a Ray
runtime env) and is scrubbed from any error text that is kept.
"""
from __future__ import annotations

import asyncio
import os
import random
import time

from synthpref.config import EndpointConfig

RETRY_STATUS = {408, 409, 425, 429}


class Secret:
    """A value that never shows itself in a repr, a log line or an exception."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


def read_api_key(env_name: str, key: str) -> Secret | None:
    """The API key from environment variable `env_name`; a ConfigError naming `key` when it is unset."""
    from synthpref.config import ConfigError

    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(f"{key}: environment variable {env_name} is not set (it should hold the API key)")
    return Secret(value)


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2^(attempt-1))), or Retry-After capped."""
    if retry_after is not None:
        return min(cap, max(0.0, retry_after))
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def read_choice_logprobs(data: dict, choices: dict[str, list[str]]) -> dict[str, list[float]] | None:
    """Logprobs of each label's spellings among the first token's `top_logprobs`; None if absent."""
    content = (((data.get("choices") or [{}])[0].get("logprobs") or {}).get("content")) or []
    if not content or not content[0].get("top_logprobs"):
        return None
    top = {}
    for item in content[0]["top_logprobs"]:
        top.setdefault(item["token"], item["logprob"])
    return {label: [top[s] for s in spellings if s in top] for label, spellings in choices.items()}


class OpenAIClientActor:
    def __init__(self, endpoint: EndpointConfig, model_name: str, api_key: Secret | None = None):
        self.ep, self.model_name = endpoint, model_name
        self._key = api_key.reveal() if api_key else None
        self.url = endpoint.base_url.rstrip("/") + "/chat/completions"
        self._client = None
        self._sem = None
        self.served = 0

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def _session(self):
        if self._client is None:
            import httpx
            self._client = httpx.AsyncClient(timeout=self.ep.timeout_s,
                                             limits=httpx.Limits(max_connections=self.ep.concurrency))
            self._sem = asyncio.Semaphore(self.ep.concurrency)
        return self._client

    async def info(self) -> dict:
        import ray
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "model": self.model_name,
                "url": self.url, "served": self.served}

    async def _post(self, payload: dict) -> tuple[dict | None, str | None, int]:
        """(answer, error, attempts): retries transient failures, gives up on the others."""
        import httpx

        client = await self._session()
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        error, attempts = "", 0
        for attempt in range(1, self.ep.max_retries + 2):
            attempts = attempt
            retry_after = None
            async with self._sem:
                try:
                    resp = await client.post(self.url, json=payload, headers=headers)
                except httpx.TimeoutException as exc:
                    error = f"timeout after {self.ep.timeout_s:g}s ({type(exc).__name__})"
                except httpx.TransportError as exc:
                    error = f"transport error: {type(exc).__name__}: {exc}"
                else:
                    if resp.status_code == 200:
                        try:
                            data = resp.json()
                            data["choices"][0]["message"]
                            return data, None, attempts
                        except (ValueError, KeyError, IndexError, TypeError):
                            error = f"unreadable answer: {resp.text[:200]!r}"
                    else:
                        error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                        if resp.status_code < 500 and resp.status_code not in RETRY_STATUS:
                            return None, self._scrub(error), attempts
                        try:
                            retry_after = float(resp.headers.get("retry-after", ""))
                        except ValueError:
                            retry_after = None
            if attempt <= self.ep.max_retries:
                await asyncio.sleep(backoff_delay(attempt, self.ep.backoff_s, self.ep.backoff_max_s, retry_after))
        return None, self._scrub(f"gave up after {attempts} attempts; last: {error}"), attempts

    @staticmethod
    def _usage(data: dict) -> dict:
        usage = data.get("usage") or {}
        return {"prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")}

    async def _one_logprob(self, req: dict) -> dict:
        start = time.perf_counter()
        payload = {"model": self.model_name, "messages": req["messages"], "max_tokens": 1, "temperature": 0.0,
                   "logprobs": True, "top_logprobs": self.ep.top_logprobs}
        data, error, attempts = await self._post(payload)
        if error:
            return {"error": error, "attempts": attempts, "latency_s": time.perf_counter() - start}
        logprobs = read_choice_logprobs(data, req["choices"])
        base = {"raw": data["choices"][0]["message"].get("content") or "", "attempts": attempts,
                "latency_s": time.perf_counter() - start, **self._usage(data)}
        if logprobs is None:
            return {**base, "error": "the server returned no top_logprobs: use verdict: text for this judge"}
        return {**base, "logprobs": logprobs}

    async def _one_generate(self, req: dict) -> dict:
        start = time.perf_counter()
        payload = {"model": self.model_name, "messages": req["messages"], "max_tokens": req["max_tokens"],
                   "temperature": req.get("temperature", 0.0)}
        if req.get("seed") is not None:
            payload["seed"] = req["seed"]
        data, error, attempts = await self._post(payload)
        if error:
            return {"error": error, "attempts": attempts, "latency_s": time.perf_counter() - start}
        choice = data["choices"][0]
        usage = self._usage(data)
        return {"text": choice["message"].get("content") or "", "n_tokens": usage["completion_tokens"],
                "finish_reason": choice.get("finish_reason"), "logprob": None, "attempts": attempts,
                "latency_s": time.perf_counter() - start, **usage}

    async def choice_logprobs(self, requests: list[dict]) -> list[dict]:
        self.served += len(requests)
        return list(await asyncio.gather(*(self._one_logprob(r) for r in requests)))

    async def generate(self, requests: list[dict]) -> list[dict]:
        self.served += len(requests)
        return list(await asyncio.gather(*(self._one_generate(r) for r in requests)))

    async def shutdown(self) -> bool:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        return True


def http_spawner(judge, api_key: Secret | None, max_inflight: int):
    """Replicas of the HTTP client: no CPU reserved (they wait on the network)."""
    import ray

    from synthpref.cluster.pool import Spawned
    from synthpref.cluster.ray_setup import actor_env

    remote_cls = ray.remote(OpenAIClientActor)
    endpoint = judge.endpoint
    name = judge.endpoint.model or judge.model

    def spawn(slot: int) -> Spawned:
        actor = remote_cls.options(num_cpus=0, max_concurrency=max_inflight + 2, runtime_env=actor_env()).remote(
            endpoint, name, api_key)
        return Spawned(actor, {})
    return spawn


def check_reachable(base_url: str, key: str, timeout_s: float = 10.0) -> None:
    """Any HTTP answer from `base_url`/models counts as reachable; a refused connection is a ConfigError."""
    import httpx

    from synthpref.config import ConfigError

    try:
        httpx.get(base_url.rstrip("/") + "/models", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ConfigError(f"{key}: cannot reach {base_url}: {type(exc).__name__}: {exc}") from exc
