// Tests of the tuning knobs read from the environment (ops/common.h).
#include <cstdlib>
#include <string>

#include "ops/common.h"
#include "util.h"

namespace test_env_knobs {

using namespace tg;

namespace {

// Sets an environment variable for one scope and restores what it held.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value, 1);
  }
  ~EnvGuard() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

constexpr const char* kVar = "TG_TEST_KNOB_UNUSED_ELSEWHERE";

}  // namespace

TEST_CASE("env_power_of_two reads powers of two in range and refuses the rest", "[ops][env]") {
  ::unsetenv(kVar);
  REQUIRE(ops::env_power_of_two("op", kVar, 64) == 0);
  {
    EnvGuard g(kVar, "");
    REQUIRE(ops::env_power_of_two("op", kVar, 64) == 0);
  }
  for (const char* v : {"1", "2", "16", "64"}) {
    EnvGuard g(kVar, v);
    REQUIRE(ops::env_power_of_two("op", kVar, 64) == std::atoll(v));
  }
  for (const char* v : {"0", "3", "128", "-4", "8x", "x", "12"}) {
    EnvGuard g(kVar, v);
    tgt::require_throws<ValueError>([] { (void)ops::env_power_of_two("gather", kVar, 64); },
                                    {"gather", kVar, "power of two in [1, 64]", v});
  }
}

TEST_CASE("env_choice reads one of two words and refuses the rest", "[ops][env]") {
  ::unsetenv(kVar);
  REQUIRE(ops::env_choice("op", kVar, "mma", "wgmma") == 0);
  {
    EnvGuard g(kVar, "mma");
    REQUIRE(ops::env_choice("op", kVar, "mma", "wgmma") == 1);
  }
  {
    EnvGuard g(kVar, "wgmma");
    REQUIRE(ops::env_choice("op", kVar, "mma", "wgmma") == 2);
  }
  EnvGuard g(kVar, "tma");
  tgt::require_throws<ValueError>([] { (void)ops::env_choice("flash_attention", kVar, "mma", "wgmma"); },
                                  {"flash_attention", kVar, "mma or wgmma", "'tma'"});
}

}  // namespace test_env_knobs
