"""Layers: defective convolutions and ``defect(model, ...)``, ensembles, and the other seed defenses.

``defective`` (DefectiveConv2d, MaskedBatchNorm2d and the fused-unit helpers), ``defect``
(converting any model), ``ensemble``, and one module per seed defense: ``dropout``
(MC dropout and the shared randomized-inference base), ``dropblock``, ``mad``, ``spiking``,
``randomization`` (random resize + pad).
"""
from .defective import DefectiveConv2d  # noqa: F401
from .defective import MaskedBatchNorm2d  # noqa: F401
from .defective import conv_bn_act  # noqa: F401
from .defective import basic_block  # noqa: F401
from .defect import defect  # noqa: F401
from .defect import defective_layers  # noqa: F401
from .defect import masked_norms  # noqa: F401
from .defect import forward_convs  # noqa: F401
from .ensemble import Ensemble  # noqa: F401
from .ensemble import make_ensemble  # noqa: F401
from .dropout import MCDropout  # noqa: F401
from .dropout import RandomizedInference  # noqa: F401
from .dropout import combine_outputs  # noqa: F401
from .dropout import enable_mc_dropout  # noqa: F401
from .dropblock import DropBlock2d  # noqa: F401
from .dropblock import SpatialDropout2d  # noqa: F401
from .mad import GridMask  # noqa: F401
from .mad import MADClassifier  # noqa: F401
from .mad import mad_defaults  # noqa: F401
from .spiking import RandomSpiking  # noqa: F401
from .spiking import insert_after_first_conv  # noqa: F401
from .spiking import spiking_inference  # noqa: F401
from .randomization import Pattern  # noqa: F401
from .randomization import PatternEnsemble  # noqa: F401
from .randomization import RandomResizePad  # noqa: F401
from .randomization import randomization_defense  # noqa: F401
