// SIMD building blocks of the CPU kernels: the vector type of each compute type (GCC/Clang
// vector extensions, so the ISA level being compiled picks the instructions: isa.h),
// unaligned loads/stores, and horizontal sums. Register-tile sizes follow the vector width.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

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

// Horizontal sums of up to kLanes<T> vectors at once, into one vector (lane i = the sum of
// v[i]). Each level adds the halves of every lane group of two vectors side by side — two
// two-source shuffles and one add per pair — so 16 float vectors on AVX-512 cost 15 such
// steps (45 instructions) where 16 tree_sums cost 128 — an estimated eighth of a 4x4
// forward tile's instructions at 64 input channels (measured, 64->64@32 channels_last fp32,
// N=32 keep 1.0 forward: 8.8-9.1 -> 8.3-8.6 ms; keep 0.1 about 2%). Output lane i of a level takes lane lo_lane(G, i)
// (and that + G/2) of the pair's 2 * lanes, where G is the size of the lane groups that
// each still hold one vector's partial sums.
constexpr int lo_lane(int G, int i) {
  return (i / (G / 2)) * G + i % (G / 2);
}
template <int G, typename V, size_t... I>
inline V fold_pair(V a, V b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, lo_lane(G, I)...) + __builtin_shufflevector(a, b, (lo_lane(G, I) + G / 2)...);
}
template <int G, int Count, typename V>
inline void fold_levels(V* v) {
  constexpr int n = sizeof(V) / sizeof(v[0][0]);
  for (int i = 0; i < Count / 2; ++i) v[i] = fold_pair<G>(v[2 * i], v[2 * i + 1], std::make_index_sequence<n>{});
  if constexpr (G > 2) fold_levels<G / 2, Count / 2>(v);
}
// v: kLanes<T> vectors (clobbered); returns their horizontal sums as one vector.
template <typename T>
inline Vec<T> hsum_lanes(Vec<T>* v) {
  constexpr int n = static_cast<int>(kLanes<T>);
  fold_levels<n, n>(v);
  return v[0];
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
    const U16 bits = __builtin_convertvector((rounded & ~is_nan) | ((U32{} + 0x7FC0u) & is_nan), U16);
    std::memcpy(p, &bits, sizeof(bits));
  } else {
    for (int64_t i = 0; i < kLanes<T>; ++i) p[i] = static_cast<O>(v[i]);
  }
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu
}  // namespace sparsemask
