// Choice of the CUDA kernel of a gather along dim 1, overridable so that tests and
// benchmarks can run each on the same inputs.
//
// Strips (gather_strips_k): a work item stages a 32-byte strip of every row of a source
// block column in shared memory and writes that strip of the column's idx blocks; the
// traffic of a copy whatever rows the indices name (at 16 x 2048 x 2048, blocks of 64, bf16
// on an H100: 60-73% of a same-size copy for in-block and scattered rows alike). Span
// (gather_span_k): an idx block stages the few source blocks its indices span (88-98%
// where they lie in its own block row), else reads each element directly (14-52% for
// scattered rows). Direct (gather_direct_k): each element read from global memory. Auto
// takes Span where it applies (blocks of 4 KiB up to an idx block and a source block of
// 48 KiB, aligned data), else Strips where it applies (source columns of at most 3072
// rows, block rows of at least 32 bytes, aligned data, no more than 1.5 source blocks
// staged an idx block), else Direct: the in-block case, the common one, runs at its best;
// indices scattered over whole columns run 4-5x faster by Strips, which the automatic
// choice tries first only when the environment says TG_GATHER_DIM1=strips (the kernels
// cannot see the pattern before they run).
#pragma once

namespace tg::ops::smove {

enum class Dim1Path { Auto, Strips, Span, Direct };

/// Forces the kernel of later CUDA gathers along dim 1 (process-wide; Auto restores the
/// rule). A forced staged kernel runs where it applies (Strips then ignores its 1.5-block
/// rule), the direct kernel elsewhere.
void set_dim1_path(Dim1Path path);

/// The kernel choice set by set_dim1_path (Auto by default).
Dim1Path dim1_path();

}  // namespace tg::ops::smove
