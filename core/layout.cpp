#include "core/layout.h"

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <ostream>
#include <unordered_map>

#include "core/layout_tables.h"

namespace tg {

struct Layout::Impl {
  std::int64_t B = 0, Mb = 0, Nb = 0, bs = 1, n = 0;
  std::uint64_t hash = 0;
  Tensor mask;                     // bool [B, Mb, Nb], CPU
  std::vector<std::uint8_t> host;  // same, as bytes
  mutable std::mutex mu;
  mutable std::unordered_map<Device, std::unique_ptr<LayoutTables>> tables;
  mutable std::map<std::string, std::shared_ptr<void>> attached;
};

namespace {

std::uint64_t fnv1a(const std::uint8_t* p, std::size_t n, std::uint64_t h = 1469598103934665603ull) {
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// One builder slot per device type. Atomics: registrars run at load time, lookups from any
// thread later.
std::array<std::atomic<LayoutTablesBuilder>, kNumDeviceTypes>& builders() {
  static std::array<std::atomic<LayoutTablesBuilder>, kNumDeviceTypes> slots{};
  return slots;
}

bool is_pow2(std::int64_t v) { return v >= 1 && (v & (v - 1)) == 0; }

LayoutTables build_host_tables(const Layout& l, const std::vector<std::uint8_t>& m) {
  const std::int64_t B = l.batch(), Mb = l.block_rows(), Nb = l.block_cols(), n = l.n_blocks();
  std::vector<std::int64_t> coords(static_cast<std::size_t>(n * 3)), index(m.size(), -1),
      row_off(static_cast<std::size_t>(B * Mb + 1), 0), col_off(static_cast<std::size_t>(B * Nb + 1), 0),
      col_blocks(static_cast<std::size_t>(n));
  std::int64_t k = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t r = 0; r < Mb; ++r) {
      for (std::int64_t c = 0; c < Nb; ++c) {
        std::size_t flat = static_cast<std::size_t>((b * Mb + r) * Nb + c);
        if (!m[flat]) continue;
        coords[static_cast<std::size_t>(3 * k)] = b;
        coords[static_cast<std::size_t>(3 * k + 1)] = r;
        coords[static_cast<std::size_t>(3 * k + 2)] = c;
        index[flat] = k;
        ++col_off[static_cast<std::size_t>(b * Nb + c + 1)];
        ++k;
      }
      row_off[static_cast<std::size_t>(b * Mb + r + 1)] = k;
    }
  }
  for (std::size_t i = 1; i < col_off.size(); ++i) col_off[i] += col_off[i - 1];
  std::vector<std::int64_t> fill(col_off.begin(), col_off.end() - 1);
  for (std::int64_t i = 0; i < n; ++i) {  // compressed order visits each column in increasing r
    std::int64_t b = coords[static_cast<std::size_t>(3 * i)], c = coords[static_cast<std::size_t>(3 * i + 2)];
    col_blocks[static_cast<std::size_t>(fill[static_cast<std::size_t>(b * Nb + c)]++)] = i;
  }
  LayoutTables t;
  t.block_coords = from_vector(coords, {n, 3});
  t.block_index = from_vector(index, {B, Mb, Nb});
  t.row_offsets = from_vector(row_off, {B * Mb + 1});
  t.col_offsets = from_vector(col_off, {B * Nb + 1});
  t.col_blocks = from_vector(col_blocks, {n});
  return t;
}

}  // namespace

Layout::Layout(const Tensor& mask, std::int64_t block_size) {
  if (!mask.defined()) TG_THROW(ValueError, "Layout: mask is an undefined tensor");
  if (mask.dim() != 3) TG_THROW(ShapeError, "Layout: mask must be 3-d [B, M/bs, N/bs], got shape ", mask.shape());
  if (!is_pow2(block_size)) {
    TG_THROW(LayoutError, "Layout: block size must be a power of two >= 1, got ", block_size);
  }
  auto impl = std::make_shared<Impl>();
  impl->B = mask.size(0);
  impl->Mb = mask.size(1);
  impl->Nb = mask.size(2);
  impl->bs = block_size;
  std::vector<double> v = mask.to_vector<double>();
  impl->host.resize(v.size());
  std::vector<bool> as_bool(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    // A mask is binary: any other value (2, 0.5, NaN) is more likely a tensor of data passed
    // by mistake than a mask; layout_of() is the builder that reads non-zero as active.
    if (v[i] != 0.0 && v[i] != 1.0) {
      const std::int64_t k = static_cast<std::int64_t>(i), Mb = impl->Mb, Nb = impl->Nb;  // >= 1: i exists
      TG_THROW(LayoutError, "Layout: mask must hold only 0 / 1 (false / true), got ", v[i], " at block [",
               k / (Mb * Nb), ", ", k / Nb % Mb, ", ", k % Nb,
               "] (layout_of(dense, block_size) marks the blocks holding non-zeros)");
    }
    const bool on = v[i] != 0.0;
    impl->host[i] = on;
    as_bool[i] = on;
    impl->n += on;
  }
  impl->mask = from_vector<bool>(std::vector<bool>(as_bool.begin(), as_bool.end()), mask.shape());
  std::int64_t header[4] = {impl->B, impl->Mb, impl->Nb, impl->bs};
  impl->hash = fnv1a(impl->host.data(), impl->host.size(),
                     fnv1a(reinterpret_cast<const std::uint8_t*>(header), sizeof header));
  impl_ = std::move(impl);
}

