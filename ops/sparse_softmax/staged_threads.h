// Threads per CTA of the staged kernels of the CUDA block-sparse softmax (forward and
// backward), overridable so that tests and benchmarks can run both sizes on the same inputs.
#pragma once

namespace tg::ops {

/// Forces the threads per CTA of later staged launches (process-wide): 128 or 256; 0
/// restores the default, the environment variable TG_SOFTMAX_STAGE_THREADS (128 or 256)
/// when set, else a choice per call (128 threads where a thread of a 256-thread CTA would
/// stage under 64 bytes on average: there the per-CTA fixed cost dominates). Throws
/// tg::ValueError for any other n.
void set_staged_threads(int n);

/// The setting in effect, the environment applied: 128, 256, or 0 (choose per call).
/// Throws tg::ValueError naming TG_SOFTMAX_STAGE_THREADS when it holds anything but 128 or
/// 256.
int staged_threads();

}  // namespace tg::ops
