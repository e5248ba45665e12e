// Choice of the CUDA kernel of a gather along dim 1, overridable so that tests and
// benchmarks can run each on the same inputs.
//
// Strips (gather_strips_k): a work item stages a 32-byte strip of every row of a source
// block column in shared memory and writes that strip of the column's idx blocks; the
// traffic of a copy whatever rows the indices name. Span (gather_span_k): an idx block
// stages the few source blocks its indices span, else reads each element directly. Direct
// (gather_direct_k): each element read from global memory. Auto takes Strips where it
// applies (source columns of at most 3072 rows, block rows of at least 32 bytes, aligned
// data) and stages no more than 1.5 source blocks an idx block, else Span where it applies,
// else Direct.
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
