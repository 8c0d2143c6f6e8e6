"""DeepSpeed ranks as Ray actors over gloo: ZeRO stages agree, roles train and answer, checkpoints resume."""
import pytest
import torch

pytestmark = pytest.mark.integration


def sft_batch(rows: int = 4, length: int = 24, vocab: int = 200, seed: int = 0) -> dict:
    ids = torch.randint(3, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[:, :8] = -100                                           # a "prompt" that is not trained on
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def pair_batch(rows: int = 6, seed: int = 1) -> dict:
    """Chosen rows end in token 7, rejected rows in token 9 (a rule a reward model can learn)."""
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randint(20, 200, (rows, 12), generator=g)
    rejected = chosen.clone()
    chosen[:, -1], rejected[:, -1] = 7, 9
    ones = torch.ones_like(chosen)
    return {"chosen_input_ids": chosen, "chosen_attention_mask": ones,
            "rejected_input_ids": rejected, "rejected_attention_mask": ones}


def test_zero_stages_give_the_same_loss_curve_over_two_gloo_ranks(ray_session, tiny_model):
    from synthpref.training.group import TrainerGroup

    batch, curves = sft_batch(), {}
    groups = {stage: TrainerGroup(tiny_model, world_size=2, zero_stage=stage, micro_batch=2, lr=1e-2, num_cpus=0.5,
                                  wait=False) for stage in (0, 2, 3)}           # the three start side by side
    try:
        for stage, group in groups.items():
            curves[stage] = [group.ready().train_sft(batch) for _ in range(4)]
    finally:
        for group in groups.values():
            group.shutdown()
    assert curves[2] == pytest.approx(curves[0], abs=1e-4)
    assert curves[3] == pytest.approx(curves[0], abs=1e-4)
    assert curves[0][-1] < curves[0][0] - 1.0                      # the same batch four times: it is learnt


def test_reward_role_learns_a_rule_and_reference_stays_frozen(ray_session, tiny_model):
    from synthpref.training.group import TrainerGroup

    reward = TrainerGroup(tiny_model, role="reward", world_size=2, zero_stage=2, lr=5e-3, num_cpus=0.5, wait=False)
    reference = TrainerGroup(tiny_model, role="reference", world_size=1, num_cpus=0.5)
    reward.ready()
    try:
        batch = pair_batch()
        first = reward.train("train_bt", batch)
        for _ in range(6):
            last = reward.train("train_bt", batch)
        assert first["rows"] == 6 and last["loss"] < first["loss"] - 0.3
        assert last["accuracy"] == 1.0
        held_out = pair_batch(rows=8, seed=9)
        chosen = reward.forward("forward_scores", {"input_ids": held_out["chosen_input_ids"],
                                                   "attention_mask": held_out["chosen_attention_mask"]})
        rejected = reward.forward("forward_scores", {"input_ids": held_out["rejected_input_ids"],
                                                     "attention_mask": held_out["rejected_attention_mask"]})
        assert len(chosen) == 8 and all(c > r for c, r in zip(chosen, rejected))
        # three rows over two ranks and one row over two ranks come back whole and in order
        batch = sft_batch(rows=3)
        before = reference.forward("forward_logprobs", batch)
        one = reference.forward("forward_logprobs", {k: v[1:2] for k, v in batch.items()})
        assert len(before) == 3 and one[0] == pytest.approx(before[1], abs=1e-4)
        assert reference.forward("forward_logprobs", batch) == pytest.approx(before, abs=1e-6)
    finally:
        reward.shutdown()
        reference.shutdown()


def test_checkpoint_resume_continues_the_same_curve_and_full_weights_match(ray_session, tiny_model, tmp_path):
    from safetensors.torch import load_file

    from synthpref.training.group import TrainerGroup

    batch = sft_batch(seed=3)
    group = TrainerGroup(tiny_model, world_size=2, zero_stage=3, lr=1e-2, num_cpus=0.5)
    try:
        group.train_sft(batch), group.train_sft(batch)
        group.save_checkpoint(tmp_path / "ckpt", "step2")
        expected = [group.train_sft(batch) for _ in range(2)]
        import ray
        state = ray.get(group.full_state_dict_ref())
        saved = group.save_pretrained(tmp_path / "hf")
    finally:
        group.shutdown()
    files = load_file(f"{saved}/model.safetensors")
    name = "model.embed_tokens.weight"
    assert state[name].shape == files[name].shape and torch.equal(state[name], files[name])
    resumed = TrainerGroup(tiny_model, world_size=2, zero_stage=3, lr=1e-2, num_cpus=0.5)
    try:
        resumed.load_checkpoint(tmp_path / "ckpt", "step2")
        assert [resumed.train_sft(batch) for _ in range(2)] == pytest.approx(expected, abs=1e-5)
    finally:
        resumed.shutdown()


def test_a_silent_rank_and_a_dead_rank_are_named_instead_of_waited_on(ray_session, tiny_model):
    """A rank that stops answering (SIGSTOP) ends the wait after train.rank_timeout_s with an error naming it
    and its node; a rank whose process is killed ends it as soon as Ray reports the death. Never a hang."""
    import os
    import signal
    import time

    from synthpref.training.group import RankLost, TrainerGroup
    group = TrainerGroup(tiny_model, "policy", world_size=1, rank_timeout_s=6)
    try:
        pid = group.call_all("ping")[0]
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(RankLost, match=rf"ranks \[0\] \(nodes \['{group.nodes[0]}'\]\) did not finish ping within 6 s"):
            group.call_all("ping")
        assert time.monotonic() - started < 60
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RankLost, match=rf"rank 0 \(node {group.nodes[0]}\) was lost during ping"):
            group.call_all("ping")
    finally:
        group.shutdown()
