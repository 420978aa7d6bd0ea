// hafrm/losses/reward.hpp: sequence-level reward-ranking losses on reward-head scores.
//
// example-begin reward Rewards
//   hafrm::RewardInputs in{.chosen = r_c, .rejected = r_r};       // [B] each
//   auto bt = hafrm::BradleyTerry{.center_coefficient = 0.01}(in);
//   auto pl = hafrm::PlackettLuce{}(scores);                        // [B, K], best first
//   auto pl2 = hafrm::PlackettLuce{}(in);                           // K = 2: [chosen, rejected]
// example-end
//
// Metrics: accuracy mean(1[r_c > r_r]), margin mean(r_c - r_r), reward mean/min/max.
#pragma once

#include <torch/torch.h>

#include <limits>

#include "hafrm/losses/loss_output.hpp"

namespace hafrm {

struct RewardInputs {
  torch::Tensor chosen;    // [B] rewards of the chosen responses
  torch::Tensor rejected;  // [B] rewards of the rejected responses
  torch::Tensor margin;    // optional [B] per-pair margin m (TRL / OpenRLHF "margin" column)
};

namespace detail {

struct CheckedRewards {
  torch::Tensor chosen, rejected, margin;
};

inline CheckedRewards check_rewards(const RewardInputs& in, std::string_view fn) {
  CheckedRewards c;
  c.chosen = check_batch_vector(in.chosen, fn, "inputs.chosen");
  c.rejected = check_batch_vector(in.rejected, fn, "inputs.rejected", c.chosen.size(0));
  check_same_device(c.chosen, c.rejected, fn, "inputs.chosen", "inputs.rejected");
  if (in.margin.defined()) {
    c.margin = check_batch_vector(in.margin, fn, "inputs.margin", c.chosen.size(0));
    check_same_device(c.chosen, c.margin, fn, "inputs.chosen", "inputs.margin");
  }
  return c;
}

inline void reward_metrics(LossOutput& out, const torch::Tensor& c, const torch::Tensor& r) {
  torch::NoGradGuard ng;
  auto both = torch::cat({c, r});
  out.metrics["accuracy"] = (c > r).to(torch::kFloat).mean();
  out.metrics["margin"] = (c - r).mean();
  out.metrics["reward_chosen"] = c.mean();
  out.metrics["reward_rejected"] = r.mean();
  out.metrics["reward_mean"] = both.mean();
  out.metrics["reward_min"] = both.min();
  out.metrics["reward_max"] = both.max();
}

}  // namespace detail

// Bradley-Terry: -(1-eps) logsigmoid(d) - eps logsigmoid(-d), d = r_c - r_r - m; eps > 0 is the
// conservative (label-smoothed) form. center_coefficient c adds c * (r_c + r_r)^2 per pair, whose
// batch mean is TRL's center-rewards term c * mean((r_c + r_r)^2).
struct BradleyTerry {
  double label_smoothing = 0.0;
  double center_coefficient = 0.0;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "bradley_terry";

  void validate() const {
    detail::check_half_open(label_smoothing, 0.0, 0.5, kName, "label_smoothing");
    detail::check_weight(center_coefficient, kName, "center_coefficient");
  }

  LossOutput operator()(const RewardInputs& in) const {
    validate();
    auto c = detail::check_rewards(in, kName);
    auto d = c.chosen - c.rejected;
    if (c.margin.defined()) d = d - c.margin;
    auto per = -torch::log_sigmoid(d);
    if (label_smoothing > 0.0)
      per = (1.0 - label_smoothing) * per - label_smoothing * torch::log_sigmoid(-d);
    if (center_coefficient > 0.0) per = per + center_coefficient * (c.chosen + c.rejected).square();
    LossOutput out{detail::reduce(per, reduction), {}};
    detail::reward_metrics(out, c.chosen, c.rejected);
    return out;
  }
};

// Hinge ranking: max(0, m - (r_c - r_r)), with m the per-pair margin or `margin` (default 1).
struct RewardHinge {
  double margin = 1.0;
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "reward_hinge";

  // Additive, so only bounded above: a tiny margin rounds to 0 in float32, which is harmless.
  void validate() const { detail::check_closed(margin, 0.0, detail::kMaxScale, kName, "margin"); }

