// Layout: which blocks of a block-sparse [B, M, N] matrix batch exist, at one block size.
//
// An immutable value: it owns the boolean mask [B, M/bs, N/bs] and lazily builds, once
// per device it is used on, the index tables kernels need. Because it never changes, its
// caches cannot go stale and callers keep no cache dictionaries. Copies share everything.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace tg {

/// Index tables of a layout on one device (all i64):
///  - block_coords [n, 3]: compressed index -> (b, r, c), row-major order of (b, r, c);
///  - block_index [B, Mb, Nb]: (b, r, c) -> compressed index or -1;
///  - row_offsets [B*Mb + 1]: CSR offsets; blocks of block-row (b, r) are
///    row_offsets[b*Mb+r] .. row_offsets[b*Mb+r+1] (contiguous in compressed order);
///  - col_offsets [B*Nb + 1] and col_blocks [n]: CSC; the blocks of block-column (b, c),
///    in increasing r, are col_blocks[col_offsets[b*Nb+c] .. col_offsets[b*Nb+c+1]].
struct LayoutTables {
  Tensor block_coords;
  Tensor block_index;
  Tensor row_offsets;
  Tensor col_offsets;
  Tensor col_blocks;
};

class Layout {
 public:
  /// An empty 0x0x0 layout (placeholder; `defined() == false`).
  Layout() = default;
  /// From a binary mask [B, Mb, Nb] (bool, or any integer / floating dtype holding only 0
  /// and 1; 1 = active) on any device, and the block size in elements (a power of two >= 1).
  /// Throws ValueError (undefined mask), ShapeError (rank), LayoutError (block size, a mask
  /// value other than 0 / 1, NaN included: layout_of() reads non-zero as active).
  Layout(const Tensor& mask, std::int64_t block_size);

  bool defined() const { return impl_ != nullptr; }
  std::int64_t batch() const;
  std::int64_t block_rows() const;  ///< Mb
  std::int64_t block_cols() const;  ///< Nb
  std::int64_t block_size() const;
  std::int64_t rows() const { return block_rows() * block_size(); }  ///< M
  std::int64_t cols() const { return block_cols() * block_size(); }  ///< N
  /// Number of active blocks.
  std::int64_t n_blocks() const;
  /// n_blocks / (B * Mb * Nb); 0 for an empty extent.
  double density() const;
  /// The mask as a bool tensor [B, Mb, Nb] on the CPU.
  const Tensor& mask() const;
  /// Host copy of the mask (row-major).
  const std::vector<std::uint8_t>& mask_host() const;
  /// Whether block (b, r, c) is active (host, bounds-checked).
  bool active(std::int64_t b, std::int64_t r, std::int64_t c) const;
  /// The index tables on `device`, built on first use and cached for the layout's lifetime.
  const LayoutTables& tables(Device device) const;
  /// A hash of (shape, block size, mask), used for fast equality.
  std::uint64_t hash() const;
  /// The transposed layout [B, Nb, Mb].
  Layout transposed() const;
  /// Data an op derives from this layout (a block-sparse matmul's plans) and keeps for the
  /// layout's lifetime, under `key`: the object `make` returns on the first call with that
  /// key, the same object on every later call from any copy of this layout. `make` runs
  /// under the layout's lock: it must be cheap (an empty container) and must not touch this
  /// layout. Thread-safe. An attachment must not hold this layout (a cycle never freed).
  std::shared_ptr<void> attachment(const std::string& key, const std::function<std::shared_ptr<void>()>& make) const;

  /// Equal when shapes, block sizes and masks are equal.
  friend bool operator==(const Layout& a, const Layout& b);

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
  const Impl& impl() const;
};

/// Prints the shape, block size, count and density, and for small layouts a block picture
/// ('#' active, '.' absent) per batch.
std::ostream& operator<<(std::ostream& os, const Layout& l);

}  // namespace tg
