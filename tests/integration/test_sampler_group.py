import glob

import pytest

from synthpref.data.readers import PromptRow

pytestmark = pytest.mark.integration


def thread_affinities(pid: int) -> set[str]:
    found = set()
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        with open(status) as fh:
            found |= {line.split()[1] for line in fh if line.startswith("Cpus_allowed_list")}
    return found


def prompts(n, words=5):
    return [PromptRow(f"p{i}", [{"role": "user", "content": f"prompt {i} " + "sea " * words}], "test") for i in range(n)]


def test_two_engines_share_the_work_with_recorded_seeds(sampler_group):
    rows, errors = sampler_group.sample(prompts(6), k=3, max_tokens=8, temperature=1.0, top_p=1.0, base_seed=7)
    assert errors == []
    assert len(rows) == 18
    assert len({r["sample_id"] for r in rows}) == 18
    assert len({r["seed"] for r in rows}) == 18
    assert all(0 < r["n_tokens"] <= 8 and r["finish_reason"] in ("length", "stop") for r in rows)
    from synthpref.models.loading import load_tokenizer
    tok = load_tokenizer(sampler_group.model)
    for r in rows:                      # the exact ids and log-probs the engine produced travel with the text
        assert len(r["token_ids"]) == len(r["token_logprobs"]) == r["n_tokens"]
        assert all(lp <= 0 for lp in r["token_logprobs"])
        # the text is the ids decoded (vLLM holds back a trailing half of a UTF-8 character: the ids do not)
        assert tok.decode(r["token_ids"], skip_special_tokens=True).startswith(r["text"].rstrip("\ufffd"))
        if r["finish_reason"] == "length":                         # cut at max_tokens: no EOS it never produced
            assert r["n_tokens"] == 8 and tok.eos_token_id not in r["token_ids"]
        else:
            assert r["token_ids"][-1] == tok.eos_token_id
    infos = sampler_group.pool.call_all("info")
    from synthpref.cluster.placement import core_plan, parse_cores
    assert sorted(i["cores"] for i in infos) == sorted(core_plan(2))  # the machine's cores split between them
    if len(core_plan(4)) == len(set(core_plan(4))):                  # 2+ cores: disjoint, not all on core 0
        assert not set(parse_cores(infos[0]["cores"])) & set(parse_cores(infos[1]["cores"]))
    assert all(i["served"] > 0 for i in infos)                      # least-loaded dispatch used both
    assert all(i["engine_pids"] == [] for i in infos)                # CPU default: engine core in the actor
    for info in infos:                                               # ... and every thread of it on its own core
        assert thread_affinities(info["pid"]) == {info["cores"]}
    again, _ = sampler_group.sample(prompts(6), k=3, max_tokens=8, temperature=1.0, top_p=1.0, base_seed=7)
    assert [r["text"] for r in again] == [r["text"] for r in rows]  # a recorded seed reproduces its sample
    other, _ = sampler_group.sample(prompts(6), k=3, max_tokens=8, temperature=1.0, top_p=1.0, base_seed=8)
    assert [r["text"] for r in other] != [r["text"] for r in rows]


def test_one_over_long_prompt_does_not_sink_the_batch(sampler_group):
    batch = prompts(3) + prompts(1, words=2000)
    rows, errors = sampler_group.sample(batch, k=2, max_tokens=8, temperature=1.0, top_p=1.0, base_seed=1)
    assert len(rows) == 6
    assert len(errors) == 2 and all("prompt_too_long" in e["error"] for e in errors)
    from synthpref.data.schema import content_id
    from synthpref.sampling.group import sample_seed
    # each error names the sample id its completion would have had
    assert [e["sample_id"] for e in errors] == [content_id(e["prompt_id"], e["index"], sample_seed(1, e["prompt_id"], e["index"]))
                                                for e in errors] and len({e["sample_id"] for e in errors}) == 2


def test_seeded_samples_of_long_shared_prompts(sampler_group):
    """k seeded samples of prompts longer than a KV block hit the prefix cache; vLLM 0.32's CPU engine
    crashed on that with chunked prefill ("CPU Generator does not use offset"): engines turn it off."""
    from types import SimpleNamespace
    long = [SimpleNamespace(prompt_id=f"long{i}", messages=[{"role": "user", "content": f"{i} " + "the sea " * 150}])
            for i in range(8)]
    rows, errors = sampler_group.sample(long, k=3, max_tokens=8, temperature=1.0, top_p=1.0, base_seed=3)
    assert errors == [] and len(rows) == 24
