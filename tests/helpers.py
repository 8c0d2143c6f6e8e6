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


def train_always_first_judge(path: str, steps: int = 60) -> None:
    """Fine-tune the tiny model to answer every judge prompt with "[[A]]" (a maximally position-biased
    judge whose verdicts parse), so the text path and the bias statistics can be checked for real."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthpref.judging import templates

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
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
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    torch.manual_seed(0)
    for step in range(steps):
        ids, labels = examples[step % len(examples)]
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(path, safe_serialization=True)
