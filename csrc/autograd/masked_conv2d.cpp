// The autograd kernel of sparsemask::masked_conv2d (DispatchKey Autograd: CPU and CUDA).
//
// Why C++: the same formula registered from Python (torch.library.register_autograd, or an
// autograd.Function) costs 50-190 us of Python per forward+backward, as much as a small
// layer's whole convolution; `auto` must never be slower than dense, and that overhead made
// it so on small calls (benchmarks/RESULTS.md, issue 16). This kernel records a graph node
// the way PyTorch's generated VariableType kernels do (a Node subclass, set_history), not
// through torch::autograd::Function, which torch.func transforms refuse.
//
// Formula: gradients of conv2d(input, weight, bias) * mask; only kept outputs contribute
// (sparsemask::masked_conv2d_backward's kernels). When autograd records the backward itself
// (create_graph=True: grad mode is on inside backward) the dense differentiable ATen formula
// runs instead, so second-order gradients are exactly those of the composite
// (sparsemask/ops/autograd.py has the same rule for the Triton op).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <array>
#include <mutex>
#include <vector>

namespace sparsemask {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

using ForwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                             const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, double);
using BackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
    at::IntArrayRef, double, std::array<bool, 3>);

template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The graph node of one masked_conv2d call; its next edges are (input, weight, bias).
struct MaskedConv2dBackward final : public torch::autograd::Node {
  SavedVariable input, weight, mask;  // version-checked: modifying them in place before backward raises
  std::vector<int64_t> stride, padding, dilation;
  double max_density = 1.0;
  bool has_bias = false;

  std::string name() const override { return "MaskedConv2dBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    input.reset_data();
    weight.reset_data();
    mask.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const at::Tensor& grad = grads[0];
    const std::array<bool, 3> need = {task_should_compute_output(0), task_should_compute_output(1),
                                      has_bias && task_should_compute_output(2)};
    variable_list out(3);
    if (!grad.defined() || !(need[0] || need[1] || need[2])) return out;
    const at::Tensor in = input.unpack(), w = weight.unpack(), m = mask.unpack();
    at::Tensor gi, gw, gb;
    if (at::GradMode::is_enabled()) {
      // create_graph=True: differentiable ATen ops (dense cost), recorded by autograd.
      const int64_t bias_size[1] = {w.size(0)};
      std::tie(gi, gw, gb) = at::convolution_backward(
          grad.masked_fill(m.logical_not(), 0), in, w, at::OptionalIntArrayRef(bias_size), stride, padding,
          dilation, false, {0, 0}, 1, need);
    } else {
      static auto backward_op = typed_op<BackwardFn>("sparsemask::masked_conv2d_backward");
      std::tie(gi, gw, gb) = backward_op.call(grad, in, w, m, stride, padding, dilation, max_density, need);
    }
    if (need[0]) out[0] = gi;
    if (need[1]) out[1] = gw;
    if (need[2]) out[2] = gb;
    return out;
  }
};

at::Tensor masked_conv2d_autograd(const at::Tensor& input, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, const at::Tensor& mask,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  double max_density) {
  static auto forward_op = typed_op<ForwardFn>("sparsemask::masked_conv2d");
  const at::Tensor bias_or_undefined = bias.has_value() ? *bias : at::Tensor();
  c10::intrusive_ptr<MaskedConv2dBackward> node;
  if (torch::autograd::compute_requires_grad(input, weight, bias_or_undefined)) {
    node = c10::make_intrusive<MaskedConv2dBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(input, weight, bias_or_undefined));
    node->input = SavedVariable(input, false);
    node->weight = SavedVariable(weight, false);
    node->mask = SavedVariable(mask, false);
    node->stride = stride.vec();
    node->padding = padding.vec();
    node->dilation = dilation.vec();
    node->max_density = max_density;
    node->has_bias = bias.has_value();
  }
  at::Tensor out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = forward_op.call(input, weight, bias, mask, stride, padding, dilation, max_density);
  }
  if (node) torch::autograd::set_history(out, c10::intrusive_ptr<torch::autograd::Node>(node));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsemask, Autograd, m) {
  m.impl("masked_conv2d", TORCH_FN(masked_conv2d_autograd));
}

}  // namespace sparsemask
