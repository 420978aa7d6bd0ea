// Small helpers shared by the data-layer tests: the data directory and TempDir (temp_dir.hpp).
#pragma once

#include "temp_dir.hpp"

#include <filesystem>

namespace hafrm::examples::test {

/// Directory data/ of the repository (set by CMake).
inline std::filesystem::path data_dir() { return HAFRM_DATA_DIR; }

}  // namespace hafrm::examples::test
