"""Pure logic of the HTTP judge: backoff, reading top_logprobs, keeping the key out of sight."""
import pickle

import pytest

from synthpref.config import ConfigError, JudgeConfig, EndpointConfig, check_endpoint
from synthpref.judging.http_client import Secret, backoff_delay, read_api_key, read_choice_logprobs
from synthpref.judging.verdicts import label_probs


def test_backoff_is_full_jitter_exponential_and_capped():
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (10, 5.0)):
        delays = [backoff_delay(attempt, 0.5, 5.0) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > 0.6 * ceiling                     # spread over the whole window, not fixed
    assert backoff_delay(1, 0.5, 5.0, retry_after=2.0) == 2.0
    assert backoff_delay(1, 0.5, 5.0, retry_after=60.0) == 5.0   # Retry-After is honoured up to the cap


def test_top_logprobs_are_read_per_label_and_renormalised():
    data = {"choices": [{"message": {"content": "A"}, "logprobs": {"content": [{"token": "A", "logprob": -0.5,
            "top_logprobs": [{"token": "A", "logprob": -0.5}, {"token": " B", "logprob": -1.5},
                             {"token": "B", "logprob": -2.0}, {"token": "x", "logprob": -3.0}]}]}}]}
    lp = read_choice_logprobs(data, {"A": ["A", " A"], "B": ["B", " B"]})
    assert lp == {"A": [-0.5], "B": [-2.0, -1.5]}
    import math
    pa, pb = math.exp(-0.5), math.exp(-2.0) + math.exp(-1.5)
    assert label_probs(lp)["A"] == pytest.approx(pa / (pa + pb))
    assert read_choice_logprobs({"choices": [{"message": {"content": "A"}}]}, {"A": ["A"]}) is None


def test_secret_never_shows_itself(monkeypatch):
    secret = Secret("sk-abc123")
    assert "sk-abc123" not in repr(secret) + str(secret) + f"{secret}" + repr([secret])
    assert pickle.loads(pickle.dumps(secret)).reveal() == "sk-abc123"   # it reaches the replica intact
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="judging.judges.0.endpoint.api_key_env: environment variable NO_SUCH_KEY_VAR"):
        read_api_key("NO_SUCH_KEY_VAR", "judging.judges.0.endpoint.api_key_env")


@pytest.mark.parametrize("endpoint,match", [
    (EndpointConfig(base_url="localhost:8000", model="m"), "base_url"),
    (EndpointConfig(base_url="http://h/v1", model="m", api_key_env="sk-live-123.abc"), "api_key_env"),
    (EndpointConfig(base_url="http://h/v1", model="m", concurrency=0), "concurrency"),
    (EndpointConfig(base_url="http://h/v1", model="m", backoff_s=5, backoff_max_s=1), "backoff"),
])
def test_endpoint_settings_are_checked(endpoint, match):
    with pytest.raises(ConfigError, match=match):
        check_endpoint(JudgeConfig(id="j", type="http", endpoint=endpoint), "judging.judges.0")
