// Multi-tensor optimizer kernels: one launch per parameter dtype updates (or measures, or
// scales) every tensor, driven by a chunk table (tensor, start, length) built on the host.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "ops/optim/kernels.h"
#include "ops/optim/update_math.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr std::int64_t kChunk = 65536;

struct TensorRef {
  void* p;
  const void* g;
  void* m;  // AdamW m or SGD momentum buffer (may be null for SGD)
  void* v;
};
struct Chunk {
  int tensor;
  std::int64_t start, len;
};

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// V consecutive elements per thread and iteration: 16-byte moments and, for f32, 16-byte
// parameters and gradients, so each thread keeps several wide loads in flight (the scalar
// loop reached only ~79% of the copy rate). V == 1 is the fallback for unaligned tensors.
template <typename T, typename A, int V>
__global__ void adamw_multi(const TensorRef* refs, const Chunk* chunks, A lr, A b1, A b2, A eps, A wd, A bc1, A bc2,
                            A gs) {
  const Chunk c = chunks[blockIdx.x];
  const TensorRef r = refs[c.tensor];
  T* p = static_cast<T*>(r.p);
  const T* g = static_cast<const T*>(r.g);
  A* m = static_cast<A*>(r.m);
  A* v = static_cast<A*>(r.v);
  const std::int64_t end = c.start + c.len;
  const std::int64_t vec_end = c.start + c.len / V * V;
  for (std::int64_t j = c.start + threadIdx.x * V; j < vec_end; j += blockDim.x * V) {
    Vec<T, V> pv = *reinterpret_cast<const Vec<T, V>*>(p + j);
    const Vec<T, V> gv = *reinterpret_cast<const Vec<T, V>*>(g + j);
    Vec<A, V> mv = *reinterpret_cast<const Vec<A, V>*>(m + j);
    Vec<A, V> vv = *reinterpret_cast<const Vec<A, V>*>(v + j);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      pv.v[k] = T(adamw_update<A>(A(pv.v[k]), A(gv.v[k]) * gs, mv.v[k], vv.v[k], lr, b1, b2, eps, wd, bc1, bc2));
    }
    *reinterpret_cast<Vec<T, V>*>(p + j) = pv;
    *reinterpret_cast<Vec<A, V>*>(m + j) = mv;
    *reinterpret_cast<Vec<A, V>*>(v + j) = vv;
  }
  for (std::int64_t j = vec_end + threadIdx.x; j < end; j += blockDim.x) {
    A mj = m[j], vj = v[j];
    p[j] = T(adamw_update<A>(A(p[j]), A(g[j]) * gs, mj, vj, lr, b1, b2, eps, wd, bc1, bc2));
    m[j] = mj;
    v[j] = vj;
  }
}

template <typename T, typename A>
__global__ void sgd_multi(const TensorRef* refs, const Chunk* chunks, A lr, A momentum, A wd, A gs) {
  const Chunk c = chunks[blockIdx.x];
  const TensorRef r = refs[c.tensor];
  T* p = static_cast<T*>(r.p);
  const T* g = static_cast<const T*>(r.g);
  A* buf = static_cast<A*>(r.m);
  for (std::int64_t j = c.start + threadIdx.x; j < c.start + c.len; j += blockDim.x) {
    p[j] = T(sgd_update<A>(A(p[j]), A(g[j]) * gs, buf ? buf + j : nullptr, lr, momentum, wd));
  }
}

// Σ g² of one chunk per CTA, added to *out in f64 (one atomic per CTA).
template <typename T, typename A, int V>
__global__ void grad_squares_multi(const TensorRef* refs, const Chunk* chunks, double* out) {
  const Chunk c = chunks[blockIdx.x];
  const T* g = static_cast<const T*>(refs[c.tensor].g);
  const std::int64_t end = c.start + c.len, vec_end = c.start + c.len / V * V;
  A s = 0;
  for (std::int64_t j = c.start + threadIdx.x * V; j < vec_end; j += blockDim.x * V) {
    const Vec<T, V> gv = *reinterpret_cast<const Vec<T, V>*>(g + j);
#pragma unroll
    for (int k = 0; k < V; ++k) s += A(gv.v[k]) * A(gv.v[k]);
  }
  for (std::int64_t j = vec_end + threadIdx.x; j < end; j += blockDim.x) s += A(g[j]) * A(g[j]);
  __shared__ A warp_sums[32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    A t = 0;
    for (unsigned w = 0; w < (blockDim.x + 31) / 32; ++w) t += warp_sums[w];
    atomicAdd(out, static_cast<double>(t));
  }
}

