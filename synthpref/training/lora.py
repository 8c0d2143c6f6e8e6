"""LoRA adapters through Hugging Face `peft`, and their weights merged back into the base model.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a weight W and
trains a low-rank update B @ A beside it; the layer computes W x + (alpha / r) B A x. Merging folds the
update into W, so a saved checkpoint or a vLLM engine sees a plain model of the base architecture.

`merged_state_dict` works on a gathered state dict (names from `named_parameters()` of the peft model),
not on live modules, so it runs the same after a ZeRO-3 gather as on a local model.
"""
from __future__ import annotations

import torch

ADAPTER = "default"  # the adapter name peft gives the one adapter `wrap` adds
_PREFIX = "base_model.model."  # peft's prefix before the base model's own names


def scaling(train) -> float:
    """The LoRA update's scale, lora_alpha / r (plain LoRA, not rsLoRA)."""
    return train.lora_alpha / train.lora_r


def is_lora(net) -> bool:
    """Whether `net` is a peft model (LoRA-wrapped)."""
    from peft import PeftModel

    return isinstance(net, PeftModel)


def base_model(net):
    """The transformers model under a peft wrapper (or `net` itself): the one to `save_pretrained(path,
    state_dict=merged)` with. Its own modules still hold the LoRA layers; save it with a merged state dict."""
    return net.get_base_model() if is_lora(net) else net


def _is_classifier(net) -> bool:
    """Whether `net` is a transformers sequence classifier (a reward model)."""
    return type(net).__name__.endswith("ForSequenceClassification")


def _targets(net, names: list[str]) -> dict[str, list[str]]:
    """Module names of `net` matched by each target name (peft's rule: equal, or ending in ".name")."""
    found: dict[str, list[str]] = {t: [] for t in names}
    for key, _ in net.named_modules():
        for t in names:
            if key == t or key.endswith("." + t):
                found[t].append(key)
    return found


def wrap(net, train):
    """`net` with LoRA adapters of rank `train.lora_r` on `train.lora_target_modules` (only the adapters,
    and a sequence classifier's score head, train); `net` unchanged when `train.lora_r` is 0."""
    if train.lora_r <= 0:
        return net
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(train.lora_target_modules)
    found = _targets(net, targets)
    if not any(found.values()):
        linear = sorted({k.rsplit(".", 1)[-1] for k, m in net.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"lora_target_modules: none of {targets} is in {type(net).__name__} "
                         f"(its linear layers: {linear})")
    for t, keys in found.items():
        for key in keys:
            if type(net.get_submodule(key)) is not torch.nn.Linear:
                # merged_state_dict folds W + s * B @ A: right for nn.Linear only (not GPT-2's Conv1D,
                # embeddings or convolutions, whose LoRA layers store or merge their factors otherwise)
                raise ValueError(f"lora_target_modules: {key} ({t}) is a {type(net.get_submodule(key)).__name__}, "
                                 "not a torch.nn.Linear")
    classifier = _is_classifier(net)
    config = LoraConfig(r=train.lora_r, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                        target_modules=targets, bias="none",
                        task_type=TaskType.SEQ_CLS if classifier else TaskType.CAUSAL_LM,
                        modules_to_save=["score"] if classifier else None)
    return get_peft_model(net, config)


def _split(name: str, adapter: str) -> tuple[str, str, str] | None:
    """(module, kind, leaf) for a LoRA factor or modules_to_save copy of `adapter` (kind "A", "B" or
    "copy"; leaf e.g. "weight"), None for any other name."""
    for kind, tag in (("A", f".lora_A.{adapter}."), ("B", f".lora_B.{adapter}."),
                      ("copy", f".modules_to_save.{adapter}.")):
        if tag in name:
            module, leaf = name.split(tag)
            return module, kind, leaf
    return None


def _strip(name: str) -> str:
    return name[len(_PREFIX):] if name.startswith(_PREFIX) else name


def merged_state_dict(state: dict[str, torch.Tensor], scaling: float,
                      adapter: str = ADAPTER) -> dict[str, torch.Tensor]:
    """The base model's parameters from a peft model's gathered `named_parameters()`: W + scaling * B @ A
    for every LoRA layer (computed in fp32, kept in W's dtype), a modules_to_save copy in place of its
    original, LoRA tensors dropped, names as the base model has them. `state` is left as it was."""
    lora: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    copies: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        split = _split(name, adapter)
        if split is not None:
            module, kind, leaf = split
            if kind == "copy":
                copies[f"{_strip(module)}.{leaf}"] = tensor
            else:
                lora.setdefault(_strip(module), {})[kind] = tensor
            continue
        if ".original_module." in name:
            continue  # replaced by its modules_to_save copy below
        out[_strip(name).replace(".base_layer.", ".")] = tensor
    for module, ab in lora.items():
        key = module + ".weight"
        if set(ab) != {"A", "B"} or key not in out:
            raise ValueError(f"merged_state_dict: {module} needs lora_A, lora_B and its base weight")
        w = out[key]
        delta = ab["B"].float() @ ab["A"].float()
        if delta.shape != w.shape:
            raise ValueError(f"merged_state_dict: {module}: B @ A is {tuple(delta.shape)}, W is {tuple(w.shape)}")
        out[key] = (w.float() + scaling * delta.to(w.device)).to(w.dtype)
    for key, tensor in copies.items():
        out[key] = tensor
    return out


def adapter_state_dict(state: dict[str, torch.Tensor], adapter: str = ADAPTER) -> dict[str, torch.Tensor]:
    """The adapter alone (LoRA factors and modules_to_save copies), named as peft saves them in
    adapter_model.safetensors (the adapter name dropped)."""
    out = {}
    for name, tensor in state.items():
        for tag, to in ((f".lora_A.{adapter}.", ".lora_A."), (f".lora_B.{adapter}.", ".lora_B."),
                        (f".modules_to_save.{adapter}.", ".")):
            if tag in name:
                out[name.replace(tag, to)] = tensor
                break
    return out
