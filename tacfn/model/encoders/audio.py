"""Audio encoder: MSAF's MFCC CNN, as TACFN's released code uses it.

Input: MFCCs (B, n_mfcc, frames), e.g. (B, 13, 212) for 2.45 s at 44.1 kHz with hop 512.
Output: (B, 64, frames') channels first, (B, 64, 26) for the paper; the paper's head
flattens it to 1664 features.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["MfccCnn"]


def _out_length(length: int, layer: nn.Conv1d | nn.MaxPool1d) -> int:
    """Sequence length after a 1-D conv or pool (no dilation)."""
    kernel, stride, padding = (_single(getattr(layer, a)) for a in ("kernel_size", "stride", "padding"))
    return (length + 2 * padding - kernel) // stride + 1


def _single(value: int | Sequence[int]) -> int:
    return value if isinstance(value, int) else value[0]


class MfccCnn(nn.Module):
    """Three Conv1d layers over MFCC frames (MSAF's ``MFCCNet`` without its classifier).

    conv1 (k7, p2) -> ReLU -> bn1; conv2 (k7, p2) -> ReLU -> max-pool 8 -> bn2 -> dropout;
    conv3 (k5, p2) -> ReLU -> bn3. Note the order: ReLU before BN, as in MSAF. Module
    names match MSAF's state_dict keys (``conv1..3``, ``bn1..3``; its ``fc1`` classifier
    is not part of the trunk), so its per-fold checkpoints load directly.
    """

    def __init__(self, n_mfcc: int = 13, widths: Sequence[int] = (32, 32, 64), dropout: float = 0.2) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"`widths` must be 3 channel counts >= 1, but got {tuple(widths)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`0 <= dropout < 1` must hold, but got dropout={dropout}")
        self.n_mfcc = n_mfcc
        self.out_channels = widths[2]
        self.conv1 = nn.Conv1d(n_mfcc, widths[0], kernel_size=7, padding=2)
        self.bn1 = nn.BatchNorm1d(widths[0])
        self.conv2 = nn.Conv1d(widths[0], widths[1], kernel_size=7, padding=2)
        self.maxpool = nn.MaxPool1d(kernel_size=8)
        self.bn2 = nn.BatchNorm1d(widths[1])
        self.dropout = nn.Dropout(dropout)
        self.conv3 = nn.Conv1d(widths[1], widths[2], kernel_size=5, padding=2)
        self.bn3 = nn.BatchNorm1d(widths[2])
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.relu(self.conv1(x)))
        x = self.dropout(self.bn2(self.maxpool(self.relu(self.conv2(x)))))
        return self.bn3(self.relu(self.conv3(x)))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output (C, frames') for a per-sample input (n_mfcc, frames)."""
        if len(input_shape) != 2 or input_shape[0] != self.n_mfcc:
            raise ValueError(
                f"MfccCnn takes a per-sample input of shape ({self.n_mfcc}, frames), but got {tuple(input_shape)}"
            )
        length = input_shape[1]
        for layer in (self.conv1, self.conv2, self.maxpool, self.conv3):
            length = _out_length(length, layer)
            if length < 1:
                raise ValueError(
                    f"MfccCnn needs more input frames, but got {input_shape[1]} (a layer would output {length})"
                )
        return (self.out_channels, length)