// g *= clip_factor(*sumsq, max_norm) in place, one chunk per CTA; the factor is computed
// from the device's sum of squares by every CTA (a cached load), so the host never reads it.
template <typename T, typename A, int V>
__global__ void grad_scale_multi(const TensorRef* refs, const Chunk* chunks, const double* sumsq, double max_norm) {
  const double f = clip_factor(*sumsq, max_norm);
  if (f == 1.0) return;  // the same for every CTA: nothing to clip
  const A scale = static_cast<A>(f);
  const Chunk c = chunks[blockIdx.x];
  T* g = static_cast<T*>(refs[c.tensor].p);
  const std::int64_t end = c.start + c.len, vec_end = c.start + c.len / V * V;
  for (std::int64_t j = c.start + threadIdx.x * V; j < vec_end; j += blockDim.x * V) {
    Vec<T, V> gv = *reinterpret_cast<const Vec<T, V>*>(g + j);
#pragma unroll
    for (int k = 0; k < V; ++k) gv.v[k] = T(A(gv.v[k]) * scale);
    *reinterpret_cast<Vec<T, V>*>(g + j) = gv;
  }
  for (std::int64_t j = vec_end + threadIdx.x; j < end; j += blockDim.x) g[j] = T(A(g[j]) * scale);
}

// Builds the device-side tables for the parameters of one dtype; `launch` gets them.
template <typename Launch>
void for_each_dtype_group(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                          const std::vector<Tensor>& m, const std::vector<Tensor>& v, Launch&& launch) {
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    std::vector<TensorRef> refs;
    std::vector<Chunk> chunks;
    Device dev;
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (params[i].dtype() != dt || params[i].numel() == 0) continue;
      dev = params[i].device();
      refs.push_back({params[i].data_ptr(), grads[i].data_ptr(), m[i].defined() ? m[i].data_ptr() : nullptr,
                      v.empty() || !v[i].defined() ? nullptr : v[i].data_ptr()});
      for (std::int64_t s = 0; s < params[i].numel(); s += kChunk) {
        chunks.push_back({static_cast<int>(refs.size() - 1), s, std::min(kChunk, params[i].numel() - s)});
      }
    }
    if (chunks.empty()) continue;
    // Wide accesses need every buffer aligned to its 4-element width (chunk starts are
    // multiples of 4 elements).
    bool aligned = true;
    for (const TensorRef& r : refs) {
      for (const void* ptr : {static_cast<const void*>(r.p), r.g, static_cast<const void*>(r.m),
                              static_cast<const void*>(r.v)}) {
        if (ptr && reinterpret_cast<std::uintptr_t>(ptr) % 32 != 0) aligned = false;
      }
    }
    std::size_t ref_bytes = refs.size() * sizeof(TensorRef), chunk_bytes = chunks.size() * sizeof(Chunk);
    std::size_t ref_pad = (ref_bytes + 15) / 16 * 16;
    Tensor host = empty({static_cast<std::int64_t>(ref_pad + chunk_bytes)}, {.dtype = DType::boolean});
    std::memcpy(host.data_ptr(), refs.data(), ref_bytes);
    std::memcpy(static_cast<char*>(host.data_ptr()) + ref_pad, chunks.data(), chunk_bytes);
    Tensor table = empty(host.shape(), {.dtype = DType::boolean, .device = dev});
    copy_bytes(table, host);
    auto* d_refs = static_cast<const TensorRef*>(table.data_ptr());
    auto* d_chunks = reinterpret_cast<const Chunk*>(static_cast<const char*>(table.data_ptr()) + ref_pad);
    launch(dt, dev, d_refs, d_chunks, static_cast<unsigned>(chunks.size()), aligned);
  }
}

