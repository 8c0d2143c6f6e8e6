"""synthpref's DPO against TRL's `DPOTrainer` (TRL 1.16) on one batch: the same tokens, the same per-example
log-probabilities, the same loss before a step and (within a measured tolerance) after one identical AdamW step.

Policy: the tiny Llama (seed 0). Reference: a tiny Llama of the same shape and tokenizer from seed 1, so the
loss is not the trivial ln 2 of policy == reference. Everything runs in float32 on the CPU.

Tokens. synthpref renders the prompt with the chat template (add_generation_prompt) and appends the response's
own ids plus EOS (`<|end|>`). TRL 1.16, given *conversational* rows, renders prompt + assistant turn with the
chat template and takes the completion to be everything after the common prefix with the rendered prompt: for
the tiny template that is the response, `<|end|>` *and the template's trailing "\\n"*, one token more than
synthpref trains on (asserted below, as the reason for what follows). TRL has no way to take pre-tokenized
ids (its `_prepare_dataset` always tokenizes), so TRL is given *text* rows instead: prompt = the prompt
rendered by the chat template as text, chosen/rejected = the bare responses, to which TRL appends the EOS
token text. Its tokenisation of those rows is asserted equal to synthpref's `encode_pair` ids, so both sides
score exactly the same tokens.

Label smoothing. TRL 1.16's "sigmoid" loss ignores `label_smoothing` (it only enters "robust", "exo_pair",
"aot", "aot_unpaired"): conservative DPO, -(1 - eps) log s(beta h) - eps log s(-beta h), is no longer a TRL
"sigmoid" setting. Its "aot" loss on a batch of ONE pair is exactly that formula (the sorting it does over the
batch is then the identity), so synthpref's label-smoothed loss is compared with TRL's "aot" loss per pair.
IPO: both normalise the log-ratios by the completion's token count (EOS included) before (h - 1/(2 beta))^2.

Measured (2-core CPU, fp32): per-example log-probs within 1.5e-5 (sums over 3-22 tokens, -19 to -144);
loss before the step 6e-8 apart (asserted 1e-5); loss after one step 9e-8 apart (asserted 1e-5); weights after
the step: all but 7 of 493k within 1e-6, the largest difference 1.7e-5 = 0.017 lr; IPO and label-smoothed
losses within 1e-6 (asserted 1e-5).
"""
from __future__ import annotations

import math

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

BETA, LR, MAX_LEN = 0.1, 1e-3, 256
ROWS = [  # (user prompt, chosen, rejected)
    ("What is the capital of France?", "Paris is the capital of France.", "Paris."),
    ("How do I bake bread?", "Mix flour, water, yeast and salt, knead, let it rise, then bake it hot.",
     "Bake it."),
    ("Translate hello into Spanish.", "hola", "Hello is hello."),
    ("Write a short poem about the sea.", "Waves fold over the grey stones at dawn.",
     "The sea is a sea of the sea."),
    ("Give three tips for staying healthy.", "Sleep well, eat vegetables, walk every day.", "No."),
    ("Explain how plants make food from sunlight.",
     "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
     "Plants eat the sun, then they sleep."),
]


def trl_trainer(policy_path: str, reference_path: str, text_rows: list[dict], out, **config):
    """A DPOTrainer over fresh fp32 copies of the policy and the seed-1 reference: one optimizer step of plain
    torch AdamW (lr LR, no weight decay, clip 1.0) over all rows at a constant learning rate."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(out), use_cpu=True, bf16=False, fp16=False, report_to="none", seed=0,
                     save_strategy="no", gradient_checkpointing=False, per_device_train_batch_size=len(text_rows),
                     gradient_accumulation_steps=1, max_steps=1, learning_rate=LR, lr_scheduler_type="constant",
                     warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", logging_steps=1,
                     beta=BETA, max_length=MAX_LEN, precompute_ref_log_probs=False, disable_dropout=True,
                     dataloader_num_workers=0, **config)
    policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(reference_path, dtype=torch.float32)
    return DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(text_rows),
                      processing_class=AutoTokenizer.from_pretrained(policy_path))


def trl_batch(trainer, rows: list[int] | None = None) -> dict:
    """TRL's own collated batch ([chosen rows; rejected rows]) of the given rows of its tokenized dataset."""
    data = trainer.train_dataset
    return trainer.data_collator([data[i] for i in (rows if rows is not None else range(len(data)))])


def trl_loss(trainer, batch: dict) -> float:
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


