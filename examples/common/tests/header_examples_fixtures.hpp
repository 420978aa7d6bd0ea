// What the data headers' examples (// example-begin ... // example-end in include/hafrm/data/)
// take as given. Built into hafrm_examples_data_tests (examples/common/CMakeLists.txt), tagged
// [data][header_examples].
#pragma once

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "hafrm/data/assemble.hpp"
#include "hafrm/data/lm_records.hpp"
#include "hafrm/data/messages.hpp"
#include "hafrm/data/score_records.hpp"
#include "temp_dir.hpp"

namespace hafrm_examples {

struct NoFixture {};

/// A small file of rows to score, one single and one best-of-N.
struct ScoreFile {
  hafrm::examples::test::TempDir dir;
  std::filesystem::path path = dir.write(
      "to_score.jsonl",
      "{\"prompt\":\"2+2?\",\"response\":\"4\"}\n"
      "{\"prompt\":[{\"role\":\"user\",\"content\":\"2+2?\"}],\"responses\":[\"4\",\"5\"]}\n");
};

/// A small corpus of prompt/response rows.
struct LmFile {
  hafrm::examples::test::TempDir dir;
  std::filesystem::path path =
      dir.write("corpus.jsonl",
                "{\"prompt\":\"2+2?\",\"response\":\"4\"}\n"
                "{\"prompt\":[{\"role\":\"user\",\"content\":\"3+3?\"}],\"response\":\"6\"}\n");
};

}  // namespace hafrm_examples
