#include <sstream>

#include "util.h"

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
}
