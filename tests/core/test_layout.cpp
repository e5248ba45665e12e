#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include "core/layout_tables.h"
#include "util.h"

namespace test_layout {

using namespace tg;

TEST_CASE("Layout counts, tables and equality", "[core][layout]") {
  // batch 0: #. / .#   batch 1: ## / ..
  Tensor mask = from_vector<bool>({true, false, false, true, true, true, false, false}, {2, 2, 2});
  Layout l(mask, 4);
  REQUIRE(l.n_blocks() == 4);
  REQUIRE(l.rows() == 8);
  REQUIRE(l.density() == Approx(0.5));
  const LayoutTables& t = l.tables(Device::cpu());
  REQUIRE(t.block_coords.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1});
  REQUIRE(t.block_index.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, -1, -1, 1, 2, 3, -1, -1});
  REQUIRE(t.row_offsets.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 4, 4});
  REQUIRE(t.col_offsets.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 3, 4});
  REQUIRE(t.col_blocks.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 3});
  REQUIRE(&l.tables(Device::cpu()) == &t);  // built once

  Layout same(mask.to(DType::f32), 4);
  REQUIRE(same == l);
  REQUIRE(same.hash() == l.hash());
  REQUIRE_FALSE(Layout(mask, 8) == l);
  Layout tr = l.transposed();
  REQUIRE(tr.active(1, 1, 0));
  REQUIRE_FALSE(tr.active(1, 0, 1));
  REQUIRE(tr.transposed() == l);
}

TEST_CASE("Layout CSC tables visit columns in increasing row", "[core][layout]") {
  Layout l = random_layout(3, 5, 4, 2, 0.5, 9);
  const auto& t = l.tables(Device::cpu());
  auto coords = t.block_coords.to_vector<std::int64_t>();
  auto off = t.col_offsets.to_vector<std::int64_t>();
  auto blocks = t.col_blocks.to_vector<std::int64_t>();
  std::int64_t seen = 0;
  for (std::int64_t b = 0; b < 3; ++b)
    for (std::int64_t c = 0; c < 4; ++c) {
      std::int64_t prev_r = -1;
      for (std::int64_t k = off[static_cast<std::size_t>(b * 4 + c)]; k < off[static_cast<std::size_t>(b * 4 + c + 1)]; ++k) {
        std::int64_t blk = blocks[static_cast<std::size_t>(k)];
        REQUIRE(coords[static_cast<std::size_t>(3 * blk)] == b);
        REQUIRE(coords[static_cast<std::size_t>(3 * blk + 2)] == c);
        REQUIRE(coords[static_cast<std::size_t>(3 * blk + 1)] > prev_r);
        prev_r = coords[static_cast<std::size_t>(3 * blk + 1)];
        ++seen;
      }
    }
  REQUIRE(seen == l.n_blocks());
}

TEST_CASE("Layout builders and printing", "[core][layout]") {
  REQUIRE(full_layout(2, 3, 4, 16).n_blocks() == 24);
  REQUIRE(random_layout(1, 8, 8, 16, 0.0, 1).n_blocks() == 0);
  REQUIRE(random_layout(1, 8, 8, 16, 1.0, 1).n_blocks() == 64);
  REQUIRE(random_layout(2, 8, 8, 16, 0.3, 5) == random_layout(2, 8, 8, 16, 0.3, 5));
  Tensor d = zeros({1, 4, 4});
  std::vector<float> v(16, 0.0f);
  v[5] = 1.0f;      // block (0, 1, 0) at bs 2... element (1,1) -> block (0,0)
  v[15] = NAN;      // element (3,3) -> block (1,1)
  Layout l = layout_of(from_vector(v, {1, 4, 4}), 2);
  REQUIRE(l.active(0, 0, 0));
  REQUIRE(l.active(0, 1, 1));
  REQUIRE(l.n_blocks() == 2);
  std::ostringstream os;
  os << l;
  INFO(os.str());
  REQUIRE(os.str().find("#.\n  .#") != std::string::npos);
  REQUIRE(os.str().find("density=0.5") != std::string::npos);
}

