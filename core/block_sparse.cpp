#include "core/block_sparse.h"

#include <ostream>

namespace tg {

void check_block_sparse(const char* op, const char* arg, const BlockSparseTensor& x) {
  if (!x.data().defined()) TG_THROW(ValueError, op, ": ", arg, " has undefined data");
  if (!x.layout().defined()) TG_THROW(LayoutError, op, ": ", arg, " has an undefined layout");
  const Layout& l = x.layout();
  Shape want{l.n_blocks(), l.block_size(), l.block_size()};
  if (x.data().shape() != want) {
    TG_THROW(LayoutError, op, ": ", arg, " data must have shape [n_blocks, bs, bs] = ", want, " for its layout (",
             l.n_blocks(), " active blocks of size ", l.block_size(), "), got ", x.data().shape());
  }
}

BlockSparseTensor::BlockSparseTensor(Tensor data, Layout layout) : data_(std::move(data)), layout_(std::move(layout)) {
  check_block_sparse("BlockSparseTensor", "data", *this);
}

BlockSparseTensor BlockSparseTensor::grad() const {
  Tensor g = data_.grad();
  return g.defined() ? BlockSparseTensor(g, layout_) : BlockSparseTensor();
}

std::ostream& operator<<(std::ostream& os, const BlockSparseTensor& x) {
  if (!x.defined()) return os << "BlockSparseTensor(undefined)";
  os << "BlockSparseTensor(shape=" << x.shape() << ", dtype=" << x.dtype() << ", device=" << x.device() << ",\n "
     << x.layout() << ",\n data=" << x.data() << ")";
  return os;
}

}  // namespace tg
