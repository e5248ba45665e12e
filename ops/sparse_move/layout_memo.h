// A small memo of layouts derived from other layouts (transposed, repeated, split, ...).
//
// A derived layout is a new Layout object, and a new object builds its device index tables
// again on first use. Returning the same object for the same derivation lets a training
// loop that transposes or splits the same layout every step build those tables once.
// Layouts are immutable, so a remembered result can never be stale.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/layout.h"

namespace tg::ops {

/// The layout `build()` returns for derivation `op` with integer `params` from `inputs`;
/// the last few results are remembered and returned as the same object on a repeat call.
Layout memo_layout(const std::string& op, const std::vector<std::int64_t>& params, const std::vector<Layout>& inputs,
                   const std::function<Layout()>& build);

/// The intersection of two layouts of equal shape and block size. Returns `a` or `b`
/// itself when the intersection equals it (keeping that object's cached tables).
Layout intersect_layouts(const Layout& a, const Layout& b);

}  // namespace tg::ops
