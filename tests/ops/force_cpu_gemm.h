// Forcing the CPU's f32 GEMM (ops/linalg/cpu_gemm_choice.h) for a test's scope.
#pragma once

#include "ops/linalg/cpu_gemm_choice.h"

namespace tgt {

/// Forces the CPU's f32 GEMM for a scope, then restores the automatic choice.
struct ForceCpuGemm {
  explicit ForceCpuGemm(tg::ops::CpuGemm g) { tg::ops::set_cpu_gemm(g); }
  ~ForceCpuGemm() { tg::ops::set_cpu_gemm(tg::ops::CpuGemm::Auto); }
  ForceCpuGemm(const ForceCpuGemm&) = delete;
  ForceCpuGemm& operator=(const ForceCpuGemm&) = delete;
};

}  // namespace tgt
