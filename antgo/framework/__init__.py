"""The design document's import paths (``antgo.framework.helper...``): thin re-exports of the core.

Code written against the document keeps working unchanged. The document's SegMIOU sample uses
``np.int``, an alias numpy removed in 1.24; importing this compatibility layer restores the
removed scalar aliases so that sample runs as written.
"""
from __future__ import annotations

import logging

import numpy as _np

_REMOVED_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "object": object, "str": str, "long": int}

for _name, _value in _REMOVED_NUMPY_ALIASES.items():
    if _name not in _np.__dict__:
        setattr(_np, _name, _value)
        logging.getLogger(__name__).debug("restored numpy alias np.%s for legacy code", _name)