@pytest.fixture(scope="module")
def dpo_setup(tiny_model, tmp_path_factory):
    """synthpref's policy and reference groups, the encoded pairs with their reference log-probs, and the
    policy's log-probs at its initial weights (before any test trains it)."""
    from synthpref.config import TrainConfig
    from synthpref.models.loading import load_tokenizer, pad_id
    from synthpref.models.tiny import build_tiny_model
    from synthpref.training.dpo_data import encode_pair, fill_reference, pair_tensors
    from synthpref.training.group import TrainerGroup

    reference_path = str(build_tiny_model(tmp_path_factory.mktemp("models") / "reference-seed1", seed=1))
    train = TrainConfig(dtype="float32", lr=LR, weight_decay=0.0, micro_batch=len(ROWS), max_len=MAX_LEN)
    policy = TrainerGroup(tiny_model, "policy", train=train, seed=0, num_cpus=1, wait=False)
    reference = TrainerGroup(reference_path, "reference", train=train, seed=0, num_cpus=1, wait=False)
    try:
        policy.ready()
        reference.ready()
        tok = load_tokenizer(tiny_model)
        pad = pad_id(tok)
        pairs = [encode_pair(tok, [{"role": "user", "content": q}], c, r, MAX_LEN) for q, c, r in ROWS]
        fill_reference(reference, pairs, len(pairs), pad)
        index = list(range(len(pairs)))
        policy_lp = policy.forward("forward_pair_logprobs", pair_tensors(pairs, index, pad))
        text_rows = [{"prompt": tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                        tokenize=False), "chosen": c, "rejected": r}
                     for q, c, r in ROWS]
        yield {"policy": policy, "reference": reference, "pairs": pairs, "pad": pad, "index": index,
               "policy_lp": [tuple(x) for x in policy_lp], "text_rows": text_rows,
               "reference_path": reference_path, "tokenizer": tok}
    finally:
        policy.shutdown()
        reference.shutdown()


def test_tokens_logprobs_and_one_adamw_step_match_trl(dpo_setup, tiny_model, tmp_path):
    from synthpref.training.dpo_data import pair_tensors
    from synthpref.training.losses import IGNORE

    s = dpo_setup
    pairs, n = s["pairs"], len(s["pairs"])
    trainer = trl_trainer(tiny_model, s["reference_path"], s["text_rows"], tmp_path / "trl")

    # 1. the same tokens: TRL's tokenisation of the text rows is synthpref's encode_pair, prompt and response
    for row, pair in zip(trainer.train_dataset, pairs):
        prompt_len = sum(x == IGNORE for x in pair.chosen.labels)
        assert row["prompt_ids"] == pair.chosen.input_ids[:prompt_len] == pair.rejected.input_ids[:prompt_len]
        assert row["chosen_ids"] == pair.chosen.input_ids[prompt_len:]
        assert row["rejected_ids"] == pair.rejected.input_ids[prompt_len:]
        assert row["chosen_ids"][-1] == s["tokenizer"].eos_token_id
    # (why text rows: TRL's conversational tokenisation adds the template's "\n" after <|end|> to the completion)
    from datasets import Dataset
    conv = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": c}],
                               "rejected": [{"role": "assistant", "content": r}]} for q, c, r in ROWS])
    conv_row, ours = trainer._prepare_dataset(conv, trainer.processing_class, trainer.args, "conv")[0], trainer.train_dataset[0]
    assert conv_row["prompt_ids"] == ours["prompt_ids"]
    assert conv_row["chosen_ids"][:len(ours["chosen_ids"])] == ours["chosen_ids"]
    assert len(conv_row["chosen_ids"]) > len(ours["chosen_ids"])

    # no dropout anywhere (the tiny Llama has none; TRL disables it too), so train and eval forwards agree
    assert all(getattr(m, "p", 0.0) == 0.0 for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout))
    assert trainer.model.config.attention_dropout == 0.0

    # 2. per-example log-probs (sums over response tokens) of policy and reference
    batch = trl_batch(trainer)
    with torch.no_grad():
        trl_pc, trl_pr = trainer.compute_ref_log_probs(trainer.model, batch)
        trl_rc, trl_rr = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    ours_policy = torch.tensor(s["policy_lp"], dtype=torch.float64)
    ours_ref = torch.tensor([p.ref for p in pairs], dtype=torch.float64)
    theirs_policy = torch.stack([trl_pc, trl_pr], 1).double()
    theirs_ref = torch.stack([trl_rc, trl_rr], 1).double()
    lp_diff = max(float((ours_policy - theirs_policy).abs().max()), float((ours_ref - theirs_ref).abs().max()))
    assert lp_diff < 1e-4, (ours_policy, theirs_policy, ours_ref, theirs_ref)
    margins = (ours_policy[:, 0] - ours_ref[:, 0]) - (ours_policy[:, 1] - ours_ref[:, 1])
    assert float(margins.abs().max()) > 0.5                            # policy and reference really differ

    # 3. the loss before the step, then one identical step (synthpref: train_dpo reports its loss before its step)
    trl_before = trl_loss(trainer, batch)
    settings = {"beta": BETA, "loss": "sigmoid", "label_smoothing": 0.0}
    tensors = pair_tensors(pairs, s["index"], s["pad"])
    ours_before = s["policy"].train("train_dpo", tensors, settings)
    assert abs(trl_before - math.log(2)) > 1e-3                        # not the policy == reference value
    assert ours_before["loss"] == pytest.approx(trl_before, abs=1e-5)
    assert ours_before["rows"] == n

    import ray
    ours_weights = ray.get(s["policy"].full_state_dict_ref())             # after synthpref's one step
    result = trainer.train()
    assert trainer.state.global_step == 1
    theirs_weights = dict(trainer.model.named_parameters())
    assert sorted(ours_weights) == sorted(theirs_weights)
    diffs = torch.cat([(ours_weights[k] - theirs_weights[k].detach()).abs().flatten() for k in ours_weights])
    weight_diff, off = float(diffs.max()), int((diffs > 1e-6).sum())
    # Adam's first step moves each weight by LR * g / (|g| + 1e-8): ~LR * sign(g) for all but the weights whose
    # gradient is ~1e-8, where the two sides' last-bit differences in g show (measured: 7 of 493k weights off by
    # > 1e-6, the largest by 1.7e-5 = 0.017 LR; a sign flip would be 2 LR)
    assert weight_diff < 0.1 * LR and off <= 1e-4 * diffs.numel(), (weight_diff, off)
    logged = trainer.state.log_history[0]
    assert logged["learning_rate"] == pytest.approx(LR, rel=1e-12)     # constant, no warmup
    assert logged["grad_norm"] > 1.0                                   # so the clipping to 1.0 was exercised
    assert result.training_loss == pytest.approx(trl_before, abs=1e-5)
    trl_after = trl_loss(trainer, batch)
    ours_after = s["policy"].train("train_dpo", tensors, settings)["loss"]   # computed before its own step
    assert trl_after < trl_before - 1e-3                               # the step did something
    step_diff = abs(ours_after - trl_after)
    print(f"\nDPO vs TRL: max |log-prob diff| {lp_diff:.2e}; loss before {ours_before['loss']:.7f} vs "
          f"{trl_before:.7f} (diff {abs(ours_before['loss'] - trl_before):.2e}); after one step {ours_after:.7f} vs "
          f"{trl_after:.7f} (diff {step_diff:.2e}); max |weight diff| after the step {weight_diff:.2e} "
          f"({off} of {diffs.numel()} weights > 1e-6); "
          f"TRL grad_norm {logged.get('grad_norm')}")
    assert step_diff < 1e-5


