// Deferred checks on a synchronous backend (the CPU): the verdict runs inside defer_check
// and its error propagates from there, in either mode. The CUDA side (queued verdicts, the
// synchronisations that raise them) is tested with gather in tests/ops/test_sparse_move.cpp.
#include "runtime/deferred_checks.h"

#include <cstddef>
#include <string>

#include "catch.h"
#include "runtime/error.h"

namespace test_deferred_checks {

using namespace tg;

TEST_CASE("deferred checks run at once on the CPU and throw from the call", "[runtime][deferred_checks]") {
  const bool prev = sync_checks();
  // Checks queued by earlier CUDA tests of this thread may still wait for a synchronisation;
  // CPU verdicts never add to them.
  const std::size_t queued = runtime::pending_deferred_checks();
  for (bool on : {false, true}) {
    set_sync_checks(on);
    REQUIRE(sync_checks() == on);
    int runs = 0;
    runtime::defer_check(current_stream(Device::cpu()), [&] { ++runs; });
    REQUIRE(runs == 1);
    REQUIRE(runtime::pending_deferred_checks() == queued);
    bool threw = false;
    try {
      runtime::defer_check(current_stream(Device::cpu()), [] { TG_THROW(ValueError, "op: idx out of range"); });
    } catch (const ValueError& e) {
      threw = std::string(e.what()) == "op: idx out of range";
    }
    REQUIRE(threw);
    REQUIRE(runtime::pending_deferred_checks() == queued);
    REQUIRE_NOTHROW(runtime::run_deferred_checks(Device::cpu()));
  }
  set_sync_checks(prev);
}

}  // namespace test_deferred_checks
