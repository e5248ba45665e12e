// The CUDA index range kernel: grid-strided 16-byte loads (kUnroll in flight a thread),
// each CTA's (lo, hi) reported through range_report.cuh.
#include <climits>
#include <cstdint>
#include <memory>

#include "ops/index_check/range_report.cuh"

namespace tg::ops {
namespace {

using range::kMaxRangeCtas;
using range::RangeLease;
using range::RangeSink;

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

template <typename I, int V>
struct alignas(sizeof(I) * V) IndexPack {
  I v[V];
};

template <typename I, int V>
__global__ void __launch_bounds__(kThreads) index_range_k(const I* __restrict__ idx, std::int64_t units, RangeSink rs) {
  using P = IndexPack<I, V>;
  long long lo = LLONG_MAX, hi = LLONG_MIN;
  const P* p = reinterpret_cast<const P*>(idx);
  constexpr std::int64_t kChunk = std::int64_t(kUnroll) * kThreads;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kChunk; base < units;
       base += static_cast<std::int64_t>(gridDim.x) * kChunk) {
    P x[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < units) x[r] = p[g];
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      if (base + r * kThreads + threadIdx.x >= units) break;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        lo = min(lo, static_cast<long long>(x[r].v[e]));
        hi = max(hi, static_cast<long long>(x[r].v[e]));
      }
    }
  }
  range::publish_range<kThreads>(lo, hi, rs);
}

template <typename I>
void launch_range(const Tensor& idx, RangeLease& lease, int dev, cudaStream_t st) {
  constexpr int V = 16 / sizeof(I);
  const std::int64_t n = idx.numel();
  const bool vec = n % V == 0 && reinterpret_cast<std::uintptr_t>(idx.data_ptr()) % 16 == 0;
  const std::int64_t units = vec ? n / V : n;
  const std::int64_t chunks = (units + std::int64_t(kUnroll) * kThreads - 1) / (std::int64_t(kUnroll) * kThreads);
  const unsigned grid = static_cast<unsigned>(std::max<std::int64_t>(
      1, std::min<std::int64_t>({chunks, std::int64_t(tg::cuda::multiprocessor_count(dev)) * 8, kMaxRangeCtas})));
  const RangeSink rs = lease.sink(grid);
  const I* p = static_cast<const I*>(idx.data_ptr());
  if (vec) index_range_k<I, V><<<grid, kThreads, 0, st>>>(p, units, rs);
  else index_range_k<I, 1><<<grid, kThreads, 0, st>>>(p, units, rs);
  TG_CUDA_CHECK(cudaGetLastError());
}

void index_range_cuda(const Tensor& idx, const RangeVerdict& verdict) {
  if (idx.numel() == 0) return;
  if (idx.dtype() != DType::i32 && idx.dtype() != DType::i64) {
    TG_THROW(DTypeError, "index range: expected an i32 or i64 tensor, got ", dtype_name(idx.dtype()));
  }
  const int dev = idx.device().index;
  tg::cuda::DeviceGuard guard(dev);
  const Stream stream = tg::current_stream(idx.device());
  const cudaStream_t st = tg::cuda::stream_of(stream);
  auto lease = std::make_unique<RangeLease>(idx.device());
  if (idx.dtype() == DType::i32) launch_range<std::int32_t>(idx, *lease, dev, st);
  else launch_range<std::int64_t>(idx, *lease, dev, st);
  RangeLease::defer(std::move(lease), stream, verdict);
}

}  // namespace

TG_REGISTER_KERNEL(index_range_kernel, CUDA, &index_range_cuda);

}  // namespace tg::ops
