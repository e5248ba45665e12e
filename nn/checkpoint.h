// Checkpoints in the safetensors format: an 8-byte little-endian header length, a JSON
// header {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}, then the raw little-endian tensor bytes. Files are readable by
// the Python `safetensors` package.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/module.h"

namespace tg::nn {

/// Writes named tensors (any device; copied to the host) and string metadata to `path`.
/// Throws tg::Error when the file cannot be written.
void save_tensors(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path,
                  const std::map<std::string, std::string>& metadata = {});
/// Reads every tensor of a safetensors file onto the CPU. Throws tg::Error on a missing
/// file, a malformed header, an unsupported dtype or out-of-range offsets.
std::vector<std::pair<std::string, Tensor>> load_tensors(const std::string& path,
                                                         std::map<std::string, std::string>* metadata = nullptr);

/// Saves every parameter and buffer of `module` under its dotted name.
void save(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata = {});
/// Loads parameters and buffers in place (keeping each tensor's device and dtype).
/// With `strict`, a tensor missing from the file or present in the file but not in the
/// module throws tg::ValueError listing the names; a shape mismatch always throws
/// tg::ShapeError naming the tensor, the expected and the file's shape. Nothing is copied
/// unless every check passes; then `module.on_loaded()` runs (modules re-derive state kept
/// in buffers, e.g. a block-sparse layout).
void load(Module& module, const std::string& path, bool strict = true);

}  // namespace tg::nn
