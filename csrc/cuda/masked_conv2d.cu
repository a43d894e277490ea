// CUDA kernels of sparsemask::masked_conv2d: forward, grad_input, grad_weight (+ grad_bias).
//
// Only kept outputs are computed. The mask is shared by the whole batch, so at an output
// position q the kept channels C_q (the plan's pos_ch[q, :pos_count[q]]) form a small dense
// GEMM with the batch as its M side:
//   forward      out[n, C_q, q] = patch_q[n, :] . W[C_q, :]          one block per (q, image tile)
//   grad_input   gx[n, :, p]    = sum over taps landing p on q of go[n, C_q, q] . W[C_q, :, tap]
//                                 one block per (input position, image tile); each element of
//                                 grad_input written by exactly one thread, no atomics
//   grad_weight  gW[C_q, :]    += go[n, C_q, q]^T . patch_q[n, :]    one block per (q, K tile),
//                                 reduced over the batch in the block, added atomically into a
//                                 float32 (float64) buffer; grad_bias rides along.
// The reduction index k of a patch runs over (ky, kx, c_in) with c_in fastest, so channels_last
// inputs (stride 1 over channels) give coalesced patch loads; every layout works via strides.
//
// Two implementations of each kernel:
//   * scalar: 32x32 shared-memory tiles, FMA in the accumulation type (float for
//     half/bfloat16/float, double for double). Every dtype; the reference path.
//   * mma: half/bfloat16 operands on the tensor cores (wmma 16x16x16, float accumulators),
//     same blocking, used for half/bfloat16 unless SPARSEMASK_CUDA_MMA=0 (which selects the
//     scalar kernels, e.g. to tell a tensor-core bug from a plan bug).
// 64-bit indexing of images and tensors; 32-bit offsets inside one image, filter or output
// plane (checked on the host, make_geometry); launches on the current stream.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../checks.h"
#include "../dense_fallback.h"
#include "../plan.h"

