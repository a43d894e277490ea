// Autocast kernels of defective_block and its backward (AutocastCPU, AutocastCUDA).
//
// As for defective_unit (see autocast/defective_unit.cpp): the fused block holds two BN's
// statistics, so it runs in float32 — the activation, both conv weights, BN parameters and
// the residual (a float32 identity next to a bf16 branch is the usual case) — and returns
// its output in the autocast dtype. The backward follows its input's dtype.
#include "autocast.h"

namespace sparsemask {
namespace {

using Opt = std::optional<at::Tensor>;
using T = at::Tensor;
using Eight = std::tuple<T, T, T, T, T, T, T, T>;
using Ints = at::IntArrayRef;
using ForwardFn = Eight(const T&, const T&, const T&, const Opt&, const Opt&, const Opt&, const Opt&, Ints, Ints, Ints,
                        double, const T&, const T&, const Opt&, const Opt&, const Opt&, const Opt&, Ints, Ints, Ints,
                        double, const Opt&, bool, double);
using BackwardFn = Eight(const T&, const T&, const T&, const T&, const Opt&, const T&, const T&, Ints, Ints, Ints,
                         const T&, const T&, const Opt&, const T&, const T&, Ints, Ints, Ints, const T&, const T&,
                         const T&, const T&, bool, double, std::array<bool, 8>);

template <c10::DeviceType D>
Eight defective_block_autocast(const T& input, const T& w1, const T& mask1, const Opt& bn1_weight,
                               const Opt& bn1_bias, const Opt& rm1, const Opt& rv1, Ints stride1, Ints padding1,
                               Ints dilation1, double eps1, const T& w2, const T& mask2, const Opt& bn2_weight,
                               const Opt& bn2_bias, const Opt& rm2, const Opt& rv2, Ints stride2, Ints padding2,
                               Ints dilation2, double eps2, const Opt& residual, bool training, double max_density) {
  autocast::Guard guard(D);
  static auto op = autocast::op<ForwardFn>("sparsemask::defective_block");
  const at::ScalarType math = autocast::math_dtype(input);
  auto cast = [math](const auto& t) { return autocast::to_dtype(t, math); };
  Eight r = op.call(cast(input), cast(w1), mask1, cast(bn1_weight), cast(bn1_bias), cast(rm1), cast(rv1), stride1,
                    padding1, dilation1, eps1, cast(w2), mask2, cast(bn2_weight), cast(bn2_bias), cast(rm2),
                    cast(rv2), stride2, padding2, dilation2, eps2, cast(residual), training, max_density);
  std::get<0>(r) = std::get<0>(r).to(autocast::conv_out_dtype(input, D));
  return r;
}

template <c10::DeviceType D>
Eight defective_block_backward_autocast(const T& grad_out, const T& input, const T& w1, const T& mask1,
                                        const Opt& bn1_weight, const T& mean1, const T& invstd1, Ints stride1,
                                        Ints padding1, Ints dilation1, const T& w2, const T& mask2,
                                        const Opt& bn2_weight, const T& mean2, const T& invstd2, Ints stride2,
                                        Ints padding2, Ints dilation2, const T& kept1, const T& act1, const T& kept2,
                                        const T& out, bool training, double max_density,
                                        std::array<bool, 8> output_mask) {
  autocast::Guard guard(D);
  static auto op = autocast::op<BackwardFn>("sparsemask::defective_block_backward");
  const at::ScalarType t = input.scalar_type();
  auto cast = [t](const auto& x) { return autocast::to_dtype(x, t); };
  return op.call(cast(grad_out), input, cast(w1), mask1, cast(bn1_weight), mean1, invstd1, stride1, padding1,
                 dilation1, cast(w2), mask2, cast(bn2_weight), mean2, invstd2, stride2, padding2, dilation2,
                 cast(kept1), cast(act1), cast(kept2), cast(out), training, max_density, output_mask);
}

}  // namespace

SPARSEMASK_AUTOCAST_KERNELS(defective_block)

}  // namespace sparsemask
