#include "ringflow/base/error.h"

#include <cstring>

namespace ringflow {

std::string Error::describe() const {
  // Strip the build directory so the location reads "src/graph/graph.cpp:42".
  std::string path = file_ ? file_ : "?";
  for (const char* anchor : {"/src/", "/collectives/", "/datasets/", "/include/", "/tests/"}) {
    const auto pos = path.rfind(anchor);
    if (pos != std::string::npos) {
      path = path.substr(pos + 1);
      break;
    }
  }
  return std::string(what()) + " (at " + path + ":" + std::to_string(line_) + ")";
}

}  // namespace ringflow
