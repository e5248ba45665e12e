// At the end of the run, frees every device resource the library keeps for reuse (op
// caches, cuBLAS handles, pool segments), so that a leak checker run over the suite
// (compute-sanitizer --leak-check full) reports only real leaks.
#if defined(TG_CATCH2_V3)
#include <catch2/reporters/catch_reporter_event_listener.hpp>
#include <catch2/reporters/catch_reporter_registrars.hpp>
using TgListenerBase = Catch::EventListenerBase;
#else
// v2 declares its listener base only for translation units that ask for its interfaces.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>
using TgListenerBase = Catch::TestEventListenerBase;
#endif
#include "runtime/memory.h"

namespace {

class ReleaseDeviceResources : public TgListenerBase {
 public:
  using TgListenerBase::TgListenerBase;
  void testRunEnded(Catch::TestRunStats const& stats) override {
    tg::release_device_resources();
    TgListenerBase::testRunEnded(stats);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(ReleaseDeviceResources)
