#include "runtime/device.h"

#include <ostream>

#include "runtime/backend.h"
#include "runtime/error.h"

namespace tg {

const char* device_type_name(DeviceType t) { return t == DeviceType::CPU ? "cpu" : "cuda"; }

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    std::size_t used = 0;
    int idx = -1;
    try {
      idx = std::stoi(s.substr(5), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == s.size() - 5 && idx >= 0) return cuda(idx);
  }
  TG_THROW(DeviceError, "Device::parse: expected \"cpu\", \"cuda\" or \"cuda:N\", got \"", s, "\"");
}

int cuda_device_count() {
  runtime::Backend* b = runtime::find_backend(DeviceType::CUDA);
  return b ? b->device_count() : 0;
}

bool cuda_available() { return cuda_device_count() > 0; }

int cuda_compute_capability(int device) {
  runtime::Backend* b = runtime::find_backend(DeviceType::CUDA);
  if (!b || device < 0 || device >= b->device_count()) {
    TG_THROW(DeviceError, "cuda_compute_capability: device cuda:", device, " does not exist (", cuda_device_count(),
             " CUDA device(s) visible)");
  }
  return b->compute_capability(device);
}

Device default_device() { return cuda_available() ? Device::cuda(0) : Device::cpu(); }

}  // namespace tg
