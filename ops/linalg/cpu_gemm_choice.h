// Which f32 GEMM the CPU backend runs: Eigen's or its own packed one (cpu_packed_gemm.h).
#pragma once

#include <cstdint>

namespace tg::ops {

/// The CPU's f32 GEMM (matmul, linear, and the f32 products behind bf16 / f16 matmuls on the
/// CPU). Auto: the environment variable TG_CPU_GEMM (`eigen` or `packed`) when set, else
/// chosen per product by use_packed_gemm.
enum class CpuGemm { Auto, Eigen, Packed };

/// Forces the GEMM of later calls (process-wide; Auto restores the choice above). For tests
/// and benchmarks.
void set_cpu_gemm(CpuGemm g);

/// The setting in effect, the environment applied: Eigen, Packed, or Auto. Throws
/// tg::ValueError naming TG_CPU_GEMM when it holds anything but `eigen` or `packed`.
CpuGemm cpu_gemm();

/// Whether an f32 product of m x k by k x n runs on the packed GEMM: where forced, else where
/// this CPU has AVX2 and FMA, `eigen_avx512` is false (Eigen's own kernels are then no wider
/// than the packed one's 8 lanes) and the product has at least 2^20 multiply-adds (below that
/// Eigen's smaller fixed cost wins; measured on a 2-core AVX2 machine, bench_cpu_gemm).
/// Throws tg::ValueError when the packed GEMM is forced on a CPU without AVX2 and FMA.
bool use_packed_gemm(std::int64_t m, std::int64_t n, std::int64_t k, bool eigen_avx512);

/// use_packed_gemm for this build: `eigen_avx512` true where Eigen is compiled with AVX-512.
bool use_packed_gemm(std::int64_t m, std::int64_t n, std::int64_t k);

}  // namespace tg::ops
