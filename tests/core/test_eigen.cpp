#include <Eigen/Dense>

#include "core/eigen.h"
#include "util.h"

namespace test_eigen {

using namespace tg;

TEST_CASE("Eigen matrices convert to and from tensors", "[core][eigen]") {
  Eigen::MatrixXd m(2, 3);  // column-major storage
  m << 1, 2, 3, 4, 5, 6;
  Tensor t = from_eigen(m);
  REQUIRE(t.shape() == Shape{2, 3});
  REQUIRE(t.dtype() == DType::f64);
  REQUIRE(t.to_vector<double>() == std::vector<double>{1, 2, 3, 4, 5, 6});
  Tensor f = from_eigen(m, {.dtype = DType::bf16});
  REQUIRE(f.dtype() == DType::bf16);
  auto back = to_eigen<double>(matmul(t, transpose(t)));
  Eigen::MatrixXd ref = m * m.transpose();
  REQUIRE((back - ref).cwiseAbs().maxCoeff() < 1e-12);
  tgt::require_throws<ShapeError>([] { to_eigen(zeros({2, 2, 2})); }, {"to_eigen", "[2, 2, 2]"});
}

}  // namespace test_eigen