void adamw_cuda(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const AdamWHyper& h) {
  const double bc1 = 1 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bc2 = 1 - std::pow(h.beta2, static_cast<double>(h.step));
  for_each_dtype_group(params, grads, m, v, [&](DType dt, Device dev, const TensorRef* refs, const Chunk* chunks,
                                                unsigned n, bool aligned) {
    cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
    TG_DISPATCH_FLOATING(dt, "adamw", [&] {
      using A = typename acc_type<scalar_t>::type;
      if (aligned && !v.empty()) {
        adamw_multi<scalar_t, A, 4><<<n, 256, 0, st>>>(refs, chunks, A(h.lr), A(h.beta1), A(h.beta2), A(h.eps),
                                                       A(h.weight_decay), A(bc1), A(bc2), A(h.grad_scale));
      } else {
        adamw_multi<scalar_t, A, 1><<<n, 256, 0, st>>>(refs, chunks, A(h.lr), A(h.beta1), A(h.beta2), A(h.eps),
                                                       A(h.weight_decay), A(bc1), A(bc2), A(h.grad_scale));
      }
    });
    TG_CUDA_CHECK_LAST();
  });
}

void sgd_cuda(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& bufs,
              double lr, double momentum, double wd, double grad_scale) {
  for_each_dtype_group(params, grads, bufs, {}, [&](DType dt, Device dev, const TensorRef* refs, const Chunk* chunks,
                                                    unsigned n, bool) {
    cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
    TG_DISPATCH_FLOATING(dt, "sgd", [&] {
      using A = typename acc_type<scalar_t>::type;
      sgd_multi<scalar_t, A><<<n, 256, 0, st>>>(refs, chunks, A(lr), A(momentum), A(wd), A(grad_scale));
    });
    TG_CUDA_CHECK_LAST();
  });
}

void grad_squares_cuda(const std::vector<Tensor>& grads, Tensor& out) {
  const std::vector<Tensor> none(grads.size());
  for_each_dtype_group(grads, grads, none, {}, [&](DType dt, Device dev, const TensorRef* refs, const Chunk* chunks,
                                                   unsigned n, bool aligned) {
    cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
    TG_DISPATCH_FLOATING(dt, "clip_grad_norm", [&] {
      using A = typename acc_type<scalar_t>::type;
      if (aligned) grad_squares_multi<scalar_t, A, 4><<<n, 256, 0, st>>>(refs, chunks, out.data<double>());
      else grad_squares_multi<scalar_t, A, 1><<<n, 256, 0, st>>>(refs, chunks, out.data<double>());
    });
    TG_CUDA_CHECK_LAST();
  });
}

void grad_scale_cuda(const std::vector<Tensor>& grads, const Tensor& sumsq, double max_norm) {
  const double* ss = sumsq.data<double>();
  const std::vector<Tensor> none(grads.size());
  for_each_dtype_group(grads, grads, none, {}, [&](DType dt, Device dev, const TensorRef* refs, const Chunk* chunks,
                                                   unsigned n, bool aligned) {
    cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
    TG_DISPATCH_FLOATING(dt, "clip_grad_norm", [&] {
      using A = typename acc_type<scalar_t>::type;
      if (aligned) grad_scale_multi<scalar_t, A, 4><<<n, 256, 0, st>>>(refs, chunks, ss, max_norm);
      else grad_scale_multi<scalar_t, A, 1><<<n, 256, 0, st>>>(refs, chunks, ss, max_norm);
    });
    TG_CUDA_CHECK_LAST();
  });
}

}  // namespace

TG_REGISTER_KERNEL(adamw_kernel, CUDA, &adamw_cuda);
TG_REGISTER_KERNEL(sgd_kernel, CUDA, &sgd_cuda);
TG_REGISTER_KERNEL(grad_squares_kernel, CUDA, &grad_squares_cuda);
TG_REGISTER_KERNEL(grad_scale_kernel, CUDA, &grad_scale_cuda);

}  // namespace tg::ops
