// Kernels and launchers of the tensor-core attention passes, instantiated per element type
// and head dims by the cuda_*.cu files of ops/attention (one file per pass and dtype, so
// they compile in parallel).
#pragma once

#include <mutex>
#include <set>
#include <utility>

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "ops/attention/cuda/configs.h"
#include "ops/attention/cuda/tc_bwd.cuh"
#include "ops/attention/cuda/tc_fwd.cuh"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops::attn {

template <int D, int DV>
using FwdCfg = FwdConfig<D, DV, kFwdBN, fwd_warps(DV), fwd_slices(DV)>;
template <int D, int DV, bool kGeneral, int NW = kBwdKvWarps>
using BwdKvCfg = BwdKvConfig<D, DV, bwd_kv_bm(kGeneral), NW>;
template <int D, int DV>
using BwdQCfg = BwdQConfig<D, DV, kBwdQBN, kBwdQWarps>;

template <typename T, typename Cfg, bool kGeneral>
__global__ void __launch_bounds__(Cfg::kThreads) fwd_kernel(const __grid_constant__ FwdArgs<T> a) {
  extern __shared__ __align__(16) char smem[];
  fwd_tile_body<T, Cfg, kGeneral>(a, smem, static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x));
}

template <typename T, typename Cfg, bool kGeneral>
__global__ void __launch_bounds__(Cfg::kThreads) bwd_kv_kernel(const __grid_constant__ BwdArgs<T> a) {
  extern __shared__ __align__(16) char smem[];
  bwd_kv_body<T, Cfg, kGeneral>(a, smem, static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x));
}

template <typename T, typename Cfg, bool kGeneral>
__global__ void __launch_bounds__(Cfg::kThreads) bwd_q_kernel(const __grid_constant__ BwdArgs<T> a) {
  extern __shared__ __align__(16) char smem[];
  bwd_q_body<T, Cfg, kGeneral>(a, smem, static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x));
}

// Allows `smem` bytes of dynamic shared memory for `kernel` on the current device (once per
// device and kernel). Keyed by the kernel's address: kernels of different tile configs
// share one function type, so a static per template instance would be shared by them.
template <typename K>
void allow_smem(K* kernel, int smem) {
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> done;
  int dev = 0;
  TG_CUDA_CHECK(cudaGetDevice(&dev));
  const std::pair<const void*, int> key{reinterpret_cast<const void*>(kernel), dev};
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(key)) return;
  TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  done.insert(key);
}

template <typename T, int D, int DV, bool kGeneral>
void launch_fwd(const FwdArgs<T>& a, std::int64_t items, cudaStream_t st) {
  using Cfg = FwdCfg<D, DV>;
  auto* kernel = fwd_kernel<T, Cfg, kGeneral>;
  allow_smem(kernel, Cfg::kSmem);
  kernel<<<static_cast<unsigned>(items), Cfg::kThreads, Cfg::kSmem, st>>>(a);
  TG_CUDA_CHECK_LAST();
}

template <typename T, int D, int DV, bool kGeneral>
void launch_bwd_kv(const BwdArgs<T>& a, std::int64_t items, cudaStream_t st) {
  using Cfg = BwdKvCfg<D, DV, kGeneral>;
  auto* kernel = bwd_kv_kernel<T, Cfg, kGeneral>;
  allow_smem(kernel, Cfg::kSmem);
  kernel<<<static_cast<unsigned>(items), Cfg::kThreads, Cfg::kSmem, st>>>(a);
  TG_CUDA_CHECK_LAST();
}

// The kv pass with key tiles of 64 (kBwdKvWarpsNarrow warps), for D = Dv.
template <typename T, int D, bool kGeneral>
void launch_bwd_kv_narrow(const BwdArgs<T>& a, std::int64_t items, cudaStream_t st) {
  using Cfg = BwdKvCfg<D, D, kGeneral, kBwdKvWarpsNarrow>;
  auto* kernel = bwd_kv_kernel<T, Cfg, kGeneral>;
  allow_smem(kernel, Cfg::kSmem);
  kernel<<<static_cast<unsigned>(items), Cfg::kThreads, Cfg::kSmem, st>>>(a);
  TG_CUDA_CHECK_LAST();
}

template <typename T, int D, int DV, bool kGeneral>
void launch_bwd_q(const BwdArgs<T>& a, std::int64_t items, cudaStream_t st) {
  using Cfg = BwdQCfg<D, DV>;
  auto* kernel = bwd_q_kernel<T, Cfg, kGeneral>;
  allow_smem(kernel, Cfg::kSmem);
  kernel<<<static_cast<unsigned>(items), Cfg::kThreads, Cfg::kSmem, st>>>(a);
  TG_CUDA_CHECK_LAST();
}

}  // namespace tg::ops::attn

// Explicit instantiations of launcher L (taking A<T>) for element type T over every pair
// of head dims, with and without the general (bias / soft cap / dropout) path.
#define TG_ATTN_INSTANTIATE(L, A, T, D, DV, G) \
  template void ::tg::ops::attn::L<T, D, DV, G>(const ::tg::ops::attn::A<T>&, std::int64_t, cudaStream_t);
#define TG_ATTN_INSTANTIATE_ALL(L, A, T) \
  TG_ATTN_INSTANTIATE(L, A, T, 32, 32, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 32, 32, true) \
  TG_ATTN_INSTANTIATE(L, A, T, 32, 64, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 32, 64, true) \
  TG_ATTN_INSTANTIATE(L, A, T, 32, 128, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 32, 128, true) \
  TG_ATTN_INSTANTIATE(L, A, T, 64, 32, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 64, 32, true) \
  TG_ATTN_INSTANTIATE(L, A, T, 64, 64, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 64, 64, true) \
  TG_ATTN_INSTANTIATE(L, A, T, 64, 128, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 64, 128, true) \
  TG_ATTN_INSTANTIATE(L, A, T, 128, 32, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 128, 32, true) \
  TG_ATTN_INSTANTIATE(L, A, T, 128, 64, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 128, 64, true) \
  TG_ATTN_INSTANTIATE(L, A, T, 128, 128, false) \
  TG_ATTN_INSTANTIATE(L, A, T, 128, 128, true)
// ... and of the narrow kv pass (D = Dv).
#define TG_ATTN_INSTANTIATE_NARROW_KV(T)                                                                          \
  template void ::tg::ops::attn::launch_bwd_kv_narrow<T, 32, false>(const ::tg::ops::attn::BwdArgs<T>&,        \
                                                                     std::int64_t, cudaStream_t);               \
  template void ::tg::ops::attn::launch_bwd_kv_narrow<T, 32, true>(const ::tg::ops::attn::BwdArgs<T>&,         \
                                                                    std::int64_t, cudaStream_t);                \
  template void ::tg::ops::attn::launch_bwd_kv_narrow<T, 64, false>(const ::tg::ops::attn::BwdArgs<T>&,        \
                                                                     std::int64_t, cudaStream_t);               \
  template void ::tg::ops::attn::launch_bwd_kv_narrow<T, 64, true>(const ::tg::ops::attn::BwdArgs<T>&,         \
                                                                    std::int64_t, cudaStream_t);                \
  template void ::tg::ops::attn::launch_bwd_kv_narrow<T, 128, false>(const ::tg::ops::attn::BwdArgs<T>&,       \
                                                                      std::int64_t, cudaStream_t);              \
  template void ::tg::ops::attn::launch_bwd_kv_narrow<T, 128, true>(const ::tg::ops::attn::BwdArgs<T>&,        \
                                                                     std::int64_t, cudaStream_t);
