"""Layers: defective convolutions and ``defect(model, ...)``, ensembles, and the other seed defenses.

Kept a flat list of imports (one per line) so engineers can append without conflicts.
"""
from .defective import DefectiveConv2d  # noqa: F401
from .defective import MaskedBatchNorm2d  # noqa: F401
from .defect import defect  # noqa: F401
from .defect import defective_layers  # noqa: F401
from .ensemble import Ensemble  # noqa: F401
from .ensemble import make_ensemble  # noqa: F401
