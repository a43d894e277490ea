"""The functional ops, one module each (wrapper + fake kernels + autograd):

``masked_conv2d``          conv2d(x, w, b) * mask, computing the kept neurons only
``masked_batch_norm_act``  act(mask * BN(x)), the defective unit's epilogue, fused
``defective_unit``         act(mask * BN(conv(x)) [+ residual]) as one op
``defective_block``        a ResNet basic block of two defective units as one op

``common`` holds argument checks and autocast dtype rules, ``autograd`` the shared
gradient glue. Which kernel runs is :mod:`sparsemask.dispatch`'s decision.
"""
from .autograd import differentiable_conv_backward
from .common import autocast_dtype, conv_dtype, conv_output_size
from .defective_block import defective_block
from .defective_unit import defective_unit
from .masked_batch_norm import masked_batch_norm_act
from .masked_conv2d import cpp_masked_conv2d, dense_masked_conv2d, masked_conv2d

__all__ = ["masked_conv2d", "dense_masked_conv2d", "cpp_masked_conv2d", "conv_output_size", "masked_batch_norm_act",
           "defective_unit", "defective_block", "autocast_dtype", "conv_dtype", "differentiable_conv_backward"]
