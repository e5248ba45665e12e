// Choice of the CUDA kernel of a gather along dim 1, overridable so that tests and
// benchmarks can run each on the same inputs.
//
// Strips (gather_strips_k): a work item stages a 32-byte strip of every row of a source
// block column in shared memory and writes that strip of the column's idx blocks; the
// traffic of a copy whatever rows the indices name (at 16 x 2048 x 2048, blocks of 64, bf16
// on an H100: 60-73% of a same-size copy for in-block and scattered rows alike). Span
// (gather_span_k): an idx block stages the few source blocks its indices span (88-98%
// where they lie in its own block row), else reads each element directly (14-52% for
// scattered rows). Direct (gather_direct_k): each element read from global memory.
//
// Auto: Span where it applies (blocks of 4 KiB up to an idx block and a source block of
// 48 KiB, aligned data), else Strips where it applies (source columns of at most 3072
// rows, block rows of at least 32 bytes, aligned data, no more than 1.5 source blocks
// staged an idx block), else Direct; except that where the span kernel's last run on the
// same idx layout gathered more than half of its items directly (scattered rows), Strips
// runs first, re-measuring by a span run every 128 calls (ops/sparse_move/span_history.h).
// TG_GATHER_DIM1=strips makes Auto try Strips first always.
#pragma once

namespace tg::ops::smove {

enum class Dim1Path { Auto, Strips, Span, Direct };

/// Forces the kernel of later CUDA gathers along dim 1 (process-wide; Auto restores the
/// rule). A forced staged kernel runs where it applies (Strips then ignores its 1.5-block
/// rule), the direct kernel elsewhere.
void set_dim1_path(Dim1Path path);

/// The kernel choice set by set_dim1_path (Auto by default).
Dim1Path dim1_path();

/// The kernel the calling thread's last CUDA gather along dim 1 ran (Strips, Span or
/// Direct; Auto before any): what the automatic choice took, for tests and benchmarks.
Dim1Path last_dim1_kernel();
/// Records the kernel a CUDA gather along dim 1 ran (the gather's launcher calls it).
void note_dim1_kernel(Dim1Path ran);

}  // namespace tg::ops::smove
