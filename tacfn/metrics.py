"""Classification metrics from labels and predictions (numpy only).

``score`` is the number model selection maximises: accuracy for RAVDESS, the mean of the
per-emotion accuracies for IEMOCAP's binary tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _weighted_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum()
    return float((f1 * support).sum() / total) if total else 0.0


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Accuracy, weighted F1, per-class accuracy (recall) and the confusion matrix.

    A class without samples has no accuracy: None (JSON null; NaN is not JSON).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    per_class = [float(hits / count) if count else None for hits, count in zip(np.diag(cm), support)]
    accuracy = float(np.trace(cm) / cm.sum()) if cm.sum() else 0.0
    return {
        "score": accuracy,
        "accuracy": accuracy,
        "weighted_f1": _weighted_f1(cm),
        "per_class_accuracy": per_class,
        "confusion": cm.tolist(),
    }


def multitask_metrics(y_true: np.ndarray, y_pred: np.ndarray, task_names: Sequence[str]) -> dict:
    """Per-task (per-emotion) accuracy and weighted F1 of binary tasks, shape (N, tasks)."""
    out: dict = {}
    accs, f1s = [], []
    for t, name in enumerate(task_names):
        m = classification_metrics(y_true[:, t], y_pred[:, t], 2)
        out[f"{name}_accuracy"] = m["accuracy"]
        out[f"{name}_weighted_f1"] = m["weighted_f1"]
        accs.append(m["accuracy"])
        f1s.append(m["weighted_f1"])
    out["accuracy"] = float(np.mean(accs))
    out["weighted_f1"] = float(np.mean(f1s))
    out["score"] = out["accuracy"]
    return out