def test_label_smoothing_and_ipo_losses_match_trl(dpo_setup, tiny_model, tmp_path):
    """The losses before any step, from the policy's initial log-probs (taken before the other test trained the
    policy group) through synthpref's pair tensors and loss functions, against TRL's at the initial weights."""
    from synthpref.training.dpo_data import pair_tensors
    from synthpref.training.losses import dpo_loss, ipo_loss

    s = dpo_setup
    pairs = s["pairs"]
    pc, pr = (torch.tensor([lp[k] for lp in s["policy_lp"]]) for k in (0, 1))

    # IPO: per-token means on both sides (the reference's from pair_tensors(loss="ipo"), as train_dpo gets them;
    # the policy's as train_dpo makes them, sums over the counted tokens); TRL 1.16 normalises by completion length
    ipo_t = pair_tensors(pairs, s["index"], s["pad"], loss="ipo")
    nc, nr = (torch.tensor([float(p.tokens[k]) for p in pairs]) for k in (0, 1))
    ours_ipo = float(ipo_loss(pc / nc, pr / nr, ipo_t["ref_chosen"], ipo_t["ref_rejected"], BETA))
    ipo_trainer = trl_trainer(tiny_model, s["reference_path"], s["text_rows"], tmp_path / "ipo", loss_type=["ipo"])
    trl_ipo = trl_loss(ipo_trainer, trl_batch(ipo_trainer))
    assert ours_ipo == pytest.approx(trl_ipo, rel=1e-5, abs=1e-5)

    # label smoothing (conservative DPO), against TRL's "aot" on one pair at a time (see the module docstring)
    eps = 0.2
    t = pair_tensors(pairs, s["index"], s["pad"])
    per_pair = [float(dpo_loss(pc[i:i + 1], pr[i:i + 1], t["ref_chosen"][i:i + 1], t["ref_rejected"][i:i + 1], BETA,
                               eps)[0]) for i in range(len(pairs))]
    ours_smoothed = float(dpo_loss(pc, pr, t["ref_chosen"], t["ref_rejected"], BETA, eps)[0])
    aot = trl_trainer(tiny_model, s["reference_path"], s["text_rows"], tmp_path / "aot", loss_type=["aot"],
                      label_smoothing=eps)
    trl_per_pair = [trl_loss(aot, trl_batch(aot, [i])) for i in range(len(pairs))]
    assert per_pair == pytest.approx(trl_per_pair, abs=1e-5)
    assert ours_smoothed == pytest.approx(sum(trl_per_pair) / len(trl_per_pair), abs=1e-5)
    unsmoothed = float(dpo_loss(pc, pr, t["ref_chosen"], t["ref_rejected"], BETA)[0])
    assert abs(ours_smoothed - unsmoothed) > 1e-3                      # the smoothing changed the loss
    print(f"\nIPO {ours_ipo:.6f} vs TRL {trl_ipo:.6f} (diff {abs(ours_ipo - trl_ipo):.1e}); label_smoothing {eps}: "
          f"{ours_smoothed:.7f} vs TRL aot per pair {sum(trl_per_pair) / len(trl_per_pair):.7f} (max per-pair diff "
          f"{max(abs(a - b) for a, b in zip(per_pair, trl_per_pair)):.1e}; unsmoothed {unsmoothed:.7f})")
