// Activation checkpointing (gradient checkpointing, torch.utils.checkpoint): trade compute
// for memory by not keeping a function's intermediate activations for backward, and
// recomputing them when backward needs them.
#pragma once

#include <functional>
#include <vector>

#include "core/tensor.h"

namespace tg {

using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

/// Returns fn(inputs), computed without recording its graph: of everything fn computes,
/// only `inputs` (and the outputs) stay alive. Backward runs fn again on the saved inputs
/// with recording on and backpropagates through that, so gradients are those of fn itself.
/// `params`: the other tensors requiring grad that fn reads (e.g. a module's
/// parameters()); their gradients accumulate as usual, and they make the call record even
/// when no input requires grad. Random draws (Dropout, attention dropout, rand) repeat
/// exactly in the recomputation (runtime/rng_replay.h). fn must be deterministic otherwise
/// and must not change state it reads (a module's mode, its inputs). Costs one more
/// forward of fn per backward. Outputs that are not floating do not carry gradients.
/// Errors: ValueError (fn returned no tensor or an undefined one), and whatever fn throws.
std::vector<Tensor> activation_checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                                          const std::vector<Tensor>& params = {});

/// The one-input, one-output form: fn(x).
Tensor activation_checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x,
                             const std::vector<Tensor>& params = {});

}  // namespace tg
