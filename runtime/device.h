// Devices: the CPU and CUDA GPUs.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

namespace tg {

enum class DeviceType : std::uint8_t { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

/// A device: `Device::cpu()` or `Device::cuda(n)`. Parse from "cpu", "cuda", "cuda:1".
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::CPU, 0}; }
  static constexpr Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  /// Parses "cpu", "cuda" or "cuda:N"; throws tg::DeviceError on anything else.
  static Device parse(const std::string& s);

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const;
  friend bool operator==(const Device&, const Device&) = default;
};

std::ostream& operator<<(std::ostream& os, const Device& d);
const char* device_type_name(DeviceType t);

/// True when tilegrad was built with CUDA and at least one GPU is visible.
bool cuda_available();
/// Number of visible CUDA devices (0 in a CPU-only build or on a machine without a GPU).
int cuda_device_count();
/// Compute capability of CUDA device `device` as 10 * major + minor (90 for an H100 or H200).
/// Throws tg::DeviceError when no such device exists (always in a CPU-only build).
int cuda_compute_capability(int device);
/// The device a program should use by default: cuda:0 when available, else the CPU.
Device default_device();

}  // namespace tg

template <>
struct std::hash<tg::Device> {
  std::size_t operator()(const tg::Device& d) const noexcept {
    return (static_cast<std::size_t>(d.type) << 16) ^ static_cast<std::size_t>(d.index);
  }
};
