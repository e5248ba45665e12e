// Device-side builders of a layout's index tables. A backend that can build the tables on
// its devices installs a builder for its device type at load time (the CUDA one lives in
// core/cuda/layout_tables.cu); Layout::tables uses it, and without one builds the tables
// on the CPU with plain loops and copies them over. Keeps core/layout.cpp free of #ifdefs.
#pragma once

#include "core/layout.h"

namespace tg {

/// Builds the index tables of `layout` on `device` (a device of the builder's type): the
/// same values as the CPU tables, as i64 tensors on that device, ordered on the device's
/// current stream. Must not call `layout.tables()` (the caller holds the layout's lock).
using LayoutTablesBuilder = LayoutTables (*)(const Layout& layout, Device device);

/// Installs `fn` as the builder for devices of `type` (the last call wins; nullptr
/// removes it). Meant for static registrars.
void register_layout_tables_builder(DeviceType type, LayoutTablesBuilder fn);

/// The builder installed for `type`, or nullptr when there is none.
LayoutTablesBuilder layout_tables_builder(DeviceType type);

}  // namespace tg
