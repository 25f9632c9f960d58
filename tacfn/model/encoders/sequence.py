"""Sequence projection for IEMOCAP's unaligned MulT features.

The MulT benchmark's features arrive time-major, (B, L, in_dim): text 300-d GloVe,
audio 74-d COVAREP, vision 35-d Facet. Each modality is projected to a common width
``d`` by a Conv1d without bias, as in MulT, giving channels-first (B, d, L').
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SequenceProjection"]


class SequenceProjection(nn.Module):
    """(B, L, in_dim) -> (B, d, L - kernel_size + 1) by a bias-free Conv1d (MulT's ``proj``)."""

    def __init__(self, in_dim: int, d: int, kernel_size: int = 1) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("d", d), ("kernel_size", kernel_size)):
            if value < 1:
                raise ValueError(f"`{name} >= 1` must hold, but got {name}={value}")
        self.in_dim = in_dim
        self.out_channels = d
        self.proj = nn.Conv1d(in_dim, d, kernel_size=kernel_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.transpose(1, 2))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output (d, L') for a per-sample input (L, in_dim)."""
        if len(input_shape) != 2 or input_shape[1] != self.in_dim:
            raise ValueError(
                f"SequenceProjection takes a per-sample input of shape (L, {self.in_dim}), "
                f"but got {tuple(input_shape)}"
            )
        kernel_size = self.proj.kernel_size[0]
        if input_shape[0] < kernel_size:
            raise ValueError(f"`L >= kernel_size` must hold, but got (L={input_shape[0]}, kernel_size={kernel_size})")
        return (self.out_channels, input_shape[0] - kernel_size + 1)
