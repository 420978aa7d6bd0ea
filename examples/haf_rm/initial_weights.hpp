// initial_weights.hpp: the weights a run starts from instead of random ones (--init-from). The
// loader and its checks are init_from.hpp's; the training state (train_state.hpp) takes the
// result.
#pragma once

#include <cstdint>
#include <string>

#include "model.hpp"

namespace hafrm::examples::rm {

struct InitialWeights {
  HafTransformer model{nullptr};  // the loaded weights, on the CPU
  std::string source;             // the path given
  std::string fingerprint;        // FNV-1a of the weights file (checkpoint or model.safetensors)
  std::string objective;          // what it was trained for
  std::string template_name;      // its prompt template
  int64_t step = -1;              // its optimizer steps (-1: not recorded)
};

}  // namespace hafrm::examples::rm
