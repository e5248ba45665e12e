// Checks of values that only the device holds (the range of an index tensor on a GPU).
//
// The kernel that reads the values also checks them and writes its finding where the host
// can read it; waiting for that on every call would stall the host behind the GPU once per
// op (a gather's range check cost 12-19 us a call that way). So by default an op queues the
// check's verdict and returns: the verdict runs once the device has finished the op, and
// its error is thrown from the calling thread's next synchronisation with the device
// (tg::synchronize, or a copy to the host: to(cpu), item(), printing). Kernels never trust
// the values they check (an out-of-range index reads 0 or writes nothing), so nothing runs
// out of bounds meanwhile. With sync checks on (tg::set_sync_checks(true), or the
// environment variable TG_SYNC_CHECKS=1) the op waits and throws from the call itself, as
// CPU ops always do.
#pragma once

#include <cstddef>
#include <functional>

#include "runtime/device.h"
#include "runtime/stream.h"

namespace tg {

/// Whether ops that check values held on a device wait for it and throw from the call
/// itself (true) or throw from the calling thread's next synchronisation with the device
/// (false, the default unless the environment variable TG_SYNC_CHECKS is 1). Process-wide.
void set_sync_checks(bool on);
/// The current setting of set_sync_checks.
bool sync_checks();

namespace runtime {

/// Runs `verdict` once the work queued on `stream` so far has finished. The verdict reads
/// what the device wrote and throws a tg::Error when the values fail the check. On a
/// synchronous backend (CPU) or with sync_checks() on, it runs before defer_check returns
/// (after waiting for the stream) and its error propagates from here; otherwise its error
/// is thrown by the calling thread's next synchronisation with stream.device
/// (run_deferred_checks). Verdicts whose work is done are run by later calls too, so the
/// queue stays short in loops that never synchronise.
void defer_check(Stream stream, std::function<void()> verdict);

/// Runs the calling thread's queued verdicts of `device` whose work has finished, then
/// throws the first error any verdict of `device` raised since the last call (the others
/// are dropped: one bad input is reported, not every op it reached). Backends call it
/// after each synchronisation with the host.
void run_deferred_checks(Device device);

/// Checks of the calling thread (all devices) whose outcome it has not been told yet:
/// verdicts still queued, and errors waiting for a synchronisation. For tests.
std::size_t pending_deferred_checks();

}  // namespace runtime
}  // namespace tg
