"""The run dataset: the contract between every stage (layout: ``docs/storage.md``, ``docs/architecture.md``).

One :class:`xarray.Dataset` per fine-tuning run, with dims ``order_parameter × step × prompt × sample``
for judged scores, ``step × prompt × sample × ref_step`` for log-probabilities and ``train_step`` for
the training log. Build it from a tidy table with :func:`from_dataframe`, check it with
:func:`validate` (:mod:`.run_contract`), store it with :func:`save_run` / :func:`open_run` (netCDF4, atomic writes; :mod:`.run_io`).
"""

from __future__ import annotations

from .run_build import _as_nonnegative_int, _parse_scales, assemble_run, from_dataframe, training_log_dataset  # noqa: F401
from .run_contract import REQUIRED_COLUMNS, STATUS, order_parameter_scale, validate
from .run_io import _encodable, migrate_run, open_run, save_run  # noqa: F401
from .runstore import netcdf_attrs as _netcdf_attrs  # noqa: F401

__all__ = [
    "STATUS",
    "REQUIRED_COLUMNS",
    "from_dataframe",
    "assemble_run",
    "training_log_dataset",
    "validate",
    "save_run",
    "open_run",
    "migrate_run",
    "order_parameter_scale",
]
