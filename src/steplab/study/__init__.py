"""Evidence for choosing an optimizer: comparisons, the LR range test, hyperparameter search.

Names are imported lazily so that ``import steplab.study`` does not pull in
matplotlib, Optuna or Ray until a function that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "StudySpec": "steplab.study.spec",
    "load_study_spec": "steplab.study.spec_load",
    "run_study": "steplab.study.compare",
    "StudyResult": "steplab.study.compare",
    "lr_range_test": "steplab.study.lr_find",
    "LRRangeResult": "steplab.study.lr_find",
    "tune": "steplab.study.tuning",
    "TuneResult": "steplab.study.tune_results",
    "ensure_ray": "steplab.study.ray_cluster",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'steplab.study' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
