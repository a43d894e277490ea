// The CPU buffer pool (see buffer_pool.h). Compiled once, for baseline x86-64.
#include "buffer_pool.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace sparsemask {
namespace cpu {
namespace {

constexpr size_t kBlockAlign = size_t(2) << 20;      // one transparent huge page
constexpr size_t kMinPooledBytes = size_t(1) << 20;  // below this, faults are few: plain allocator

size_t limit_from_env() {
  const char* env = std::getenv("SPARSEMASK_CPU_POOL_MB");
  if (env == nullptr || *env == '\0') return size_t(1024) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(env, &end, 10);
  // A malformed value cannot throw here (first use may be inside a kernel's setup): it
  // disables the pool, which is always correct, and pool_info() reports limit 0.
  if (end == env || *end != '\0' || mb < 0) return 0;
  return static_cast<size_t>(mb) << 20;
}

void free_block(void* ptr);

class Pool final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kMinPooledBytes || limit_ == 0) return c10::GetCPUAllocator()->allocate(nbytes);
    const size_t size = (nbytes + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
    void* ptr = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = idle_.find(size);
      if (it != idle_.end() && !it->second.empty()) {
        ptr = it->second.back();
        it->second.pop_back();
        idle_bytes_ -= size;
        --idle_blocks_;
        ++hits_;
      } else {
        ++misses_;
      }
    }
    if (ptr == nullptr) {
      ptr = std::aligned_alloc(kBlockAlign, size);
      TORCH_CHECK(ptr != nullptr, "sparsemask: out of memory allocating ", size, " bytes (CPU buffer pool)");
#ifdef __linux__
      madvise(ptr, size, MADV_HUGEPAGE);  // advisory: ignored where THP is off
#endif
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_[ptr] = size;
    }
    return {ptr, ptr, &free_block, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &free_block; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void release(void* ptr) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = live_.find(ptr);
      TORCH_INTERNAL_ASSERT(it != live_.end(), "sparsemask buffer pool: freeing a block it did not allocate");
      const size_t size = it->second;
      live_.erase(it);
      if (idle_bytes_ + size <= limit_) {
        idle_[size].push_back(ptr);
        idle_bytes_ += size;
        ++idle_blocks_;
        return;
      }
    }
    std::free(ptr);
  }

  void release_idle() {
    std::vector<void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& [size, list] : idle_) blocks.insert(blocks.end(), list.begin(), list.end());
      idle_.clear();
      idle_bytes_ = 0;
      idle_blocks_ = 0;
    }
    for (void* p : blocks) std::free(p);
  }

  PoolInfo info() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(idle_bytes_), idle_blocks_, static_cast<int64_t>(live_.size()), hits_, misses_,
            static_cast<int64_t>(limit_)};
  }

 private:
  const size_t limit_ = limit_from_env();
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> idle_;  // by block size
  std::unordered_map<void*, size_t> live_;               // handed out, by pointer
  size_t idle_bytes_ = 0;
  int64_t idle_blocks_ = 0, hits_ = 0, misses_ = 0;
};

// Never destroyed: tensors may be freed during interpreter shutdown, after static
// destructors would have run.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

void free_block(void* ptr) { pool().release(ptr); }

}  // namespace

at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& opts, at::MemoryFormat fmt) {
  TORCH_CHECK(opts.device().is_cpu(), "pooled_empty: CPU tensors only, got ", opts.device());
  return at::Tensor(at::detail::empty_generic(sizes, &pool(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                              opts.dtype().toScalarType(), fmt));
}

PoolInfo pool_info() { return pool().info(); }

void pool_release() { pool().release_idle(); }

}  // namespace cpu
}  // namespace sparsemask