namespace sparsemask {
namespace {

constexpr int kTile = 32;                  // images, channels and patch elements per tile
constexpr int kThreads = 256;              // 8 warps
constexpr int kRows = kThreads / kTile;    // 8: each thread owns kTile / kRows = 4 outputs
constexpr int kPerThread = kTile / kRows;  // 4
// Blocks per SM the kernels are compiled for (__launch_bounds__'s second argument): a
// register budget of 65536 / (threads * 4) per thread (64 for 256 threads, 128 for 128);
// double accumulators get two blocks (128). Without it ptxas picked a higher occupancy for
// some kernels and spilled registers to reach it (compile report).
constexpr int kMinBlocks = 4;
template <typename Acc>
constexpr int kScalarMinBlocks = sizeof(Acc) == 8 ? 2 : kMinBlocks;

// Sizes, convolution parameters and element strides, passed by value to every kernel.
struct Geometry {
  int64_t N, C, H, W;  // input
  int64_t K, Ho, Wo;   // output channels and size
  int64_t kh, kw, KT;  // kernel; KT = kh * kw * C patch elements
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t x[4], w[4], o[4];  // strides of input, weight, output (or grad_output)
};

// Patch element k of output position (oy, ox) as an offset inside one image; -1 when it is
// padding. 32-bit arithmetic (the host checks that an image, a filter and the output plane
// have fewer than 2^31 elements: make_geometry): 64-bit division and modulo cost ~70
// instructions each. The kernels call it once per patch element of a K tile, one thread per
// element, and the staging loops read the offsets from shared memory, so none of this runs
// per staged element.
// The output coordinate whose tap reads input coordinate `t` = in + pad - tap * dilation, or -1
// where stride skips it or it falls outside [0, extent): grad_input's gather over taps.
__device__ __forceinline__ int tap_output(int t, int stride, int extent) {
  return (t < 0 || t % stride != 0 || t / stride >= extent) ? -1 : t / stride;
}

// grad_input's walk over the kernel taps of input pixel (iy, ix): calls
// tap(ky, kx, oy, ox, q) for each tap that lands on output position q = oy * Wo + ox and
// skips the others. Every thread of a block walks the same taps (the pixel is the block's),
// so `tap` may __syncthreads().
template <typename Tap>
__device__ __forceinline__ void for_each_landing_tap(const Geometry& g, int iy, int ix, Tap&& tap) {
  const int sh = static_cast<int>(g.sh), sw = static_cast<int>(g.sw), Wo = static_cast<int>(g.Wo);
  for (int ky = 0; ky < static_cast<int>(g.kh); ++ky) {
    const int oy = tap_output(iy + static_cast<int>(g.ph) - ky * static_cast<int>(g.dh), sh, static_cast<int>(g.Ho));
    if (oy < 0) continue;
    for (int kx = 0; kx < static_cast<int>(g.kw); ++kx) {
      const int ox = tap_output(ix + static_cast<int>(g.pw) - kx * static_cast<int>(g.dw), sw, Wo);
      if (ox >= 0) tap(ky, kx, oy, ox, oy * Wo + ox);
    }
  }
}

__device__ __forceinline__ int32_t patch_offset(const Geometry& g, int k, int oy, int ox) {
  const int C = static_cast<int>(g.C), kw = static_cast<int>(g.kw);
  const int tap = k / C, c = k - tap * C;
  const int ky = tap / kw, kx = tap - ky * kw;
  const int iy = oy * static_cast<int>(g.sh) - static_cast<int>(g.ph) + ky * static_cast<int>(g.dh);
  const int ix = ox * static_cast<int>(g.sw) - static_cast<int>(g.pw) + kx * static_cast<int>(g.dw);
  if (iy < 0 || iy >= static_cast<int>(g.H) || ix < 0 || ix >= static_cast<int>(g.W)) return -1;
  return c * static_cast<int>(g.x[1]) + iy * static_cast<int>(g.x[2]) + ix * static_cast<int>(g.x[3]);
}

// Patch element k as a weight offset within one output channel's filter (32-bit, as above).
__device__ __forceinline__ int32_t weight_offset(const Geometry& g, int k) {
  const int C = static_cast<int>(g.C), kw = static_cast<int>(g.kw);
  const int tap = k / C, c = k - tap * C;
  const int ky = tap / kw, kx = tap - ky * kw;
  return c * static_cast<int>(g.w[1]) + ky * static_cast<int>(g.w[2]) + kx * static_cast<int>(g.w[3]);
}

// Offsets of the K tile's patch elements k0 .. k0 + n - 1 (input, weight), -1 past KT or for
// padding; threads 0 .. n - 1 each compute one. The caller synchronises before reading.
__device__ __forceinline__ void stage_offsets(const Geometry& g, int64_t k0, int n, int oy, int ox, int32_t* xoff,
                                              int32_t* woff) {
  const int t = threadIdx.x;
  if (t < n) {
    const int64_t k = k0 + t;
    const bool ok = k < g.KT;
    xoff[t] = ok ? patch_offset(g, static_cast<int>(k), oy, ox) : -1;
    if (woff != nullptr) woff[t] = ok ? weight_offset(g, static_cast<int>(k)) : -1;
  }
}

// ---------------------------------------------------------------------------------------
// Forward. Block (q, image tile); thread (tn, tj) owns images n0 + tn and tile channels
// tj + kRows * r. The patch tile is stored [k][n] (consecutive threads read consecutive n),
// the weight tile [k][j] (a warp shares tj, so those reads broadcast).
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads, kScalarMinBlocks<Acc>) forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                           const T* __restrict__ bias, T* __restrict__ out,
                                                           const int32_t* __restrict__ pos_count,
                                                           const int32_t* __restrict__ pos_ch, Geometry g) {
  const int q = blockIdx.x;
  const int cnt = pos_count[q];
  if (cnt == 0) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int Wo = static_cast<int>(g.Wo), oy = q / Wo, ox = q - oy * Wo;
  __shared__ Acc xs[kTile][kTile + 1];
  __shared__ Acc ws[kTile][kTile + 1];
  __shared__ int32_t chs[kTile];
  __shared__ int32_t xoff[kTile], woff[kTile];  // the K tile's patch offsets (stage_offsets)
  const int tid = threadIdx.x, tn = tid % kTile, tj = tid / kTile;
  for (int j0 = 0; j0 < cnt; j0 += kTile) {
    __syncthreads();  // the previous tile's readers of chs are done
    if (tid < kTile) chs[tid] = j0 + tid < cnt ? pos_ch[q * g.K + j0 + tid] : -1;
    __syncthreads();  // chs is read below even when the reduction is empty (C_in == 0)
    Acc acc[kPerThread];
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) acc[r] = Acc(0);
    for (int64_t k0 = 0; k0 < g.KT; k0 += kTile) {
      __syncthreads();
      stage_offsets(g, k0, kTile, oy, ox, xoff, woff);
      __syncthreads();
      for (int e = tid; e < kTile * kTile; e += kThreads) {
        const int kk = e % kTile, nn = e / kTile;
        const int64_t n = n0 + nn;
        const int32_t off = xoff[kk];
        xs[kk][nn] = off >= 0 && n < g.N ? static_cast<Acc>(x[n * g.x[0] + off]) : Acc(0);
      }
      for (int e = tid; e < kTile * kTile; e += kThreads) {
        const int kk = e % kTile, jj = e / kTile;
        const int32_t ch = chs[jj], off = woff[kk];
        ws[kk][jj] = off >= 0 && ch >= 0 ? static_cast<Acc>(w[ch * g.w[0] + off]) : Acc(0);
      }
      __syncthreads();
#pragma unroll 8
      for (int kk = 0; kk < kTile; ++kk) {
        const Acc xv = xs[kk][tn];
#pragma unroll
        for (int r = 0; r < kPerThread; ++r) acc[r] += xv * ws[kk][tj + kRows * r];
      }
    }
    const int64_t n = n0 + tn;
    if (n < g.N) {
#pragma unroll
      for (int r = 0; r < kPerThread; ++r) {
        const int32_t ch = chs[tj + kRows * r];
        if (ch < 0) continue;
        const Acc b = bias != nullptr ? static_cast<Acc>(bias[ch]) : Acc(0);
        out[n * g.o[0] + ch * g.o[1] + oy * g.o[2] + ox * g.o[3]] = static_cast<T>(acc[r] + b);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// grad_input. Block (input position p, image tile); thread (tn, tc) owns images n0 + tn and
// input channels c0 + tc + kRows * r. For every tap that lands p on an output position q,
// the kept channels of q are walked in tiles: gs [j][n] = grad_output, ws [j][c] = weight.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads, kScalarMinBlocks<Acc>) grad_input_kernel(const T* __restrict__ go, const T* __restrict__ w,
                                                              T* __restrict__ gx, const int32_t* __restrict__ pos_count,
                                                              const int32_t* __restrict__ pos_ch, Geometry g,
                                                              int64_t gx_s0, int64_t gx_s1, int64_t gx_s2,
                                                              int64_t gx_s3) {
  const int p = blockIdx.x;  // 32-bit position math (make_geometry checks the sizes)
  const int W = static_cast<int>(g.W), iy = p / W, ix = p - iy * W;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTile;
  __shared__ Acc gs[kTile][kTile + 1];
  __shared__ Acc ws[kTile][kTile + 1];
  __shared__ int32_t chs[kTile];
  const int tid = threadIdx.x, tn = tid % kTile, tc = tid / kTile;
  const int64_t n = n0 + tn;
  for (int64_t c0 = 0; c0 < g.C; c0 += kTile) {
    Acc acc[kPerThread];
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) acc[r] = Acc(0);
    for_each_landing_tap(g, iy, ix, [&](int ky, int kx, int oy, int ox, int q) {
      const int cnt = pos_count[q];
      for (int j0 = 0; j0 < cnt; j0 += kTile) {
        __syncthreads();  // previous readers of chs, gs, ws are done
        if (tid < kTile) chs[tid] = j0 + tid < cnt ? pos_ch[q * g.K + j0 + tid] : -1;
        __syncthreads();
        for (int e = tid; e < kTile * kTile; e += kThreads) {
          const int jj = e % kTile, nn = e / kTile;
          const int32_t ch = chs[jj];
          const int64_t ni = n0 + nn;
          gs[jj][nn] = ch >= 0 && ni < g.N
                           ? static_cast<Acc>(go[ni * g.o[0] + ch * g.o[1] + oy * g.o[2] + ox * g.o[3]])
                           : Acc(0);
        }
        for (int e = tid; e < kTile * kTile; e += kThreads) {
          const int cc = e % kTile, jj = e / kTile;
          const int32_t ch = chs[jj];
          const int64_t c = c0 + cc;
          ws[jj][cc] = ch >= 0 && c < g.C
                           ? static_cast<Acc>(w[ch * g.w[0] + c * g.w[1] + ky * g.w[2] + kx * g.w[3]])
                           : Acc(0);
        }
        __syncthreads();
#pragma unroll 8
        for (int jj = 0; jj < kTile; ++jj) {
          const Acc gv = gs[jj][tn];
#pragma unroll
          for (int r = 0; r < kPerThread; ++r) acc[r] += gv * ws[jj][tc + kRows * r];
        }
      }
    });
    if (n < g.N) {
#pragma unroll
      for (int r = 0; r < kPerThread; ++r) {
        const int64_t c = c0 + tc + kRows * r;
        if (c < g.C) gx[n * gx_s0 + c * gx_s1 + iy * gx_s2 + ix * gx_s3] = static_cast<T>(acc[r]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// grad_weight (+ grad_bias). Block (q, K tile); thread (tk, tj) owns patch element k0 + tk
// and tile channels tj + kRows * r. Tiles over the batch: gs [n][j] = grad_output,
// xs [n][k] = patch. Results go to gw [K, KT] (and gb [K]) with atomicAdd.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads, kScalarMinBlocks<Acc>) grad_weight_kernel(const T* __restrict__ go, const T* __restrict__ x,
                                                               Acc* __restrict__ gw, Acc* __restrict__ gb,
                                                               const int32_t* __restrict__ pos_count,
                                                               const int32_t* __restrict__ pos_ch, Geometry g,
                                                               bool need_weight) {
  const int q = blockIdx.x;
  const int cnt = pos_count[q];
  if (cnt == 0) return;
  const int64_t k0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int Wo = static_cast<int>(g.Wo), oy = q / Wo, ox = q - oy * Wo;
  const bool do_bias = gb != nullptr && blockIdx.y == 0;
  __shared__ Acc gs[kTile][kTile + 1];
  __shared__ Acc xs[kTile][kTile + 1];
  __shared__ int32_t xoff[kTile];  // input offset of patch element k0 + kk, -1 for padding
  __shared__ int32_t chs[kTile];
  const int tid = threadIdx.x, tk = tid % kTile, tj = tid / kTile;
  stage_offsets(g, k0, kTile, static_cast<int>(oy), static_cast<int>(ox), xoff, nullptr);  // read after the loop's sync
  for (int j0 = 0; j0 < cnt; j0 += kTile) {
    __syncthreads();
    if (tid < kTile) chs[tid] = j0 + tid < cnt ? pos_ch[q * g.K + j0 + tid] : -1;
    Acc acc[kPerThread], bsum[kPerThread];
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) acc[r] = bsum[r] = Acc(0);
    for (int64_t n0 = 0; n0 < g.N; n0 += kTile) {
      __syncthreads();
      for (int e = tid; e < kTile * kTile; e += kThreads) {
        const int jj = e % kTile, nn = e / kTile;
        const int32_t ch = chs[jj];
        const int64_t n = n0 + nn;
        gs[nn][jj] = ch >= 0 && n < g.N ? static_cast<Acc>(go[n * g.o[0] + ch * g.o[1] + oy * g.o[2] + ox * g.o[3]])
                                        : Acc(0);
      }
      if (need_weight) {
        for (int e = tid; e < kTile * kTile; e += kThreads) {
          const int kk = e % kTile, nn = e / kTile;
          const int64_t n = n0 + nn;
          const int32_t off = xoff[kk];
          xs[nn][kk] = off >= 0 && n < g.N ? static_cast<Acc>(x[n * g.x[0] + off]) : Acc(0);
        }
      }
      __syncthreads();
      if (need_weight) {
#pragma unroll 8
        for (int nn = 0; nn < kTile; ++nn) {
          const Acc xv = xs[nn][tk];
#pragma unroll
          for (int r = 0; r < kPerThread; ++r) acc[r] += gs[nn][tj + kRows * r] * xv;
        }
      }
      if (do_bias && tk == 0) {
        for (int nn = 0; nn < kTile; ++nn)
#pragma unroll
          for (int r = 0; r < kPerThread; ++r) bsum[r] += gs[nn][tj + kRows * r];
      }
    }
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) {
      const int32_t ch = chs[tj + kRows * r];
      if (ch < 0) continue;
      if (need_weight && k0 + tk < g.KT) atomicAdd(gw + ch * g.KT + k0 + tk, acc[r]);
      if (do_bias && tk == 0) atomicAdd(gb + ch, bsum[r]);
    }
  }
}


// ---------------------------------------------------------------------------------------
// Tensor-core kernels (half, bfloat16). Operands are staged in shared memory as raw 16-bit
// patterns (zero bits = 0.0 for both types), rows padded by 8 elements (16 bytes) against
// bank conflicts; every fragment pointer is 32-byte aligned and every ldm a multiple of 8.
namespace wmma = nvcuda::wmma;

template <typename T>
struct WmmaType;
template <>
struct WmmaType<at::Half> {
  using type = __half;
};
template <>
struct WmmaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

constexpr int kMmaThreads = 128;  // 4 warps
constexpr int kPadH = 8;          // 16-bit elements of padding per shared row
constexpr int kPadF = 4;          // float elements of padding per shared row

// Widest layer (output channels) whose forward blocks assemble whole output rows in shared
// memory and write them once, zeros included (16 KiB of rows for 64 images).
constexpr int kRowChannels = 128;

// Forward on tensor cores. Block (q, 64 images); warp w owns images 16w..16w+15 and the two
// 16-channel halves of a 32-channel tile: C[64 x 32] = A[64 x K] (patch) * B[K x 32] (W^T).
// kWholeRows (C_out <= kRowChannels): the block writes its output rows [64 images, C_out]
// once, zeros included, from shared memory with coalesced row stores (consecutive threads,
// consecutive channels: full sectors for channels_last), so the output needs no zero-fill
// pass and no scattered 2-byte stores. Otherwise kept neurons are stored into a zero-filled
// output.
template <typename T, bool kWholeRows>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks) forward_mma_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                                  const T* __restrict__ bias, T* __restrict__ out,
                                                                  const int32_t* __restrict__ pos_count,
                                                                  const int32_t* __restrict__ pos_ch, Geometry g) {
  using WT = typename WmmaType<T>::type;
  constexpr int BN = 64, BJ = 32, BK = 32;
  constexpr int kRowN = kWholeRows ? BN : 1, kRowC = kWholeRows ? kRowChannels : 1;
  const int q = blockIdx.x;
  const int cnt = pos_count[q];
  if (!kWholeRows && cnt == 0) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const int Wo = static_cast<int>(g.Wo), oy = q / Wo, ox = q - oy * Wo;
  __shared__ __align__(32) uint16_t a_s[BN][BK + kPadH];  // patch [n][k]
  __shared__ __align__(32) uint16_t b_s[BJ][BK + kPadH];  // weight [j][k]: B in column-major
  __shared__ __align__(32) float c_s[BN][BJ + kPadF];
  __shared__ __align__(16) uint16_t row_s[kRowN][kRowC];  // kWholeRows: output rows [n][c_out], bits
  __shared__ int32_t chs[BJ];
  __shared__ int32_t xoff[BK], woff[BK];  // the K tile's patch offsets (stage_offsets)
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if constexpr (kWholeRows) {
    for (int e = tid; e < BN * kRowChannels; e += kMmaThreads) row_s[e / kRowChannels][e % kRowChannels] = 0;
  }
  for (int j0 = 0; j0 < cnt; j0 += BJ) {
    __syncthreads();
    if (tid < BJ) chs[tid] = j0 + tid < cnt ? pos_ch[q * g.K + j0 + tid] : -1;
    __syncthreads();  // chs is read below even when the reduction is empty (C_in == 0)
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
    wmma::fill_fragment(acc[0], 0.0f);
    wmma::fill_fragment(acc[1], 0.0f);
    for (int64_t k0 = 0; k0 < g.KT; k0 += BK) {
      __syncthreads();
      stage_offsets(g, k0, BK, oy, ox, xoff, woff);
      __syncthreads();
      for (int e = tid; e < BN * BK; e += kMmaThreads) {
        const int kk = e % BK, nn = e / BK;
        const int64_t n = n0 + nn;
        const int32_t off = xoff[kk];
        a_s[nn][kk] = off >= 0 && n < g.N ? x[n * g.x[0] + off].x : uint16_t(0);
      }
      for (int e = tid; e < BJ * BK; e += kMmaThreads) {
        const int kk = e % BK, jj = e / BK;
        const int32_t ch = chs[jj], off = woff[kk];
        b_s[jj][kk] = off >= 0 && ch >= 0 ? w[ch * g.w[0] + off].x : uint16_t(0);
      }
      __syncthreads();
#pragma unroll
      for (int ks = 0; ks < BK; ks += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, WT, wmma::row_major> af;
        wmma::load_matrix_sync(af, reinterpret_cast<const WT*>(&a_s[warp * 16][ks]), BK + kPadH);
#pragma unroll
        for (int f = 0; f < 2; ++f) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, WT, wmma::col_major> bf;
          wmma::load_matrix_sync(bf, reinterpret_cast<const WT*>(&b_s[f * 16][ks]), BK + kPadH);
          wmma::mma_sync(acc[f], af, bf, acc[f]);
        }
      }
    }
    wmma::store_matrix_sync(&c_s[warp * 16][0], acc[0], BJ + kPadF, wmma::mem_row_major);
    wmma::store_matrix_sync(&c_s[warp * 16][16], acc[1], BJ + kPadF, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < BN * BJ; e += kMmaThreads) {
      const int jj = e % BJ, nn = e / BJ;  // consecutive threads: consecutive kept channels
      const int32_t ch = chs[jj];
      const int64_t n = n0 + nn;
      if (ch < 0 || n >= g.N) continue;
      const float b = bias != nullptr ? static_cast<float>(bias[ch]) : 0.0f;
      if constexpr (kWholeRows) {
        row_s[nn][ch] = static_cast<T>(c_s[nn][jj] + b).x;
      } else {
        out[n * g.o[0] + ch * g.o[1] + oy * g.o[2] + ox * g.o[3]] = static_cast<T>(c_s[nn][jj] + b);
      }
    }
  }
  if constexpr (kWholeRows) {
    __syncthreads();  // every tile's row_s writes (and the zeroing) are done
    const int K = static_cast<int>(g.K);
    const int64_t pos = oy * g.o[2] + ox * g.o[3];
    for (int nn = warp; nn < BN; nn += kMmaThreads / 32) {
      const int64_t n = n0 + nn;
      if (n >= g.N) break;
      T* row = out + n * g.o[0] + pos;
      for (int c = lane; c < K; c += 32) row[c * g.o[1]] = T(row_s[nn][c], T::from_bits());
    }
  }
}

