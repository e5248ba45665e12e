#include "nn/sparse_linear.h"

#include <cmath>
#include <iomanip>
#include <sstream>
#include <vector>

#include "autograd/grad_mode.h"
#include "ops/copy/copy.h"
#include "ops/elementwise/elementwise.h"
#include "ops/factory/factory.h"
#include "ops/shape/shape_ops.h"
#include "ops/sparse_convert/sparse_convert.h"
#include "ops/sparse_matmul/sparse_matmul.h"

namespace tg::nn {

namespace {

constexpr const char* kName = "BlockSparseLinear";

void check_layout(const Layout& l) {
  if (!l.defined()) TG_THROW(LayoutError, kName, ": layout is undefined");
  if (l.batch() != 1) {
    TG_THROW(LayoutError, kName, ": layout must have batch 1 ([1, out/bs, in/bs]), got batch ", l.batch(), " (shape [",
             l.batch(), ", ", l.block_rows(), ", ", l.block_cols(), "])");
  }
}

// Active blocks of each block-row of a batch-1 layout.
std::vector<std::int64_t> row_counts(const Layout& l) {
  std::vector<std::int64_t> c(static_cast<std::size_t>(l.block_rows()), 0);
  const auto& m = l.mask_host();
  for (std::int64_t r = 0; r < l.block_rows(); ++r)
    for (std::int64_t k = 0; k < l.block_cols(); ++k)
      c[static_cast<std::size_t>(r)] += m[static_cast<std::size_t>(r * l.block_cols() + k)];
  return c;
}

}  // namespace

BlockSparseLinear::BlockSparseLinear(const Layout& layout, bool with_bias, TensorOptions opts, std::uint64_t seed)
    : Module(kName), in_features(0), out_features(0) {
  check_layout(layout);
  layout_ = layout;
  in_features = layout.cols();
  out_features = layout.rows();
  const std::int64_t bs = layout.block_size(), n = layout.n_blocks();
  const std::vector<std::int64_t> per_row = row_counts(layout);

  // Uniform draws in f32 on the CPU, scaled per block by its row's fan-in, then converted:
  // the same values on every device.
  std::vector<float> block_bound;
  block_bound.reserve(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < layout.block_rows(); ++r)
    for (std::int64_t k = 0; k < per_row[static_cast<std::size_t>(r)]; ++k)
      block_bound.push_back(
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(per_row[static_cast<std::size_t>(r)] * bs))));
  const TensorOptions host{.dtype = DType::f32, .device = Device::cpu()};
  NoGradGuard no_grad;
  Tensor w = rand_seeded({n, bs, bs}, seed * 2 + 1, host, -1.0, 1.0) * from_vector(block_bound, {n, 1, 1});
  weight = register_parameter("weight", to_device(to_dtype(w, opts.dtype), opts.device));
  if (with_bias) {
    std::vector<float> bound(static_cast<std::size_t>(out_features));
    for (std::int64_t o = 0; o < out_features; ++o) {
      const std::int64_t fan_in = per_row[static_cast<std::size_t>(o / bs)] * bs;
      bound[static_cast<std::size_t>(o)] =
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(fan_in > 0 ? fan_in : in_features)));
    }
    Tensor b = rand_seeded({out_features}, seed * 2 + 2, host, -1.0, 1.0) * from_vector(bound, {out_features});
    bias = register_parameter("bias", to_device(to_dtype(b, opts.dtype), opts.device));
  }
  // A copy: the layout's own mask must never change under it (nn::load writes buffers).
  layout_buffer_ = register_buffer("layout", to_device(clone(layout.mask()), opts.device));
}

std::shared_ptr<BlockSparseLinear> BlockSparseLinear::from_dense(const Linear& dense, const Layout& layout) {
  check_layout(layout);
  if (layout.rows() != dense.out_features || layout.cols() != dense.in_features) {
    TG_THROW(ShapeError, kName, "::from_dense: layout must cover the weight [out, in] = [", dense.out_features, ", ",
             dense.in_features, "], got [", layout.rows(), ", ", layout.cols(), "] (", layout.block_rows(), " x ",
             layout.block_cols(), " blocks of ", layout.block_size(), ")");
  }
  const TensorOptions opts{.dtype = dense.weight.dtype(), .device = dense.weight.device()};
  auto m = std::make_shared<BlockSparseLinear>(layout, dense.bias.defined(), opts);
  NoGradGuard no_grad;
  copy_bytes(m->weight, to_sparse(reshape(dense.weight, {1, dense.out_features, dense.in_features}), layout).data());
  if (dense.bias.defined()) copy_bytes(m->bias, dense.bias);
  return m;
}

Tensor BlockSparseLinear::forward(const Tensor& x) const {
  if (!x.defined() || x.dim() < 1 || x.size(-1) != in_features) {
    TG_THROW(ShapeError, kName, ": input must have last extent in_features = ", in_features, ", got shape ",
             x.defined() ? x.shape().str() : std::string("undefined"));
  }
  if (x.dtype() != weight.dtype()) {
    TG_THROW(DTypeError, kName, ": input dtype must be the weight's ", weight.dtype(), ", got ", x.dtype());
  }
  if (x.device() != weight.device()) {
    TG_THROW(DeviceError, kName, ": input must be on the weight's device ", weight.device(), ", got ", x.device());
  }
  Shape out_shape = x.shape();
  out_shape.dims().back() = out_features;
  // One product over every row: x as [1, R, in], rows padded to whole blocks (the product
  // tiles every dense extent by the block size).
  const std::int64_t R = x.numel() / in_features, bs = layout_.block_size();
  const std::int64_t padded = (R + bs - 1) / bs * bs;
  Tensor x3 = reshape(x, {1, R, in_features});
  if (padded != R) x3 = cat({x3, zeros({1, padded - R, in_features}, {.dtype = x.dtype(), .device = x.device()})}, 1);
  Tensor y = matmul(x3, weight_sparse(), MatmulOptions{.transpose_y = true});
  if (padded != R) y = slice(y, 1, 0, R);
  if (bias.defined()) y = y + bias;
  return reshape(y, out_shape);
}

void BlockSparseLinear::on_loaded() {
  Module::on_loaded();
  Layout loaded(to_device(layout_buffer_, Device::cpu()), layout_.block_size());
  if (!(loaded == layout_)) layout_ = loaded;
}

std::string BlockSparseLinear::extra_info() const {
  std::ostringstream os;
  os << std::setprecision(3) << "in " << in_features << ", out " << out_features << ", block " << layout_.block_size()
     << ", " << layout_.n_blocks() << " of " << layout_.block_rows() * layout_.block_cols() << " blocks ("
     << 100.0 * layout_.density() << "%)";
  return os.str();
}

}  // namespace tg::nn
