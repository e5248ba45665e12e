// A test and benchmark override of the CUDA block-sparse softmax: the two-pass kernels
// (the long-row plan) for every row length, so that they run on the same inputs as the
// fused ones, which otherwise take every row that fits on chip.
#pragma once

namespace tg::ops {

/// Forces (true) or releases (false, the default) the two-pass forward and backward
/// kernels for every later CUDA softmax call, process-wide. No effect on the CPU backend.
void set_force_two_pass(bool on);

/// The setting in effect.
bool force_two_pass();

}  // namespace tg::ops