// grad_input on tensor cores. Block (input position p, 64 images); for each 32-channel tile
// of C_in: C[64 x 32] = sum over taps and 16-channel chunks of kept outputs of
// A[64 x 16] (grad_output) * B[16 x 32] (weight at the tap).
template <typename T>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks) grad_input_mma_kernel(
    const T* __restrict__ go, const T* __restrict__ w, T* __restrict__ gx, const int32_t* __restrict__ pos_count,
    const int32_t* __restrict__ pos_ch, Geometry g, int64_t gx_s0, int64_t gx_s1, int64_t gx_s2, int64_t gx_s3) {
  using WT = typename WmmaType<T>::type;
  constexpr int BN = 64, BC = 32, BJ = 16;
  const int p = blockIdx.x;  // 32-bit position math (make_geometry checks the sizes)
  const int W = static_cast<int>(g.W), iy = p / W, ix = p - iy * W;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  __shared__ __align__(32) uint16_t a_s[BN][BJ + kPadH];  // grad_output [n][j]
  __shared__ __align__(32) uint16_t b_s[BJ][BC + kPadH];  // weight [j][c]: B in row-major
  __shared__ __align__(32) float c_s[BN][BC + kPadF];
  __shared__ int32_t chs[BJ];
  const int tid = threadIdx.x, warp = tid / 32;
  for (int64_t c0 = 0; c0 < g.C; c0 += BC) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
    wmma::fill_fragment(acc[0], 0.0f);
    wmma::fill_fragment(acc[1], 0.0f);
    for_each_landing_tap(g, iy, ix, [&](int ky, int kx, int oy, int ox, int q) {
      const int cnt = pos_count[q];
      for (int j0 = 0; j0 < cnt; j0 += BJ) {
        __syncthreads();
        if (tid < BJ) chs[tid] = j0 + tid < cnt ? pos_ch[q * g.K + j0 + tid] : -1;
        __syncthreads();
        for (int e = tid; e < BN * BJ; e += kMmaThreads) {
          const int jj = e % BJ, nn = e / BJ;
          const int32_t ch = chs[jj];
          const int64_t n = n0 + nn;
          a_s[nn][jj] = ch >= 0 && n < g.N ? go[n * g.o[0] + ch * g.o[1] + oy * g.o[2] + ox * g.o[3]].x
                                           : uint16_t(0);
        }
        for (int e = tid; e < BJ * BC; e += kMmaThreads) {
          const int cc = e % BC, jj = e / BC;
          const int32_t ch = chs[jj];
          const int64_t c = c0 + cc;
          b_s[jj][cc] = ch >= 0 && c < g.C ? w[ch * g.w[0] + c * g.w[1] + ky * g.w[2] + kx * g.w[3]].x
                                           : uint16_t(0);
        }
        __syncthreads();
        wmma::fragment<wmma::matrix_a, 16, 16, 16, WT, wmma::row_major> af;
        wmma::load_matrix_sync(af, reinterpret_cast<const WT*>(&a_s[warp * 16][0]), BJ + kPadH);
#pragma unroll
        for (int f = 0; f < 2; ++f) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, WT, wmma::row_major> bf;
          wmma::load_matrix_sync(bf, reinterpret_cast<const WT*>(&b_s[0][f * 16]), BC + kPadH);
          wmma::mma_sync(acc[f], af, bf, acc[f]);
        }
      }
    });
    wmma::store_matrix_sync(&c_s[warp * 16][0], acc[0], BC + kPadF, wmma::mem_row_major);
    wmma::store_matrix_sync(&c_s[warp * 16][16], acc[1], BC + kPadF, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < BN * BC; e += kMmaThreads) {
      const int cc = e % BC, nn = e / BC;
      const int64_t n = n0 + nn, c = c0 + cc;
      if (n < g.N && c < g.C) gx[n * gx_s0 + c * gx_s1 + iy * gx_s2 + ix * gx_s3] = static_cast<T>(c_s[nn][cc]);
    }
    __syncthreads();  // c_s is rewritten by the next channel tile even when it has no taps
  }
}