const Layout::Impl& Layout::impl() const {
  if (!impl_) TG_THROW(ValueError, "Layout: use of an undefined layout");
  return *impl_;
}

std::int64_t Layout::batch() const { return impl().B; }
std::int64_t Layout::block_rows() const { return impl().Mb; }
std::int64_t Layout::block_cols() const { return impl().Nb; }
std::int64_t Layout::block_size() const { return impl().bs; }
std::int64_t Layout::n_blocks() const { return impl().n; }
const Tensor& Layout::mask() const { return impl().mask; }
const std::vector<std::uint8_t>& Layout::mask_host() const { return impl().host; }
std::uint64_t Layout::hash() const { return impl().hash; }

double Layout::density() const {
  std::int64_t total = batch() * block_rows() * block_cols();
  return total ? static_cast<double>(n_blocks()) / static_cast<double>(total) : 0.0;
}

bool Layout::active(std::int64_t b, std::int64_t r, std::int64_t c) const {
  const Impl& i = impl();
  if (b < 0 || b >= i.B || r < 0 || r >= i.Mb || c < 0 || c >= i.Nb) {
    TG_THROW(ValueError, "Layout::active: block (", b, ", ", r, ", ", c, ") outside [", i.B, ", ", i.Mb, ", ", i.Nb,
             "]");
  }
  return i.host[static_cast<std::size_t>((b * i.Mb + r) * i.Nb + c)] != 0;
}

const LayoutTables& Layout::tables(Device device) const {
  const Impl& i = impl();
  std::lock_guard<std::mutex> lock(i.mu);
  auto it = i.tables.find(device);
  if (it != i.tables.end()) return *it->second;
  if (!device.is_cpu()) {
    if (LayoutTablesBuilder build = layout_tables_builder(device.type)) {
      return *i.tables.emplace(device, std::make_unique<LayoutTables>(build(*this, device))).first->second;
    }
  }
  auto host_it = i.tables.find(Device::cpu());
  if (host_it == i.tables.end()) {
    host_it = i.tables.emplace(Device::cpu(), std::make_unique<LayoutTables>(build_host_tables(*this, i.host))).first;
  }
  if (device.is_cpu()) return *host_it->second;
  const LayoutTables& h = *host_it->second;
  auto t = std::make_unique<LayoutTables>(LayoutTables{h.block_coords.to(device), h.block_index.to(device),
                                                       h.row_offsets.to(device), h.col_offsets.to(device),
                                                       h.col_blocks.to(device)});
  return *i.tables.emplace(device, std::move(t)).first->second;
}

std::shared_ptr<void> Layout::attachment(const std::string& key,
                                         const std::function<std::shared_ptr<void>()>& make) const {
  const Impl& i = impl();
  std::lock_guard<std::mutex> lock(i.mu);
  auto it = i.attached.find(key);
  if (it == i.attached.end()) it = i.attached.emplace(key, make()).first;
  return it->second;
}

void register_layout_tables_builder(DeviceType type, LayoutTablesBuilder fn) {
  builders()[static_cast<std::size_t>(type)].store(fn, std::memory_order_release);
}

LayoutTablesBuilder layout_tables_builder(DeviceType type) {
  return builders()[static_cast<std::size_t>(type)].load(std::memory_order_acquire);
}

Layout Layout::transposed() const {
  const Impl& i = impl();
  std::vector<bool> t(i.host.size());
  for (std::int64_t b = 0; b < i.B; ++b)
    for (std::int64_t r = 0; r < i.Mb; ++r)
      for (std::int64_t c = 0; c < i.Nb; ++c)
        t[static_cast<std::size_t>((b * i.Nb + c) * i.Mb + r)] = i.host[static_cast<std::size_t>((b * i.Mb + r) * i.Nb + c)];
  return Layout(from_vector<bool>(t, {i.B, i.Nb, i.Mb}), i.bs);
}

bool operator==(const Layout& a, const Layout& b) {
  if (a.impl_ == b.impl_) return true;
  if (!a.defined() || !b.defined()) return false;
  const auto &x = a.impl(), &y = b.impl();
  return x.hash == y.hash && x.B == y.B && x.Mb == y.Mb && x.Nb == y.Nb && x.bs == y.bs && x.host == y.host;
}

std::ostream& operator<<(std::ostream& os, const Layout& l) {
  if (!l.defined()) return os << "Layout(undefined)";
  os << "Layout(batch=" << l.batch() << ", blocks=" << l.block_rows() << "x" << l.block_cols()
     << ", block_size=" << l.block_size() << ", active=" << l.n_blocks() << ", density=" << l.density() << ")";
  if (l.block_rows() <= 32 && l.block_cols() <= 64 && l.batch() <= 4) {
    const auto& m = l.mask_host();
    for (std::int64_t b = 0; b < l.batch(); ++b) {
      os << "\n batch " << b << ":";
      for (std::int64_t r = 0; r < l.block_rows(); ++r) {
        os << "\n  ";
        for (std::int64_t c = 0; c < l.block_cols(); ++c)
          os << (m[static_cast<std::size_t>((b * l.block_rows() + r) * l.block_cols() + c)] ? '#' : '.');
      }
    }
  }
  return os;
}

}  // namespace tg
