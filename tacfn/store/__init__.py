"""The results store: one folder per experiment, Parquet tables written with pyarrow.

A folder (local, or under a URI such as ``s3://bucket/prefix``) holds ``experiment.json``
and three tables: ``trials.parquet`` (one row per trial), ``epochs.parquet`` (learning
curves) and ``predictions.parquet`` (labels and predictions). Every file is replaced
atomically, so readers during a search always see whole files; one process writes.

- :class:`ExperimentStore`: create or open a folder, record trials, update their columns,
  read the tables.
- :class:`Location` and :func:`read_table`: the folder's files, local or remote, read whole
  through one handle.
- :data:`TRIALS`, :data:`EPOCHS`, :data:`PREDICTIONS` (:class:`TableSpec`): each table's
  file and fixed columns; :data:`STATUSES`, :data:`KINDS`, :data:`CONFIG_PREFIX`.
- :func:`flatten_config` and :func:`param_columns`: a trial's ``config.*`` and ``param.*``
  (:data:`PARAM_PREFIX`) columns.

This package needs neither torch nor Ray: dashboards read results on a laptop without them.
It imports nothing from :mod:`tacfn.search`, :mod:`tacfn.training` or :mod:`tacfn.model`.
"""

from __future__ import annotations

from ._experiment import EXPERIMENT_FILE, KINDS, ExperimentStore
from ._location import Location, absolute_root, is_uri, read_table
from ._log import read_results, results_version
from ._provenance import git_commit, package_versions
from ._schema import (
    CONFIG_PREFIX,
    EPOCHS,
    PARAM_PREFIX,
    PREDICTIONS,
    SCHEMA_VERSION,
    STATUSES,
    TRIALS,
    TableSpec,
    flatten_config,
    param_columns,
)

__all__ = [
    "CONFIG_PREFIX",
    "EPOCHS",
    "EXPERIMENT_FILE",
    "KINDS",
    "PARAM_PREFIX",
    "PREDICTIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "TRIALS",
    "ExperimentStore",
    "Location",
    "TableSpec",
    "absolute_root",
    "flatten_config",
    "git_commit",
    "is_uri",
    "package_versions",
    "param_columns",
    "read_results",
    "read_table",
    "results_version",
]
