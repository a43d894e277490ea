#include "plan.h"

#include <atomic>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>

#include <c10/core/Storage.h>
#include <c10/util/intrusive_ptr.h>

namespace sparsemask {

std::shared_ptr<MaskPlan> build_plan(const at::Tensor& mask) {
  TORCH_CHECK(mask.dim() == 3, "mask_plan: mask must be 3-D [C_out, H_out, W_out], got ", mask.sizes());
  TORCH_CHECK(mask.scalar_type() == at::kBool, "mask_plan: mask must be torch.bool, got ", mask.scalar_type());
  auto plan = std::make_shared<MaskPlan>();
  plan->channels = mask.size(0);
  plan->height = mask.size(1);
  plan->width = mask.size(2);
  const int64_t C = plan->channels, Q = plan->height * plan->width;
  at::Tensor by_ch = mask.reshape({C, Q});
  at::Tensor by_pos = by_ch.t().contiguous();
  // A stable sort of "dropped" flags puts the kept ids first, in ascending order; this is
  // plain ATen, so the same code builds plans on every device.
  auto kept_first = [](const at::Tensor& m) {
    return at::argsort(m.logical_not().to(at::kByte), /*stable=*/true, /*dim=*/1).to(at::kInt).contiguous();
  };
  plan->pos_count = by_pos.sum(1, false, at::kInt).contiguous();
  plan->pos_ch = C > 0 && Q > 0 ? kept_first(by_pos) : at::zeros({Q, C}, mask.options().dtype(at::kInt));
  plan->pos_start = at::zeros({Q + 1}, mask.options().dtype(at::kLong));
  if (Q > 0) plan->pos_start.narrow(0, 1, Q).copy_(plan->pos_count.cumsum(0, at::kLong));
  // nonzero() lists (q, c) in row-major order: q ascending, then c — the kept rows' order.
  plan->row_ch = by_pos.nonzero().select(1, 1).to(at::kInt).contiguous();
  plan->nnz = plan->pos_start[Q].item<int64_t>();  // one device-to-host read per plan
  if (mask.device().is_cpu()) {
    plan->keep_cq = by_ch.contiguous();
    plan->keep_qc = by_pos;
  }
  plan->density = mask.numel() > 0 ? static_cast<double>(plan->nnz) / static_cast<double>(mask.numel()) : 0.0;
  return plan;
}

namespace {

struct Entry {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const c10::StorageImpl* storage_key;
  int64_t offset;
  std::vector<int64_t> sizes, strides;
  c10::Device device;
  at::Tensor contents;  // a copy of the mask the plan was built from, in the mask's strides
  std::shared_ptr<const MaskPlan> plan;
};

struct Cache {
  std::mutex mutex;
  std::list<Entry> entries;  // most recently used first
  int64_t builds = 0, hits = 0;
  static constexpr size_t kCapacity = 1024;
};

Cache& cache() {
  static Cache c;
  return c;
}

std::atomic<bool (*)(c10::Device)> capture_query{nullptr};

// Whether `mask` still holds `contents` (see get_plan in plan.h for why contents, not the
// version counter). nullopt: cannot check now (a CUDA graph is being captured).
std::optional<bool> same_contents(const at::Tensor& mask, const at::Tensor& contents) {
  if (mask.device().is_cpu()) {
    // contents is a clone in the mask's own strides: a dense mask (contiguous, transposed,
    // channels-last...) is then one memcmp over the same bytes (at::equal: ~40x slower).
    if (mask.is_non_overlapping_and_dense() && mask.strides() == contents.strides())
      return std::memcmp(mask.const_data_ptr(), contents.const_data_ptr(), static_cast<size_t>(mask.numel())) == 0;
    return at::equal(mask, contents);
  }
  auto query = capture_query.load();
  if (query != nullptr && query(mask.device())) return std::nullopt;
  return at::equal(mask, contents);
}

}  // namespace

std::shared_ptr<const MaskPlan> get_plan(const at::Tensor& mask) {
  if (!mask.has_storage()) return build_plan(mask);
  Cache& c = cache();
  const c10::StorageImpl* key = mask.storage().unsafeGetStorageImpl();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    for (auto it = c.entries.begin(); it != c.entries.end();) {
      if (it->storage.expired()) {
        it = c.entries.erase(it);
        continue;
      }
      if (it->storage_key == key && it->offset == mask.storage_offset() && it->device == mask.device() &&
          it->sizes == mask.sizes().vec() && it->strides == mask.strides().vec()) {
        // Under the lock: the check is a memcmp on CPU; elsewhere one small reduction.
        std::optional<bool> same = same_contents(mask, it->contents);
        if (!same.has_value() || *same) {
          ++c.hits;
          c.entries.splice(c.entries.begin(), c.entries, it);
          return c.entries.front().plan;
        }
        it = c.entries.erase(it);  // the mask was written in place: its old plan is stale
        continue;
      }
      ++it;
    }
  }
  std::shared_ptr<const MaskPlan> plan = build_plan(mask);
  std::lock_guard<std::mutex> lock(c.mutex);
  ++c.builds;
  c.entries.push_front(Entry{mask.storage().getWeakStorageImpl(), key, mask.storage_offset(), mask.sizes().vec(),
                             mask.strides().vec(), mask.device(), mask.clone(at::MemoryFormat::Preserve), plan});
  if (c.entries.size() > Cache::kCapacity) c.entries.pop_back();
  return plan;
}

void set_capture_query(bool (*query)(c10::Device)) { capture_query.store(query); }

PlanCacheInfo plan_cache_info() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return {c.builds, c.hits, static_cast<int64_t>(c.entries.size())};
}

void plan_cache_clear() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.entries.clear();
  c.builds = 0;
  c.hits = 0;
}

}  // namespace sparsemask
