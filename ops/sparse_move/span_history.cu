#include "ops/sparse_move/span_history.h"

#include <string>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops::smove {

std::shared_ptr<SpanHistory> SpanHistory::of(const Layout& il, int device) {
  return std::static_pointer_cast<SpanHistory>(il.attachment(
      "gather.dim1.history." + std::to_string(device), [&] { return std::make_shared<SpanHistory>(device); }));
}

SpanHistory::~SpanHistory() {
  // Errors are ignored: at exit the CUDA runtime may already be torn down.
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}

bool SpanHistory::prefer_strips() {
  if (pending_ && cudaEventQuery(event_) == cudaSuccess) {
    const volatile int* c = counts_.get();
    std::int64_t direct = 0;
    for (unsigned i = 0; i < grid_; ++i) direct += c[i];
    strips_ = 2 * direct > items_;
    pending_ = false;
  } else if (pending_) {
    (void)cudaGetLastError();  // cudaErrorNotReady is not an error of a later launch
  }
  return strips_ && ++calls_ % kSpanReprobeCalls != 0;
}

int* SpanHistory::sink(unsigned grid) {
  if (pending_ || grid > kSpanHistoryCtas) return nullptr;
  if (!counts_) {
    tg::cuda::DeviceGuard guard(device_);
    void* p = nullptr;
    TG_CUDA_CHECK(cudaHostAlloc(&p, sizeof(int) * kSpanHistoryCtas, cudaHostAllocMapped | cudaHostAllocPortable));
    counts_.reset(static_cast<int*>(p), [](int* q) { (void)cudaFreeHost(q); });
    TG_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
  }
  return counts_.get();
}

void SpanHistory::launched(cudaStream_t stream, unsigned grid, std::int64_t items) {
  TG_CUDA_CHECK(cudaEventRecord(event_, stream));
  pending_ = true;
  grid_ = grid;
  items_ = items;
}

}  // namespace tg::ops::smove
