// Tests of tg::ProgressBar: the rendered line (bar, count, values, rate, ETA, clamping),
// durations, redrawing in place versus printing lines, errors. Nothing depends on timing:
// render() takes the rate and ETA as arguments, and the drawn lines are checked for their
// timing-free parts.
#include <sstream>

#include "util.h"

namespace test_progress {

using namespace tg;

TEST_CASE("ProgressBar renders the bar, the count, the values, the rate and the ETA", "[runtime][progress]") {
  ProgressOptions o{.desc = "train", .width = 10, .unit = "tok"};
  CHECK(ProgressBar::render(o, 3, 10, {{"loss", 2.34567}}, 1234.4, 75.0) ==
        "train [###.......] 3/10 loss 2.346 | 1234 tok/s | ETA 1m15s");
  // Unknown rate and ETA; done clamped into [0, total]; no description.
  ProgressOptions plain{.width = 4};
  CHECK(ProgressBar::render(plain, 0, 8, {}, -1, -1) == "[....] 0/8 | ETA ?");
  CHECK(ProgressBar::render(plain, 12, 8, {}, -1, 0) == "[####] 8/8 | ETA 0s");
  CHECK(ProgressBar::render(plain, -3, 8, {{"a", 1}, {"b", -0.5}}, 2, 3) ==
        "[....] 0/8 a 1.000 b -0.500 | 2 it/s | ETA 3s");
  CHECK(ProgressBar::format_duration(59.4) == "59s");
  CHECK(ProgressBar::format_duration(3599) == "59m59s");
  CHECK(ProgressBar::format_duration(7500) == "2h05m");
  CHECK(ProgressBar::format_duration(-1) == "?");
}

TEST_CASE("ProgressBar redraws in place or prints lines", "[runtime][progress]") {
  {
    std::ostringstream os;
    ProgressBar bar(4, {.width = 4, .redraw = 1, .out = &os});
    bar.update(1, {{"loss", 3.0}});
    bar.update(2, {{"loss", 2.5}});
    const std::string s = os.str();
    CHECK(s.rfind("\r[#...] 1/4 loss 3.000", 0) == 0);
    CHECK(s.find("\r[##..] 2/4 loss 2.500") != std::string::npos);
    CHECK(s.find('\n') == std::string::npos);  // one line, redrawn
    bar.print_line();                          // kept: ends with a newline
    CHECK(os.str().back() == '\n');
    bar.update(3);
    bar.close();
    bar.close();  // idempotent
    CHECK(os.str().substr(os.str().size() - 1) == "\n");
    CHECK(os.str().find("3/4") != std::string::npos);
  }
  {
    // Not redrawing: silent until print_line, then one plain line each time.
    std::ostringstream os;
    ProgressBar bar(2, {.width = 2, .redraw = 0, .out = &os});
    bar.update(1);
    CHECK(os.str().empty());
    bar.print_line();
    bar.update(2);
    bar.print_line();
    CHECK(os.str().find('\r') == std::string::npos);
    CHECK(os.str().rfind("[#.] 1/2", 0) == 0);
    CHECK(os.str().find("\n[##] 2/2") != std::string::npos);
  }
  tgt::require_throws<ValueError>([] { ProgressBar bar(0); }, {"ProgressBar", "total", "0"});
  tgt::require_throws<ValueError>([] { ProgressBar bar(3, {.width = 0}); }, {"ProgressBar", "width"});
}

}  // namespace test_progress