  LossOutput operator()(const RewardInputs& in) const {
    validate();
    auto c = detail::check_rewards(in, kName);
    if (c.margin.defined()) {
      // As the scalar margin: a negative one would reward pairs ranked the wrong way round.
      auto ok = c.margin >= 0;  // NaN fails too
      if (!detail::values_hold(ok, kName, "inputs.margin", "expected every per-pair margin >= 0")) {
        const double first = c.margin.masked_select(~ok)[0].item<double>();
        HAFRM_CHECK_ARG(false, kName, "inputs.margin",
                        "expected every per-pair margin >= 0, found ", first);
      }
    }
    auto m = c.margin.defined() ? c.margin : torch::full_like(c.chosen, margin);
    auto per = torch::relu(m - (c.chosen - c.rejected));
    LossOutput out{detail::reduce(per, reduction), {}};
    detail::reward_metrics(out, c.chosen, c.rejected);
    return out;
  }
};

// Listwise Plackett-Luce over K ranked responses per prompt, scores [B, K] ordered best first:
// -sum_{k<K-1} (r_k - logsumexp_{j>=k} r_j) (the last rank's term is log 1). K = 2 reduces exactly
// to Bradley-Terry. Two or more trailing scores of -inf leave the order among them undefined (0/0):
// NaN, as for any likelihood of an impossible ranking.
// Metrics: accuracy = fraction of adjacent pairs in the right order, and the reward range.
struct PlackettLuce {
  Reduction reduction = Reduction::kMean;

  static constexpr const char* kName = "plackett_luce";

  void validate() const {}

  LossOutput operator()(const torch::Tensor& scores) const {
    detail::check_floating(scores, kName, "scores");
    HAFRM_CHECK_ARG(scores.dim() == 2, kName, "scores",
                    "expected [B, K] (K ranked responses per prompt, best first), got shape ",
                    scores.sizes());
    HAFRM_CHECK_ARG(scores.size(0) > 0, kName, "scores",
                    "must not be empty (an empty batch has no loss)");
    HAFRM_CHECK_ARG(scores.size(1) >= 2, kName, "scores",
                    "expected K >= 2 responses per prompt, got ", scores.size(1));
    auto s = detail::compute_dtype(scores);
    // Suffix log-sum-exp lse_k = logsumexp_{j>=k} r_j, row k of a [B, K, K] matrix with j < k
    // masked to -inf (K is the handful of ranked responses per prompt). The last rank's term is
    // log 1 = 0 whatever its score, so it is left out: a last-ranked score of -inf (a response
    // the model rules out) keeps the list's likelihood finite, and its gradient 0, where
    // logcumsumexp's backward would form -inf - -inf.
    const int64_t K = s.size(1);
    auto below = torch::ones({K, K}, s.options().dtype(torch::kBool)).tril(-1);  // j < k
    auto suffix = s.unsqueeze(1)
                      .expand({s.size(0), K, K})
                      .masked_fill(below, -std::numeric_limits<double>::infinity());
    auto lse = torch::logsumexp(suffix.narrow(1, 0, K - 1), 2);
    auto per = -(s.narrow(1, 0, K - 1) - lse).sum(1);
    LossOutput out{detail::reduce(per, reduction), {}};
    torch::NoGradGuard ng;
    using torch::indexing::Slice;
    auto hi = s.index({Slice(), Slice(0, -1)});
    auto lo = s.index({Slice(), Slice(1, torch::indexing::None)});
    out.metrics["accuracy"] = (hi > lo).to(torch::kFloat).mean();
    out.metrics["margin"] = (hi - lo).mean();
    out.metrics["reward_mean"] = s.mean();
    out.metrics["reward_min"] = s.min();
    out.metrics["reward_max"] = s.max();
    return out;
  }
  // A preference pair is the K = 2 ranking [chosen, rejected] (equal to Bradley-Terry), so that
  // Plackett-Luce can be the HaF reward term.
  LossOutput operator()(const RewardInputs& in) const {
    auto c = detail::check_rewards(in, kName);
    HAFRM_CHECK_ARG(!c.margin.defined(), kName, "inputs.margin",
                    "is not supported (Plackett-Luce has no margin); use bt or hinge");
    return (*this)(torch::stack({c.chosen, c.rejected}, 1));
  }
};

}  // namespace hafrm
