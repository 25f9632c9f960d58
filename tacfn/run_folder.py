"""A training run's folder: the names of what is inside it, in one place.

``tacfn train --out DIR`` (:func:`tacfn.training.train`) writes::

    DIR/config.json           the config the run trains; a resume is checked against it
    DIR/checkpoints/last.pt   the last epoch: model, optimizer, RNG state, history (--resume)
    DIR/checkpoints/best.pt   the weights of the epoch chosen on validation
    DIR/result.json           the run's result, written when it ends
    DIR/ray-train/            Ray Train's own run, when it trains on several workers

A search's trial checkpoints hold ``last.pt`` too (``best.pt`` and ``result.json`` in a
multi-worker trial's). This module imports nothing, so the dashboards and the output-folder
checks name these files without torch.
"""

from __future__ import annotations

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINTS_DIR",
    "LAST_CHECKPOINT",
    "RESULT_FILE",
    "RUN_CONFIG",
    "RUN_MARKERS",
    "TRAIN_DIR",
]

RUN_CONFIG = "config.json"
RESULT_FILE = "result.json"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
TRAIN_DIR = "ray-train"

RUN_MARKERS: tuple[str, ...] = (RUN_CONFIG, RESULT_FILE, CHECKPOINTS_DIR)
"""A folder holding any of these holds a training run."""