// grad_weight (+ grad_bias) on tensor cores. Block (q, 64 patch elements); warp w owns patch
// elements 16w..16w+15 and both 16-channel halves of a 32-channel tile:
// C[32 x 64] = sum over 32-image chunks of A[32 x 32] (grad_output^T) * B[32 x 64] (patch).
template <typename T>
__global__ void __launch_bounds__(kMmaThreads, kMinBlocks) grad_weight_mma_kernel(
    const T* __restrict__ go, const T* __restrict__ x, float* __restrict__ gw, float* __restrict__ gb,
    const int32_t* __restrict__ pos_count, const int32_t* __restrict__ pos_ch, Geometry g, bool need_weight) {
  using WT = typename WmmaType<T>::type;
  constexpr int BJ = 32, BK = 64, BN = 32;
  const int q = blockIdx.x;
  const int cnt = pos_count[q];
  if (cnt == 0) return;
  const int64_t k0 = static_cast<int64_t>(blockIdx.y) * BK;
  const int Wo = static_cast<int>(g.Wo), oy = q / Wo, ox = q - oy * Wo;
  const bool do_bias = gb != nullptr && blockIdx.y == 0;
  __shared__ __align__(32) uint16_t a_s[BJ][BN + kPadH];  // grad_output [j][n]
  __shared__ __align__(32) uint16_t b_s[BN][BK + kPadH];  // patch [n][k]
  __shared__ __align__(32) float c_s[BJ][BK + kPadF];
  __shared__ int32_t xoff[BK];  // input offset of patch element k0 + kk, -1 for padding
  __shared__ int32_t chs[BJ];
  const int tid = threadIdx.x, warp = tid / 32;
  stage_offsets(g, k0, BK, static_cast<int>(oy), static_cast<int>(ox), xoff, nullptr);  // read after the loop's sync
  for (int j0 = 0; j0 < cnt; j0 += BJ) {
    __syncthreads();
    if (tid < BJ) chs[tid] = j0 + tid < cnt ? pos_ch[q * g.K + j0 + tid] : -1;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
    wmma::fill_fragment(acc[0], 0.0f);
    wmma::fill_fragment(acc[1], 0.0f);
    float bsum = 0.0f;  // thread tid < BJ: grad_bias of tile channel tid
    for (int64_t n0 = 0; n0 < g.N; n0 += BN) {
      __syncthreads();
      for (int e = tid; e < BJ * BN; e += kMmaThreads) {
        const int jj = e % BJ, nn = e / BJ;
        const int32_t ch = chs[jj];
        const int64_t n = n0 + nn;
        a_s[jj][nn] = ch >= 0 && n < g.N ? go[n * g.o[0] + ch * g.o[1] + oy * g.o[2] + ox * g.o[3]].x
                                         : uint16_t(0);
      }
      if (need_weight) {
        for (int e = tid; e < BN * BK; e += kMmaThreads) {
          const int kk = e % BK, nn = e / BK;
          const int64_t n = n0 + nn;
          const int32_t off = xoff[kk];
          b_s[nn][kk] = off >= 0 && n < g.N ? x[n * g.x[0] + off].x : uint16_t(0);
        }
      }
      __syncthreads();
      if (need_weight) {
#pragma unroll
        for (int ks = 0; ks < BN; ks += 16) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, WT, wmma::row_major> bf;
          wmma::load_matrix_sync(bf, reinterpret_cast<const WT*>(&b_s[ks][warp * 16]), BK + kPadH);
#pragma unroll
          for (int f = 0; f < 2; ++f) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, WT, wmma::row_major> af;
            wmma::load_matrix_sync(af, reinterpret_cast<const WT*>(&a_s[f * 16][ks]), BN + kPadH);
            wmma::mma_sync(acc[f], af, bf, acc[f]);
          }
        }
      }
      if (do_bias && tid < BJ && chs[tid] >= 0) {
        for (int nn = 0; nn < BN; ++nn) bsum += static_cast<float>(T(a_s[tid][nn], T::from_bits()));
      }
    }
    if (need_weight) {
      wmma::store_matrix_sync(&c_s[0][warp * 16], acc[0], BK + kPadF, wmma::mem_row_major);
      wmma::store_matrix_sync(&c_s[16][warp * 16], acc[1], BK + kPadF, wmma::mem_row_major);
    }
    __syncthreads();
    if (need_weight) {
      for (int e = tid; e < BJ * BK; e += kMmaThreads) {
        const int kk = e % BK, jj = e / BK;
        const int32_t ch = chs[jj];
        if (ch >= 0 && k0 + kk < g.KT) atomicAdd(gw + ch * g.KT + k0 + kk, c_s[jj][kk]);
      }
    }
    if (do_bias && tid < BJ && chs[tid] >= 0) atomicAdd(gb + chs[tid], bsum);
  }
}

