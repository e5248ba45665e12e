// Encoding of a tile-list entry: (tile << kFlagBits) | flags, the flags saying which
// per-element checks the tile needs (a tile without flags is entirely visible).
#pragma once

namespace tg::ops::attn {

constexpr int kCheckPattern = 1;   ///< the tile has unvisited pattern pairs or keys >= sk
constexpr int kCheckGeometry = 2;  ///< causal or window cut through the tile
constexpr int kFlagBits = 2;

}  // namespace tg::ops::attn
