// SIMD building blocks of the CPU kernels: the vector type of each compute type (GCC/Clang
// vector extensions, so the ISA level being compiled picks the instructions: isa.h),
// unaligned loads/stores, and horizontal sums. Register-tile sizes follow the vector width.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#ifndef SPARSEMASK_CPU_LEVEL
#error "the CPU kernels are compiled once per ISA level: include them through csrc/cpu/isa/*.cpp (isa.h)"
#endif

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {  // one per ISA level (isa.h)

#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
constexpr int kVecBytes = 64;
constexpr int kRowBlock = 4;  // images (forward, grad_input) per register tile; 32 registers
#else
constexpr int kVecBytes = 32;
constexpr int kRowBlock = 2;  // 16 registers
#endif
constexpr int kColBlock = 4;  // channels (forward, grad_weight) or vectors (grad_input) per tile

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t kLanes = kVecBytes / sizeof(T);

template <typename T>
inline Vec<T> loadu(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void storeu(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
inline Vec<T> splat(T x) {
  return Vec<T>{} + x;
}
// Horizontal sum as a tree of half-vector adds (vextract + add per level, then two scalar
// adds): a lane-by-lane loop is 15 dependent scalar adds for float on AVX-512, about a
// third of the forward tile's instructions.
template <typename V>
inline auto half_sum(V v) {
  constexpr int n = sizeof(V) / sizeof(v[0]);
  if constexpr (n == 16) {
    return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  } else if constexpr (n == 8) {
    return __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  } else if constexpr (n == 4) {
    return __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
  } else {
    static_assert(n == 2, "half_sum: unsupported vector width");
    return v[0] + v[1];
  }
}
template <typename V>
inline auto tree_sum(V v) {
  if constexpr (sizeof(V) / sizeof(v[0]) == 2) {
    return v[0] + v[1];
  } else {
    return tree_sum(half_sum(v));
  }
}
template <typename T>
inline T hsum(Vec<T> v) {
  return tree_sum(v);
}

// Stores a float vector as O: float as is, bfloat16 rounded to nearest even in registers
// (NaN kept NaN, as c10::BFloat16 does), float16 element by element. Lets a kernel that
// computes in float32 write a 16-bit tensor directly instead of a float32 copy converted
// afterwards (a whole extra pass over a gradient the size of the input).
template <typename O, typename T>
inline void store_as(O* p, Vec<T> v) {
  if constexpr (std::is_same_v<O, T>) {
    storeu(p, v);
  } else if constexpr (std::is_same_v<O, c10::BFloat16> && std::is_same_v<T, float>) {
    typedef uint32_t U32 __attribute__((vector_size(kVecBytes)));
    typedef uint16_t U16 __attribute__((vector_size(kVecBytes / 2)));
    U32 u;
    std::memcpy(&u, &v, sizeof(u));
    const U32 rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const U32 is_nan = (U32)(v != v);
    const U16 bits = __builtin_convertvector((rounded & ~is_nan) | (U32{} + 0x7FC0u & is_nan), U16);
    std::memcpy(p, &bits, sizeof(bits));
  } else {
    for (int64_t i = 0; i < kLanes<T>; ++i) p[i] = static_cast<O>(v[i]);
  }
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu
}  // namespace sparsemask