// CUDA grids allow 65535 blocks in y.
void check_grid_y(int64_t blocks, const char* what) {
  TORCH_CHECK(blocks <= 65535, "masked_conv2d (CUDA kernel): too many ", what, " tiles (", blocks,
              " > 65535); split the batch");
}

// Whether half/bfloat16 use the tensor-core kernels (SPARSEMASK_CUDA_MMA=0 turns them off).
bool use_mma() {
  static const bool on = [] {
    const char* v = std::getenv("SPARSEMASK_CUDA_MMA");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return on;
}

template <typename T>
constexpr bool kHalfType = std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>;

// Whether the forward kernel that will run writes every output element itself (the
// tensor-core kernel with whole rows); else the output is zero-filled first.
bool forward_writes_every_output(at::ScalarType dtype, int64_t c_out) {
  return use_mma() && (dtype == at::kHalf || dtype == at::kBFloat16) && c_out <= kRowChannels;
}

// Launchers that exist for every dtype but launch only for half/bfloat16 (inside a function
// template `if constexpr` drops the other branch, so no tensor-core kernel is instantiated
// for float/double). They return whether they launched.
template <typename T>
bool try_forward_mma(const T* x, const T* w, const T* bias, T* out, const int32_t* pos_count, const int32_t* pos_ch,
                     const Geometry& g, cudaStream_t stream) {
  if constexpr (kHalfType<T>) {
    if (!use_mma()) return false;
    const int64_t n_tiles = (g.N + 63) / 64;
    check_grid_y(n_tiles, "image");
    const dim3 grid(g.Ho * g.Wo, n_tiles);
    if (g.K <= kRowChannels) {
      forward_mma_kernel<T, true><<<grid, kMmaThreads, 0, stream>>>(x, w, bias, out, pos_count, pos_ch, g);
    } else {
      forward_mma_kernel<T, false><<<grid, kMmaThreads, 0, stream>>>(x, w, bias, out, pos_count, pos_ch, g);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  } else {
    return false;
  }
}

template <typename T>
bool try_grad_input_mma(const T* go, const T* w, T* gx, const int32_t* pos_count, const int32_t* pos_ch,
                        const Geometry& g, at::IntArrayRef gx_strides, cudaStream_t stream) {
  if constexpr (kHalfType<T>) {
    if (!use_mma()) return false;
    const int64_t n_tiles = (g.N + 63) / 64;
    check_grid_y(n_tiles, "image");
    grad_input_mma_kernel<T><<<dim3(g.H * g.W, n_tiles), kMmaThreads, 0, stream>>>(
        go, w, gx, pos_count, pos_ch, g, gx_strides[0], gx_strides[1], gx_strides[2], gx_strides[3]);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  } else {
    return false;
  }
}

template <typename T, typename Acc>
bool try_grad_weight_mma(const T* go, const T* x, Acc* gw, Acc* gb, const int32_t* pos_count,
                         const int32_t* pos_ch, const Geometry& g, bool need_weight, cudaStream_t stream) {
  if constexpr (kHalfType<T> && std::is_same_v<Acc, float>) {
    if (!use_mma()) return false;
    const int64_t k_tiles = need_weight ? (g.KT + 63) / 64 : 1;
    check_grid_y(k_tiles, "patch");
    grad_weight_mma_kernel<T><<<dim3(g.Ho * g.Wo, k_tiles), kMmaThreads, 0, stream>>>(go, x, gw, gb, pos_count,
                                                                                       pos_ch, g, need_weight);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  } else {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// Host side

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, const ConvParams& p, int64_t ho,
                       int64_t wo, const at::Tensor& out_like) {
  Geometry g;
  g.N = input.size(0);
  g.C = input.size(1);
  g.H = input.size(2);
  g.W = input.size(3);
  g.K = weight.size(0);
  g.Ho = ho;
  g.Wo = wo;
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.KT = g.kh * g.kw * g.C;
  g.sh = p.sh;
  g.sw = p.sw;
  g.ph = p.ph;
  g.pw = p.pw;
  g.dh = p.dh;
  g.dw = p.dw;
  for (int i = 0; i < 4; ++i) {
    g.x[i] = input.stride(i);
    g.w[i] = weight.stride(i);
    g.o[i] = out_like.stride(i);
  }
  // The kernels index inside an image, a filter and an output plane with 32-bit arithmetic
  // (patch_offset, weight_offset, the block's position); the image index stays 64-bit.
  constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(g.C * g.H * g.W <= kMax32 && g.KT <= kMax32 && g.Ho * g.Wo <= kMax32 && g.H <= kMax32 &&
                  g.W <= kMax32,
              "masked_conv2d (CUDA kernel): an image (C_in*H*W = ", g.C * g.H * g.W, "), a filter (", g.KT,
              ") or an output plane (", g.Ho * g.Wo, ") has 2^31 or more elements; not supported");
  return g;
}


struct Prepared {
  ConvParams p;
  int64_t ho, wo;
  std::shared_ptr<const MaskPlan> plan;
};

Prepared prepare_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      const at::Tensor& mask, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation) {
  TORCH_CHECK(input.is_cuda(), "masked_conv2d (CUDA kernel): input must be a CUDA tensor, got ", input.device());
  ConvParams p = check_params(stride, padding, dilation);
  auto [ho, wo] = check_masked_conv2d_args(input, weight, bias, mask, p);
  std::shared_ptr<const MaskPlan> plan = get_plan(mask);
  TORCH_CHECK(plan->pos_count.device() == input.device(), "masked_conv2d (CUDA kernel): the mask plan is on ",
              plan->pos_count.device(), " but input is on ", input.device());
  return {p, ho, wo, plan};
}

at::Tensor masked_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              const at::Tensor& mask, at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, double max_density) {
  c10::cuda::CUDAGuard guard(input.device());
  Prepared pr = prepare_cuda(input, weight, bias, mask, stride, padding, dilation);
  const at::MemoryFormat fmt = input.suggest_memory_format();
  if (use_dense(*pr.plan, max_density)) {
    return dense_forward(input, weight, bias, mask, stride, padding, dilation);
  }
  // The tensor-core kernel for C_out <= kRowChannels writes every output element once, zeros
  // included; the others never visit dropped neurons, so their output starts at zero.
  // at::zeros takes no memory_format: empty + zero_ keeps channels_last (as the fake kernel says).
  at::Tensor out = at::empty({input.size(0), weight.size(0), pr.ho, pr.wo}, input.options().memory_format(fmt));
  if (out.numel() == 0 || pr.plan->nnz == 0) return out.zero_();
  if (!forward_writes_every_output(input.scalar_type(), weight.size(0))) out.zero_();
  const int64_t q = pr.ho * pr.wo, n_tiles = (input.size(0) + kTile - 1) / kTile;
  check_grid_y(n_tiles, "image");
  // The kernels read patches as runs over C_in: channels_last operands make those runs
  // contiguous (a no-op for channels_last callers; otherwise one cheap layout pass).
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wt = weight.contiguous(at::MemoryFormat::ChannelsLast);
  Geometry g = make_geometry(x, wt, pr.p, pr.ho, pr.wo, out);
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "masked_conv2d_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const scalar_t* bias_ptr = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
    const int32_t* pos_count = pr.plan->pos_count.const_data_ptr<int32_t>();
    const int32_t* pos_ch = pr.plan->pos_ch.const_data_ptr<int32_t>();
    if (try_forward_mma<scalar_t>(x.const_data_ptr<scalar_t>(), wt.const_data_ptr<scalar_t>(), bias_ptr,
                                  out.mutable_data_ptr<scalar_t>(), pos_count, pos_ch, g, stream)) {
      return;
    }
    forward_kernel<scalar_t, Acc><<<dim3(q, n_tiles), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), wt.const_data_ptr<scalar_t>(), bias_ptr,
        out.mutable_data_ptr<scalar_t>(), pos_count, pos_ch, g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, double max_density,
    std::array<bool, 3> output_mask) {
  c10::cuda::CUDAGuard guard(input.device());
  Prepared pr = prepare_cuda(input, weight, std::nullopt, mask, stride, padding, dilation);
  check_grad_output(grad_output, input, weight, pr.ho, pr.wo);
  if (use_dense(*pr.plan, max_density))
    return dense_backward(grad_output, input, weight, mask, stride, padding, dilation, output_mask);
  if (input.numel() == 0 || pr.plan->nnz == 0) return zero_grads(input, weight, output_mask);
  const at::MemoryFormat fmt = input.suggest_memory_format();
  const auto [need_input, need_weight, need_bias] = output_mask;
  auto [grad_input, grad_weight, grad_bias] = empty_grads(input, weight);
  const int64_t n_tiles = (input.size(0) + kTile - 1) / kTile;
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor wt = weight.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor go = grad_output.contiguous(at::MemoryFormat::ChannelsLast);
  Geometry g = make_geometry(x, wt, pr.p, pr.ho, pr.wo, go);
  const int64_t q = pr.ho * pr.wo;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "masked_conv2d_backward_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const int32_t* pos_count = pr.plan->pos_count.const_data_ptr<int32_t>();
    const int32_t* pos_ch = pr.plan->pos_ch.const_data_ptr<int32_t>();
    if (need_input) {
      check_grid_y(n_tiles, "image");
      grad_input = at::empty_like(input, input.options().memory_format(fmt));
      if (!try_grad_input_mma<scalar_t>(go.const_data_ptr<scalar_t>(), wt.const_data_ptr<scalar_t>(),
                                        grad_input.mutable_data_ptr<scalar_t>(), pos_count, pos_ch, g,
                                        grad_input.strides(), stream)) {
        grad_input_kernel<scalar_t, Acc><<<dim3(g.H * g.W, n_tiles), kThreads, 0, stream>>>(
            go.const_data_ptr<scalar_t>(), wt.const_data_ptr<scalar_t>(),
            grad_input.mutable_data_ptr<scalar_t>(), pos_count, pos_ch, g, grad_input.stride(0),
            grad_input.stride(1), grad_input.stride(2), grad_input.stride(3));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    if (need_weight || need_bias) {
      const at::ScalarType acc_type = c10::CppTypeToScalarType<Acc>::value;
      at::Tensor gw = at::zeros({g.K, g.KT}, input.options().dtype(acc_type));
      at::Tensor gb = at::zeros({g.K}, input.options().dtype(acc_type));
      if (!try_grad_weight_mma<scalar_t, Acc>(go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                              gw.mutable_data_ptr<Acc>(), need_bias ? gb.mutable_data_ptr<Acc>() : nullptr,
                                              pos_count, pos_ch, g, need_weight, stream)) {
        const int64_t k_tiles = need_weight ? (g.KT + kTile - 1) / kTile : 1;
        check_grid_y(k_tiles, "patch");
        grad_weight_kernel<scalar_t, Acc><<<dim3(q, k_tiles), kThreads, 0, stream>>>(
            go.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), gw.mutable_data_ptr<Acc>(),
            need_bias ? gb.mutable_data_ptr<Acc>() : nullptr, pos_count, pos_ch, g, need_weight);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (need_weight) {
        // gw is [K, kh, kw, C] (patch order); the op returns [K, C, kh, kw] contiguous.
        grad_weight = gw.view({g.K, g.kh, g.kw, g.C}).permute({0, 3, 1, 2}).to(weight.scalar_type()).contiguous();
      }
      if (need_bias) grad_bias = gb.to(weight.scalar_type());
    }
  });
  return {grad_input, grad_weight, grad_bias};
}

// get_plan's content check syncs; it must not run while a CUDA graph is being captured.
bool stream_is_capturing(c10::Device device) {
  c10::cuda::CUDAGuard guard(device);
  return at::cuda::currentStreamCaptureStatusMayInitCtx() != at::cuda::CaptureStatus::None;
}

const bool capture_query_registered = (set_capture_query(&stream_is_capturing), true);

}  // namespace

TORCH_LIBRARY_IMPL(sparsemask, CUDA, m) {
  m.impl("masked_conv2d", TORCH_FN(masked_conv2d_cuda));
  m.impl("masked_conv2d_backward", TORCH_FN(masked_conv2d_backward_cuda));
}

}  // namespace sparsemask
