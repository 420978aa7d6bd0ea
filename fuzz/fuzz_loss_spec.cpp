// libFuzzer target: spec strings through hafrm's loss registry (include/hafrm/losses/registry.hpp):
// make_policy_loss, make_reward_loss and make_weighting, selected by the first input byte. A spec
// that builds is then evaluated once on a small fixed batch (policy and reward losses) or at a
// few steps including the extremes (weightings).
//
// Expected outcomes: an object, or a c10::Error raised by hafrm itself (its messages start with
// "hafrm::" and name the argument). Another exception, an error from inside LibTorch (an input
// hafrm should have checked first), a crash or a sanitizer report is a finding.
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <string_view>

#include <hafrm/losses/registry.hpp>

namespace {

[[noreturn]] void finding(const char* what, const std::string& spec, const char* message) {
  std::fprintf(stderr, "finding (%s) for spec '%s': %s\n", what, spec.c_str(), message);
  std::abort();
}

// hafrm's own errors are expected; anything torch raised on its own is not.
void expect_hafrm_error(const c10::Error& e, const std::string& spec) {
  const std::string msg = e.what_without_backtrace();
  if (msg.find("hafrm::") == std::string::npos) finding("error from LibTorch", spec, msg.c_str());
}

hafrm::PolicyInputs policy_batch() {
  const auto d = torch::kDouble;
  hafrm::PolicyInputs p;
  p.policy_chosen = torch::tensor({-3.0, -4.5, -2.0}, d);
  p.policy_rejected = torch::tensor({-5.0, -2.5, -2.0}, d);
  p.reference_chosen = torch::tensor({-4.0, -4.0, -2.5}, d);
  p.reference_rejected = torch::tensor({-4.0, -3.0, -1.0}, d);
  p.chosen_count = torch::tensor({3, 5, 2}, torch::kLong);
  p.rejected_count = torch::tensor({4, 2, 2}, torch::kLong);
  return p;
}

hafrm::RewardInputs reward_batch() {
  const auto d = torch::kDouble;
  return {.chosen = torch::tensor({1.0, -0.5, 0.0}, d),
          .rejected = torch::tensor({0.0, 0.5, 0.0}, d),
          .margin = torch::tensor({0.5, 1.0, 0.0}, d)};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);  // one input at a time; no thread-pool start-up per evaluation
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int which = data[0] % 3;
  const std::string spec(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (which == 0) {
      auto loss = hafrm::make_policy_loss(spec);
      static const auto batch = policy_batch();
      try {
        (void)loss(batch).loss;
      } catch (const c10::Error& e) {
        expect_hafrm_error(e, spec);  // e.g. a loss that needs per-token inputs
      }
    } else if (which == 1) {
      auto loss = hafrm::make_reward_loss(spec);
      static const auto batch = reward_batch();
      try {
        (void)loss(batch).loss;
      } catch (const c10::Error& e) {
        expect_hafrm_error(e, spec);
      }
    } else {
      auto w = hafrm::make_weighting(spec);
      for (const int64_t step : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000},
                                 int64_t{1} << 40, std::numeric_limits<int64_t>::max()})
        (void)w(step);
    }
  } catch (const c10::Error& e) {
    expect_hafrm_error(e, spec);
  } catch (const std::exception& e) {
    finding("unexpected exception", spec, e.what());
  }
  return 0;
}
