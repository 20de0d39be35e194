// expect_error(f, {"needle", ...}): runs f and expects a ringflow::Error
// whose message contains every needle (for the data-set unit tests).
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ringflow/base/error.h"

namespace rftest {

// Runs f, expects a ringflow::Error whose message contains every needle.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needles.front() << "'";
  } catch (const ringflow::Error& e) {
    for (const std::string& n : needles) {
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message '" << e.what() << "' lacks '" << n << "'";
    }
  }
}

}  // namespace rftest
