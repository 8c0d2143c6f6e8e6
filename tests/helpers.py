"""Test helpers shared by integration and end-to-end tests."""
from __future__ import annotations

import psutil


def vllm_processes() -> list[psutil.Process]:
    """Live vLLM engine-core/worker processes on this machine."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        text = (proc.info["name"] or "") + " " + " ".join(proc.info["cmdline"] or [])
        if "VLLM::" in text or "EngineCore" in text:
            found.append(proc)
    return found


def train_always_first_judge(path: str, max_steps: int = 300, min_prob: float = 0.9) -> None:
    """Fine-tune the tiny model to answer every judge prompt with "[[A]]" (a maximally position-biased
    judge whose verdicts parse), so the text path and the bias statistics can be checked for real.

    Full-batch steps until every target token has probability >= `min_prob` (so greedy decoding gives
    exactly the target, with room for bf16 rounding): the result then does not hang on the CPU's
    arithmetic (a fixed 60 single-example steps learned "[[A]" on one CPU and "[[A]]" on another)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthpref.judging import templates

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    examples = []
    for i in range(8):
        conv = [{"role": "user", "content": f"question number {i}: tell me about the sea"}]
        for tpl in (templates.PAIRWISE_TEXT, templates.PAIRWISE_LOGPROB):
            msgs = templates.pairwise_messages(tpl, conv, f"answer {i}", f"other {i * 7}")
            prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            target = "[[A]]<|end|>" if tpl.verdict == "text" else "A<|end|>"
            p_ids = tok.encode(prompt, add_special_tokens=False)
            t_ids = tok.encode(target, add_special_tokens=False)
            examples.append((p_ids + t_ids, [-100] * len(p_ids) + t_ids))
    width = max(len(ids) for ids, _ in examples)
    ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in examples])
    labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in examples])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in examples])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    torch.manual_seed(0)
    targets = labels[:, 1:]
    for _ in range(max_steps):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100,
                                                       reduction="none")[targets != -100]
        worst = float(torch.exp(-token_loss.max().detach()))
        if worst >= min_prob:
            break
        token_loss.mean().backward()
        opt.step()
        opt.zero_grad()
    assert worst >= min_prob, f"the always-first judge did not learn its answer (worst token p={worst:.3f})"
    model.save_pretrained(path, safe_serialization=True)


def job_command(command: str, config: dict, workdir, *overrides: str) -> list[str]:
    """The `synthpref COMMAND` command line for `config` (written to workdir/job.yaml)."""
    import sys
    from pathlib import Path

    import yaml

    path = Path(workdir) / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "synthpref.cli", command, "--config", str(path), "progress=false", *overrides]


def label_command(config: dict, workdir, *overrides: str) -> list[str]:
    return job_command("label", config, workdir, *overrides)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_openai_server(model: str, log_path, api_key: str, served_name: str = "tiny-judge"):
    """vLLM's own OpenAI-compatible server on loopback (STACK.md: `python -m vllm.entrypoints.openai.api_server`).
    Returns (process, base_url) once /health answers."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                             "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
                             "--max-model-len", "1024", "--enforce-eager", "--api-key", api_key],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_process_group(proc)
    raise RuntimeError(f"vLLM server did not answer /health within 300 s; see {log_path}")


def stop_process_group(proc) -> None:
    import os
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cluster_script_module(name: str):
    """A module of cluster/ (scripts, not a package), e.g. "stop_local", imported for tests."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "cluster" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finished_units(out) -> int:
    """The `finished` count of a job's run.json (0 before the job claims its folder)."""
    import json
    from pathlib import Path
    path = Path(out) / "run.json"
    return json.loads(path.read_text())["finished"] if path.exists() else 0


def kill_then_rerun(command: list[str], out, after: int, what: str):
    """Start `command`, SIGKILL it as soon as its run has finished `after` units (iterations, steps), then
    rerun it to the end. Returns (units finished at the kill, the rerun's CompletedProcess)."""
    import signal
    import subprocess
    import time
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while finished_units(out) < after:
        assert proc.poll() is None, f"{what}: ended before finishing {after}: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"{what}: did not finish {after} in 600 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    at_kill = finished_units(out)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    return at_kill, rerun
