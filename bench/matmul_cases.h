// The block-sparse matmul benchmarks' shape and cases, shared by bench_sparse_matmul (timings)
// and matmul_groups (the Hopper kernel's groups those layouts give): batch 16 x 2048³; SDD, DSD
// and DDS at blocks 16, 32, 64 and 128 and densities 0.1, 0.25, 0.5 and 1 of random layouts.
#pragma once

#include <cstdint>

#include "tilegrad.h"

namespace tg_bench {

constexpr std::int64_t kMatmulB = 16, kMatmulS = 2048;

/// Which operand is block-sparse: the output (SDD), x (DSD) or y (DDS).
enum class MatmulMode { SDD, DSD, DDS };

inline const char* mode_name(MatmulMode m) {
  return m == MatmulMode::SDD ? "SDD" : m == MatmulMode::DSD ? "DSD" : "DDS";
}

/// Calls fn(mode, block size, wanted density, layout) for every case in the benchmarks' order, each
/// layout drawn with its own seed (11, 12, ... in that order), so that both tools see the same ones.
template <class Fn>
void for_each_matmul_case(Fn&& fn) {
  std::uint64_t seed = 10;
  for (MatmulMode m : {MatmulMode::SDD, MatmulMode::DSD, MatmulMode::DDS})
    for (std::int64_t bs : {32, 64, 128})
      for (double want : {0.1, 0.25, 0.5, 1.0})
        fn(m, bs, want, tg::random_layout(kMatmulB, kMatmulS / bs, kMatmulS / bs, bs, want, ++seed));
  // block 16 after the others, so that their seeds stay as they were
  for (MatmulMode m : {MatmulMode::SDD, MatmulMode::DSD, MatmulMode::DDS})
    for (double want : {0.1, 0.25, 0.5, 1.0})
      fn(m, std::int64_t{16}, want, tg::random_layout(kMatmulB, kMatmulS / 16, kMatmulS / 16, 16, want, ++seed));
}

}  // namespace tg_bench
