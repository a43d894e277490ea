// Layout transposes of the CPU kernels: channels to the innermost dimension and back
// (NCHW <-> NHWC), in 16x16 register tiles where the ISA level has them (AVX-512 level:
// zmm for 32-bit elements, ymm for 16-bit ones), element by element elsewhere. Bits are
// moved, never converted. TensorIterator's strided copy does the same job at a fraction of
// the bandwidth (a transposing copy_ of a 33 MB tensor: ~6x a memcpy, measured 2026-12-02).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simd.h"

#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
#include <immintrin.h>
#endif

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {  // one per ISA level (isa.h)

#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
// dst[j * dst_stride + i] = src[i * src_stride + j] for a 16x16 float block.
inline void transpose16x16_f32(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * dst_stride, r[i]);
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for a 16x16 block of 16-bit elements.
inline void transpose16x16_u16(const uint16_t* src, int64_t src_stride, uint16_t* dst, int64_t dst_stride) {
  __m256i r[16], a[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i * src_stride));
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm256_unpacklo_epi16(r[i], r[i + 1]);
    a[i + 1] = _mm256_unpackhi_epi16(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm256_unpacklo_epi32(a[i], a[i + 2]);
    r[i + 1] = _mm256_unpackhi_epi32(a[i], a[i + 2]);
    r[i + 2] = _mm256_unpacklo_epi32(a[i + 1], a[i + 3]);
    r[i + 3] = _mm256_unpackhi_epi32(a[i + 1], a[i + 3]);
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      a[h + 2 * i] = _mm256_unpacklo_epi64(r[h + i], r[h + i + 4]);
      a[h + 2 * i + 1] = _mm256_unpackhi_epi64(r[h + i], r[h + i + 4]);
    }
  for (int k = 0; k < 8; ++k) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k * dst_stride), _mm256_permute2x128_si256(a[k], a[8 + k], 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (k + 8) * dst_stride),
                        _mm256_permute2x128_si256(a[k], a[8 + k], 0x31));
  }
}
#endif

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols; U is a 2-, 4- or
// 8-byte element (its bits are copied).
template <typename U>
inline void transpose_tile(const U* src, int64_t src_stride, U* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
  if (rows == 16 && cols == 16) {
    if constexpr (sizeof(U) == 4) {
      return transpose16x16_f32(reinterpret_cast<const float*>(src), src_stride, reinterpret_cast<float*>(dst),
                                dst_stride);
    } else if constexpr (sizeof(U) == 2) {
      return transpose16x16_u16(reinterpret_cast<const uint16_t*>(src), src_stride,
                                reinterpret_cast<uint16_t*>(dst), dst_stride);
    }
  }
#endif
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols, in 16x16 tiles.
// Tiles down a column of tiles first (i0 inner): the 16 dst rows of one tile column are
// then written whole one after the other — with 16-bit elements a tile writes half of a
// 64-byte line per dst row, and going across instead left every line half written until
// the next pass came back to it (NCHW bf16 grad_input, 64->64@32 N=128: +8%).
template <typename U>
inline void transpose(const U* src, int64_t src_stride, U* dst, int64_t dst_stride, int64_t rows, int64_t cols) {
  for (int64_t j0 = 0; j0 < cols; j0 += 16)
    for (int64_t i0 = 0; i0 < rows; i0 += 16)
      transpose_tile(src + i0 * src_stride + j0, src_stride, dst + j0 * dst_stride + i0, dst_stride,
                     std::min<int64_t>(16, rows - i0), std::min<int64_t>(16, cols - j0));
}

// The unsigned integer type of an element size: what the transposes move.
template <size_t Bytes>
using Bits = std::conditional_t<Bytes == 2, uint16_t, std::conditional_t<Bytes == 4, uint32_t, uint64_t>>;

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu
}  // namespace sparsemask
