// What examples/haf_rm/data.hpp's header example (// example-begin haf_rm_data TrainSplit) takes
// as given: the shipped synthetic training split, default assembly options and the CPU. Built
// into the example trainers' test executable (examples/CMakeLists.txt), tagged [haf_rm].
#pragma once

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "data.hpp"

namespace hafrm_examples {

struct TrainSplit {
  std::string path = HAFRM_EXAMPLES_DATA_DIR "/synthetic/train.jsonl";
  hafrm::data::AssemblyOptions assembly{};
  torch::Device dev{torch::kCPU};
};

}  // namespace hafrm_examples
