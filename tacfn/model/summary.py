"""An architecture summary: the tensor shape after each stage and the parameter counts.

Shapes come from a forward pass on PyTorch's ``meta`` device, which propagates shapes
without computing anything, so even the paper preset is summarised instantly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .fusion import get_fusion_block_class
from .tacfn import TACFN


class StageInfo(NamedTuple):
    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int


class ModelSummary(NamedTuple):
    stages: list[StageInfo]
    total_parameters: int
    trainable_parameters: int
    backbone: str


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarize(model: TACFN, batch_size: int = 1) -> ModelSummary:
    """Shapes after every encoder stage and the fusion block, for a batch of ``batch_size``."""
    total, trainable = model.num_parameters()
    meta_model = TACFN(model.cfg).to("meta").eval()
    stages: list[StageInfo] = []
    hooks = []

    def record(name: str, module: nn.Module):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                stages.append(StageInfo(name, type(module).__name__, tuple(output.shape), _count(module)))

        return module.register_forward_hook(hook)

    for modality, encoder in meta_model.encoders.items():
        children = list(encoder.named_children()) or [("", encoder)]
        for child_name, child in children:
            hooks.append(record(f"{modality}.{child_name}".rstrip("."), child))
    hooks.append(record("fusion", meta_model.fusion))
    inputs = {
        m.name: torch.empty((batch_size, *m.input_shape), device="meta") for m in model.cfg.modalities
    }
    try:
        with torch.no_grad():
            meta_model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return ModelSummary(stages, total, trainable, model.cfg.backbone)


def format_summary(model: TACFN, summary: ModelSummary) -> str:
    """Plain-text table of :func:`summarize`'s result."""
    cfg = model.cfg
    lines = [f"dataset: {cfg.dataset}   fusion: {cfg.fusion.name}   backbone (default): {summary.backbone}"]
    for m in cfg.modalities:
        lines.append(f"input {m.name}: {m.encoder} on (B, {', '.join(map(str, m.input_shape))}), head pool {m.head_pool}")
    width = max(len(s.name) for s in summary.stages) + 2
    lines.append("")
    lines.append(f"{'stage':<{width}}{'module':<24}{'output shape':<28}{'params':>12}")
    for s in summary.stages:
        shape = "(" + ", ".join(["B", *map(str, s.output_shape[1:])]) + ")"
        lines.append(f"{s.name:<{width}}{s.kind:<24}{shape:<28}{s.parameters:>12,}")
    for name, encoder in model.encoders.items():
        lines.append(f"{'encoder ' + name:<{width + 52}}{_count(encoder):>12,}")
    lines.append(f"{'fusion + head':<{width + 52}}{_count(model.fusion):>12,}")
    lines.append(f"{'total':<{width + 52}}{summary.total_parameters:>12,}")
    lines.append(f"{'trainable':<{width + 52}}{summary.trainable_parameters:>12,}")
    options = get_fusion_block_class(cfg.fusion.name).options
    lines.append(f"fusion config: {', '.join(f'{k}={getattr(cfg.fusion, k)}' for k in options)}")
    return "\n".join(lines)
