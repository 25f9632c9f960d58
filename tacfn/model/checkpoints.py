"""Load MSAF-format unimodal checkpoints into our encoders, and fingerprint weights.

TACFN's paper starts its encoders from per-fold unimodal checkpoints in MSAF's format:
plain state_dicts of the 3D ResNeXt-50 (``conv1``, ``bn1``, ``layer1..4``, classifier
``fc``) and of the MFCC CNN (``conv1..3``, ``bn1..3``, classifier ``fc1``). Our
:class:`~tacfn.model.encoders.ResNeXt3D` and :class:`~tacfn.model.encoders.MfccCnn` use
the same module names, so loading is a strict key-for-key copy of the trunk; the
classifier is dropped (the fusion head replaces it) and reported.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["CLASSIFIER_KEYS", "LoadReport", "load_msaf_checkpoint", "weights_hash"]

#: Top-level modules of MSAF's unimodal classifiers; not part of our trunks.
CLASSIFIER_KEYS: tuple[str, ...] = ("fc", "fc1")
_DATA_PARALLEL_PREFIX = "module."
# BatchNorm step counters that checkpoints from PyTorch < 0.4.1 lack; they do not change
# what the network computes, and BatchNorm's own loader fills them in.
_OPTIONAL_SUFFIX = ".num_batches_tracked"


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_msaf_checkpoint` did: trunk keys copied, classifier keys ignored."""

    path: str
    loaded: tuple[str, ...]
    ignored: tuple[str, ...]


def load_msaf_checkpoint(encoder: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Copy an MSAF-format checkpoint's trunk weights into ``encoder`` (in place).

    Accepts a plain state_dict or a dict holding one under ``"state_dict"``; a leading
    ``module.`` (``nn.DataParallel`` saves) is stripped. Classifier keys (``fc.*``,
    ``fc1.*``) are ignored and listed in the report. Every other key must match the
    encoder's state_dict exactly, name and shape, or :class:`~tacfn.errors.ConfigError`
    names the first that does not; the encoder is left untouched in that case.
    """
    path = os.fspath(path)
    state = _read_state_dict(path)
    trunk = {k: v for k, v in state.items() if k.split(".", 1)[0] not in CLASSIFIER_KEYS}
    ignored = tuple(k for k in state if k not in trunk)
    expected = encoder.state_dict()
    name = type(encoder).__name__

    missing = [k for k in expected if k not in trunk and not k.endswith(_OPTIONAL_SUFFIX)]
    if missing:
        raise ConfigError(
            f"checkpoint {path} lacks key {missing[0]!r} of {name} ({len(missing)} missing in all); "
            f"it must hold every trunk key of the encoder"
        )
    unexpected = [k for k in trunk if k not in expected]
    if unexpected:
        raise ConfigError(
            f"checkpoint {path} has key {unexpected[0]!r} that {name} does not have "
            f"({len(unexpected)} in all); only classifier keys {list(CLASSIFIER_KEYS)} may be extra"
        )
    for key, value in trunk.items():
        if value.shape != expected[key].shape:
            raise ConfigError(
                f"checkpoint {path} has {key!r} of shape {tuple(value.shape)}, "
                f"but {name} expects {tuple(expected[key].shape)}"
            )
    encoder.load_state_dict(trunk, strict=True)
    return LoadReport(path=path, loaded=tuple(trunk), ignored=ignored)


def _read_state_dict(path: str) -> dict[str, Tensor]:
    """The checkpoint's tensors by key, unwrapped and without a DataParallel prefix."""
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file makes torch.load raise any of a dozen types
        raise ConfigError(
            f"cannot read checkpoint {path}: not a PyTorch weights file, truncated, or holding "
            f"objects other than tensors ({type(exc).__name__})"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConfigError(
            f"checkpoint {path} must be a state_dict (str -> tensor), or a dict holding one under "
            f"'state_dict', but got a {type(obj).__name__} that is neither"
        )
    return {str(k).removeprefix(_DATA_PARALLEL_PREFIX): v for k, v in obj.items()}


def weights_hash(module: nn.Module) -> str:
    """Short sha256 of ``module``'s state_dict (names, dtypes, shapes, values).

    Stable across runs and processes for equal weights; any changed value changes it. It
    is the weights part of a frozen encoder's feature-cache key. It sees tensors only:
    constructor switches that change the computation without changing the weights
    (``ResNeXt3D(stem_relu=...)``) belong in the cache key's encoder part.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
