// Reading optimizer-side state back from checkpoints (internal to optim/): the lookup and
// the checked copy that AdamW, SGD, GradScaler and ExponentialMovingAverage share, each
// naming itself in the messages.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tg::optim::detail {

using StateList = std::vector<std::pair<std::string, Tensor>>;

/// The entry `name` of `st`; throws ValueError "<owner>: missing state tensor "<name>"".
Tensor find_state(const StateList& st, const std::string& name, const char* owner);

/// Copies `src` into `dst` (converted to dst's dtype and device); throws ShapeError
/// "<owner>: "<name>" has shape ..., expected ..." when the shapes differ.
void restore_state(Tensor& dst, const Tensor& src, const std::string& name, const char* owner);

}  // namespace tg::optim::detail
