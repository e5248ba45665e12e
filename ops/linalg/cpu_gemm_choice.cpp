#include "ops/linalg/cpu_gemm_choice.h"

#include <Eigen/Core>

#include "ops/common.h"
#include "ops/knob.h"
#include "ops/linalg/cpu_packed_gemm.h"

namespace tg::ops {
namespace {

constinit Knob<CpuGemm> g_gemm{"matmul",       "TG_CPU_GEMM",   "eigen",      "packed",
                               CpuGemm::Eigen, CpuGemm::Packed, CpuGemm::Auto};

// Whether Eigen's products in this build use its 16-lane AVX-512 kernels (the build's target).
#ifdef EIGEN_VECTORIZE_AVX512
constexpr bool kEigenAvx512 = true;
#else
constexpr bool kEigenAvx512 = false;
#endif

// Smallest product (multiply-adds) the automatic choice gives the packed GEMM.
constexpr std::int64_t kPackedMinWork = std::int64_t{1} << 20;

}  // namespace

void set_cpu_gemm(CpuGemm g) { g_gemm.set(g); }

CpuGemm cpu_gemm() { return g_gemm.get(); }

bool use_packed_gemm(std::int64_t m, std::int64_t n, std::int64_t k, bool eigen_avx512) {
  const CpuGemm g = cpu_gemm();
  if (g == CpuGemm::Eigen) return false;
  if (g == CpuGemm::Packed) {
    if (!packed_sgemm_available()) {
      TG_THROW(ValueError,
               "matmul: the packed CPU GEMM (TG_CPU_GEMM=packed or set_cpu_gemm) needs a CPU with AVX2 "
               "and FMA; this one lacks at least one of them");
    }
    return true;
  }
  return packed_sgemm_available() && !eigen_avx512 && m * n * k >= kPackedMinWork;
}

bool use_packed_gemm(std::int64_t m, std::int64_t n, std::int64_t k) { return use_packed_gemm(m, n, k, kEigenAvx512); }

}  // namespace tg::ops
