"""DeepSpeed ranks as Ray actors over gloo: ZeRO stages 2 and 3 follow stage 0's loss curve."""
import pytest
import torch

pytestmark = pytest.mark.integration


def sft_batch(rows: int = 4, length: int = 24, vocab: int = 200) -> dict:
    ids = torch.randint(3, vocab, (rows, length), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :8] = -100                                           # a "prompt" that is not trained on
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_zero_stages_give_the_same_loss_curve_over_two_gloo_ranks(ray_session, tiny_model):
    from synthpref.training.trainer import TrainerGroup

    batch, curves = sft_batch(), {}
    for stage in (0, 2, 3):
        group = TrainerGroup(tiny_model, world_size=2, stage=stage, micro_batch=2, lr=1e-2, num_cpus=0.5)
        try:
            curves[stage] = [group.train_sft(batch) for _ in range(4)]
        finally:
            group.shutdown()
    assert curves[2] == pytest.approx(curves[0], abs=1e-4)
    assert curves[3] == pytest.approx(curves[0], abs=1e-4)
    assert curves[0][-1] < curves[0][0] - 1.0                      # the same batch four times: it is learnt
