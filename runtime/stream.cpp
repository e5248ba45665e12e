#include "runtime/stream.h"

#include "runtime/backend.h"

namespace tg {

Stream current_stream(Device device) { return runtime::backend(device).current_stream(device); }
void set_current_stream(Stream stream) { runtime::backend(stream.device).set_current_stream(stream); }
Stream create_stream(Device device) { return runtime::backend(device).create_stream(device); }
void destroy_stream(Stream stream) { runtime::backend(stream.device).destroy_stream(stream); }
void synchronize(Stream stream) { runtime::backend(stream.device).synchronize(stream); }
void synchronize(Device device) { runtime::backend(device).synchronize_device(device); }

}  // namespace tg
