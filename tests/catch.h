// Catch2 v2/v3 compatibility for the test suite.
#pragma once

#if defined(TG_CATCH2_V3)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
using Catch::Approx;
/// Skips the rest of a test case with a message shown in the report.
#define TG_SKIP(msg) SKIP(msg)
#else
#include <catch2/catch.hpp>
#define TG_SKIP(msg) \
  do {               \
    WARN(msg);       \
    return;          \
  } while (0)
#endif
