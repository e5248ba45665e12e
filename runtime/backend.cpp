#include "runtime/backend.h"

#include <array>

#include "runtime/error.h"

namespace tg::runtime {

namespace {
std::array<Backend*, kNumDeviceTypes>& table() {
  static std::array<Backend*, kNumDeviceTypes> t{};
  return t;
}
}  // namespace

Backend* find_backend(DeviceType type) { return table()[static_cast<int>(type)]; }

void register_backend(DeviceType type, Backend* b) { table()[static_cast<int>(type)] = b; }

Backend& backend(Device device) {
  Backend* b = find_backend(device.type);
  if (!b) {
    TG_THROW(DeviceError, "device ", device, ": tilegrad was built without the ", device_type_name(device.type),
             " backend");
  }
  int n = b->device_count();
  if (device.index < 0 || device.index >= n) {
    TG_THROW(DeviceError, "device ", device, ": expected an index in [0, ", n, "), ", n,
             " device(s) of this type are visible");
  }
  return *b;
}

}  // namespace tg::runtime