TEST_CASE("Layout bad inputs", "[core][layout]") {
  tgt::require_throws<LayoutError>([] { Layout(zeros({1, 2, 2}), 3); }, {"Layout", "power of two", "3"});
  tgt::require_throws<ShapeError>([] { Layout(zeros({2, 2}), 2); }, {"Layout", "3-d", "[2, 2]"});
  tgt::require_throws<LayoutError>([] { layout_of(zeros({1, 6, 4}), 4); }, {"layout_of", "M = 6", "4"});
  tgt::require_throws<ValueError>([] { random_layout(1, 2, 2, 2, 1.5, 0); }, {"random_layout", "density", "1.5"});
  tgt::require_throws<ValueError>([] { full_layout(1, 2, 2, 2).active(0, 2, 0); }, {"Layout::active", "(0, 2, 0)"});
  // Masks are binary: data passed as a mask raises, naming the value and its block.
  tgt::require_throws<LayoutError>([] { Layout(from_vector<float>({0, 1, 1, 0, 0, 0.5f}, {1, 2, 3}), 2); },
                                   {"Layout", "0 / 1", "0.5", "[0, 1, 2]"});
  tgt::require_throws<LayoutError>([] { Layout(from_vector<std::int32_t>({1, 0, 2, 1}, {2, 1, 2}), 4); },
                                   {"Layout", "0 / 1", "2", "[1, 0, 0]"});
  tgt::require_throws<LayoutError>(
      [] { Layout(from_vector<float>({1, std::numeric_limits<float>::quiet_NaN()}, {1, 1, 2}), 1); },
      {"Layout", "nan", "[0, 0, 1]"});
  REQUIRE(Layout(from_vector<std::int32_t>({1, 0, 0, 1}, {1, 2, 2}), 2).n_blocks() == 2);  // 0 / 1 integers are fine
}

namespace {

// Every table of `got` equals the one of `want` (shapes and values).
void require_same_tables(const LayoutTables& got, const LayoutTables& want) {
  const std::pair<const char*, std::pair<const Tensor*, const Tensor*>> tabs[] = {
      {"block_coords", {&got.block_coords, &want.block_coords}},
      {"block_index", {&got.block_index, &want.block_index}},
      {"row_offsets", {&got.row_offsets, &want.row_offsets}},
      {"col_offsets", {&got.col_offsets, &want.col_offsets}},
      {"col_blocks", {&got.col_blocks, &want.col_blocks}}};
  for (const auto& [name, t] : tabs) {
    INFO(name);
    REQUIRE(t.first->dtype() == DType::i64);
    REQUIRE(t.first->shape() == t.second->shape());
    REQUIRE(t.first->to_vector<std::int64_t>() == t.second->to_vector<std::int64_t>());
  }
}

// Layouts for the table builders: empty, single block, full, random, with empty block-rows
// and block-columns, zero extents, and a large one.
std::vector<Layout> table_layouts() {
  auto gaps = [](auto b, auto r, auto c) { return r % 3 != 1 && c != 2 && (b + r + c) % 2 == 0; };
  return {random_layout(3, 5, 4, 2, 0.5, 21),
          random_layout(2, 3, 3, 16, 0.0, 22),
          full_layout(2, 4, 5, 1),
          tgt::layout_where(1, 7, 9, 4, [](auto, auto r, auto c) { return r == 3 && c == 8; }),
          tgt::layout_where(2, 6, 5, 2, gaps),
          Layout(zeros({1, 0, 4}, {.dtype = DType::boolean}), 8),
          Layout(zeros({2, 3, 0}, {.dtype = DType::boolean}), 8),
          random_layout(1, 1, 300, 32, 0.5, 23),
          random_layout(16, 64, 64, 64, 0.3, 24)};
}

}  // namespace

TEST_CASE("Layout tables of zero-extent and sparse layouts are consistent", "[core][layout]") {
  for (const Layout& l : table_layouts()) {
    INFO(l);
    const LayoutTables& t = l.tables(Device::cpu());
    const std::int64_t B = l.batch(), Mb = l.block_rows(), Nb = l.block_cols(), n = l.n_blocks();
    REQUIRE(t.block_coords.shape() == Shape{n, 3});
    REQUIRE(t.block_index.shape() == Shape{B, Mb, Nb});
    auto row = t.row_offsets.to_vector<std::int64_t>(), col = t.col_offsets.to_vector<std::int64_t>();
    REQUIRE(row.size() == static_cast<std::size_t>(B * Mb + 1));
    REQUIRE(col.size() == static_cast<std::size_t>(B * Nb + 1));
    REQUIRE(row.front() == 0);
    REQUIRE(row.back() == n);
    REQUIRE(col.front() == 0);
    REQUIRE(col.back() == n);
    std::vector<std::int64_t> want;
    std::int64_t k = 0;
    for (std::uint8_t on : l.mask_host()) want.push_back(on ? k++ : -1);
    REQUIRE(k == n);
    REQUIRE(t.block_index.to_vector<std::int64_t>() == want);
  }
}

TEST_CASE("Layout tables built on the GPU equal the CPU ones", "[core][layout][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  LayoutTablesBuilder build = layout_tables_builder(DeviceType::CUDA);
  REQUIRE(build != nullptr);
  for (const Layout& l : table_layouts()) {
    INFO(l);
    // through Layout::tables on a fresh layout (the device tables first: nothing to copy from)
    Layout fresh(l.mask(), l.block_size());
    const LayoutTables& g = fresh.tables(gpu);
    REQUIRE(g.block_index.device() == gpu);
    require_same_tables(g, l.tables(Device::cpu()));
    // and the builder called directly
    require_same_tables(build(l, gpu), l.tables(Device::cpu()));
  }
}

}  // namespace test_layout
