// hafrm/model/best_of_n.hpp: best-of-N and listwise helpers over rewards: the ranking of N
// responses to one prompt (indices, best first) and the pick.
//
// example-begin rank_rewards
//   auto rewards = torch::tensor({0.5f, 2.0f, 0.5f, -1.0f});      // N responses to one prompt
//   hafrm::Ranking k = hafrm::rank_rewards(rewards);   // order {1, 0, 2, 3}, best 1
//   std::vector<int64_t> sizes{2, 2};                  // or several prompts' responses in a row
//   std::vector<hafrm::Ranking> g = hafrm::rank_groups(rewards, sizes);   // {1, 0}, {0, 1}
// example-end
//
// Ties: equal rewards keep their input order (the lower index ranks first, and is the pick), so a
// ranking is deterministic. +-inf are ordered like any value; a NaN reward is an error naming it.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

#include "hafrm/torch/checks.hpp"

namespace hafrm {

struct Ranking {
  std::vector<int64_t> order;  // indices into the responses, best (highest reward) first
  int64_t best = -1;           // order[0]
};

namespace detail {
inline torch::Tensor rewards_on_host(const torch::Tensor& rewards, std::string_view fn) {
  check_floating(rewards, fn, "rewards");
  check_dim(rewards, 1, fn, "rewards");
  return rewards.detach().to(torch::kCPU, torch::kDouble).contiguous();
}

// Ranks p[0, n) (stable: ties keep input order); `first` is p's index in the caller's tensor.
inline Ranking rank_span(const double* p, int64_t n, int64_t first, std::string_view fn) {
  for (int64_t i = 0; i < n; ++i)
    HAFRM_CHECK_ARG(!std::isnan(p[i]), fn, "rewards", "expected no NaN reward; reward ", first + i,
                    " is NaN");
  Ranking r;
  r.order.resize(static_cast<size_t>(n));
  std::iota(r.order.begin(), r.order.end(), int64_t{0});
  std::stable_sort(r.order.begin(), r.order.end(),
                   [p](int64_t a, int64_t b) { return p[a] > p[b]; });
  r.best = r.order.front();
  return r;
}
}  // namespace detail

// rewards [N], N >= 1: the ranking of the N responses (indices into rewards).
inline Ranking rank_rewards(const torch::Tensor& rewards) {
  constexpr const char* fn = "rank_rewards";
  auto r = detail::rewards_on_host(rewards, fn);
  HAFRM_CHECK_ARG(r.size(0) >= 1, fn, "rewards", "expected at least one reward, got none");
  return detail::rank_span(r.data_ptr<double>(), r.size(0), 0, fn);
}

// rewards [sum(group_sizes)]: consecutive groups (one prompt's responses each, every size >= 1),
// one ranking per group, with indices local to its group (0 .. size - 1).
inline std::vector<Ranking> rank_groups(const torch::Tensor& rewards,
                                        std::span<const int64_t> group_sizes) {
  constexpr const char* fn = "rank_groups";
  auto r = detail::rewards_on_host(rewards, fn);
  int64_t total = 0;
  for (size_t g = 0; g < group_sizes.size(); ++g) {
    HAFRM_CHECK_ARG(group_sizes[g] >= 1, fn, "group_sizes",
                    "expected every group to hold at least one response; group ", g, " has ",
                    group_sizes[g]);
    total += group_sizes[g];
  }
  HAFRM_CHECK_ARG(total == r.size(0), fn, "group_sizes", "expected sizes summing to ", r.size(0),
                  " (the number of rewards), got ", total);
  std::vector<Ranking> out;
  out.reserve(group_sizes.size());
  const double* p = r.data_ptr<double>();
  int64_t first = 0;
  for (const int64_t n : group_sizes) {
    out.push_back(detail::rank_span(p + first, n, first, fn));
    first += n;
  }
  return out;
}

}  // namespace hafrm
