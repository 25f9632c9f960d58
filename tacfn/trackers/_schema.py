"""The ``loggers`` setting: which experiment trackers a run logs to, and where.

A search space's ``search.loggers``, an ablation plan's ``loggers`` and a ``tacfn train``
config's ``loggers`` take the same list. Each entry is a tracker's name, which logs to its
default place in the experiment folder, or a mapping of the name to where it logs::

    loggers: [mlflow, wandb, tensorboard]
    loggers:
      - mlflow: {tracking_uri: "http://mlflow.example:5000", experiment: ravdess}
      - wandb: {project: tacfn, mode: online}
      - tensorboard: {logdir: /shared/tensorboard}

Defaults (:func:`with_destinations`), in the experiment folder ``EXP`` (``--out``): MLflow
``sqlite:///EXP/mlflow.db`` (MLflow 3 refuses a plain file store), W&B offline files in
``EXP/wandb/`` (online only with ``mode: online`` or ``WANDB_MODE=online``), TensorBoard
event files in ``EXP/tensorboard/RUN/``. Each tracker is an optional extra of the package;
:func:`check_installed` imports it before anything starts, and a missing one is a one-line
ConfigError naming the ``pip install`` that fixes it.

This module imports pydantic only: a search space's schema reads it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_serializer

from ..errors import ConfigError, describe_validation_error

TrackerName = Literal["mlflow", "wandb", "tensorboard"]
EXTRAS: dict[str, tuple[str, ...]] = {
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
    "tensorboard": ("tensorboardX",),  # what writes the event files (Ray's TensorBoard logger uses it too)
}
"""Tracker name -> the modules its extra (``pip install 'tacfn[NAME]'``) provides."""


class _Tracker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer
    def _as_written(self) -> str | dict[str, dict[str, Any]]:
        """As a file writes it: the name alone, or the name mapped to the options given."""
        options = {key: value for key, value in self.__dict__.items() if key != "name" and value is not None}
        return {self.name: options} if options else self.name  # type: ignore[attr-defined]  # every subclass has a name


class MLflowTracker(_Tracker):
    """MLflow: one run per trial in the experiment ``experiment`` (default: the experiment's
    name) of the tracking server or database ``tracking_uri``."""

    name: Literal["mlflow"] = "mlflow"
    tracking_uri: str | None = None
    experiment: str | None = None


class WandbTracker(_Tracker):
    """Weights & Biases: one run per trial in ``project`` (default: the experiment's name),
    its local files under ``dir``; ``mode`` online sends them to the W&B server."""

    name: Literal["wandb"] = "wandb"
    project: str | None = None
    mode: Literal["offline", "online"] | None = None
    dir: str | None = None


class TensorBoardTracker(_Tracker):
    """TensorBoard: one folder of event files per trial under ``logdir``."""

    name: Literal["tensorboard"] = "tensorboard"
    logdir: str | None = None


Tracker = Annotated[MLflowTracker | WandbTracker | TensorBoardTracker, Field(discriminator="name")]


def _written_forms(value: Any) -> Any:
    """``mlflow`` and ``{mlflow: {options}}`` entries as the models read them (``{name: mlflow, ...}``)."""
    if isinstance(value, (str, dict)):
        value = [value]  # `loggers: mlflow` is a list of one
    if not isinstance(value, list):
        return value  # pydantic says what was expected
    known = ", ".join(EXTRAS)
    entries = []
    for entry in value:
        if isinstance(entry, str):
            entry = {entry: None}
        if not (isinstance(entry, dict) and len(entry) == 1 and isinstance(next(iter(entry.values())), (dict, type(None)))):
            raise ValueError(f"each logger is a name ({known}) or one name mapped to its options, but got {entry!r}")
        name, options = next(iter(entry.items()))
        if name not in EXTRAS:
            raise ValueError(f"unknown logger {name!r}; known: {known}")
        entries.append({**(options or {}), "name": name})
    return entries


def _distinct(trackers: list[Tracker]) -> list[Tracker] | None:
    names = [tracker.name for tracker in trackers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"each logger may be given once, but {', '.join(repeated)} repeats")
    return trackers or None  # no loggers: left out of the experiment's spec, as before loggers existed


Trackers = Annotated[list[Tracker], BeforeValidator(_written_forms), AfterValidator(_distinct)]
"""The ``loggers`` list; empty reads as None (no trackers)."""


def parse_trackers(value: Any, source: str) -> list[Tracker] | None:
    """A ``loggers`` list read on its own (a ``tacfn train`` config's); a bad one raises
    ConfigError naming ``source``, the key and the rule."""
    try:
        return TypeAdapter(Trackers | None).validate_python(value)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err, at='loggers')}") from None


def check_installed(trackers: list[Tracker] | None, setting: str) -> None:
    """Import each tracker's library; one that is missing raises ConfigError naming its extra."""
    for tracker in trackers or ():
        for module in EXTRAS[tracker.name]:
            try:
                importlib.import_module(module)
            except ImportError:
                raise ConfigError(
                    f"{setting}: {tracker.name} needs the {tracker.name} extra: pip install 'tacfn[{tracker.name}]'"
                ) from None


def with_destinations(trackers: list[Tracker] | None, root: Path | str | None, experiment: str, setting: str) -> list[Tracker]:
    """``trackers`` with every destination filled in: the defaults in the output folder
    ``root`` (a URI or None has none: its trackers must name theirs), ``experiment`` as
    MLflow's experiment and W&B's project, W&B's mode from ``WANDB_MODE`` or offline."""
    local = Path(root).absolute() if isinstance(root, Path) else None

    def in_experiment(tracker: Tracker, option: str) -> Path:
        if local is None:
            where = f"{root} is not a local folder" if root else "no --out was given"
            raise ConfigError(
                f"{setting}: {tracker.name} writes into the --out folder by default, but {where}; "
                f"give {{{tracker.name}: {{{option}: ...}}}}"
            )
        return local

    filled: list[Tracker] = []
    for tracker in trackers or ():
        if isinstance(tracker, MLflowTracker):
            uri = tracker.tracking_uri or f"sqlite:///{in_experiment(tracker, 'tracking_uri') / 'mlflow.db'}"
            filled.append(tracker.model_copy(update={"tracking_uri": uri, "experiment": tracker.experiment or experiment}))
        elif isinstance(tracker, WandbTracker):
            mode = tracker.mode or ("online" if os.environ.get("WANDB_MODE") == "online" else "offline")
            folder = Path(tracker.dir).absolute() if tracker.dir else in_experiment(tracker, "dir")
            filled.append(tracker.model_copy(update={"project": tracker.project or experiment, "mode": mode, "dir": str(folder)}))
        else:
            logdir = Path(tracker.logdir).absolute() if tracker.logdir else in_experiment(tracker, "logdir") / "tensorboard"
            filled.append(tracker.model_copy(update={"logdir": str(logdir)}))
    return filled
