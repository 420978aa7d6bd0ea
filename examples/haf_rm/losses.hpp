// losses.hpp: the trainer's objective, built from spec strings ("bt", "sigmoid:beta=0.1",
// "constant:reward=1,alpha=0.2", "alternate:period=10").
//
// The specs are parsed by the library's registry (hafrm/losses/registry.hpp) when this hafrm has
// it. Older hafrm versions lack it; then a small parser here maps the same spec grammar onto the
// concrete functors, so the trainer's command line is the same either way.
//
//   auto objective = hafrm::examples::rm::make_objective("haf", "", "", "");
//   hafrm::HybridOutput out = objective.loss(f.rewards, f.policy, step);
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <hafrm/losses/hybrid.hpp>
#include <hafrm/losses/policy.hpp>
#include <hafrm/losses/reward.hpp>
#include <hafrm/losses/weighting.hpp>

// -DHAFRM_EXAMPLES_HAVE_LOSS_REGISTRY=0 forces the fallback (e.g. to compare the two parsers).
#ifndef HAFRM_EXAMPLES_HAVE_LOSS_REGISTRY
#if __has_include(<hafrm/losses/registry.hpp>)
#define HAFRM_EXAMPLES_HAVE_LOSS_REGISTRY 1
#else
#define HAFRM_EXAMPLES_HAVE_LOSS_REGISTRY 0
#endif
#endif
#if HAFRM_EXAMPLES_HAVE_LOSS_REGISTRY
#include <hafrm/losses/registry.hpp>
#endif

namespace hafrm::examples::rm {

// "name:key=value,key=value" split into its parts; shared by the fallback parser and by
// spec_param() (the trainer reads beta from the policy spec for the implicit reward).
struct Spec {
  std::string name;
  std::map<std::string, std::string> params;
};

inline Spec parse_spec(std::string_view text) {
  Spec s;
  const auto colon = text.find(':');
  s.name = std::string(text.substr(0, colon));
  if (s.name.empty()) throw std::invalid_argument("empty loss spec \"" + std::string(text) + "\"");
  if (colon == std::string_view::npos) return s;
  std::string_view rest = text.substr(colon + 1);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    const auto eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0)
      throw std::invalid_argument("spec \"" + std::string(text) + "\": expected key=value, got \"" +
                                  std::string(item) + "\"");
    s.params[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return s;
}

// The numeric parameter `key` of a spec, or `fallback` when the spec does not set it.
// Only the first loss of a weighted list ("sigmoid:beta=0.1,ipo:beta=0.5@0.2") is looked at.
inline double spec_param(std::string_view spec, const std::string& key, double fallback) {
  try {
    const auto s = parse_spec(spec);
    const auto it = s.params.find(key);
    return it == s.params.end() ? fallback : std::stod(it->second);
  } catch (const std::exception&) {
    return fallback;
  }
}

#if HAFRM_EXAMPLES_HAVE_LOSS_REGISTRY

using RewardLossFn = hafrm::AnyRewardLoss;
using PolicyLossFn = hafrm::AnyPolicyLoss;
using WeightingFn = hafrm::AnyWeighting;
inline RewardLossFn make_reward_loss(std::string_view s) { return hafrm::make_reward_loss(s); }
inline PolicyLossFn make_policy_loss(std::string_view s) { return hafrm::make_policy_loss(s); }
inline WeightingFn make_weighting(std::string_view s) { return hafrm::make_weighting(s); }

#else  // fallback until hafrm ships its registry

namespace detail {

// Reads the spec's parameters into the functor's fields; an unknown key is an error naming the
// keys this loss takes.
class Params {
 public:
  Params(Spec s, std::string kind) : spec_(std::move(s)), kind_(std::move(kind)) {}
  Params& num(const char* key, double& field) {
    if (auto v = take(key)) field = std::stod(*v);
    return *this;
  }
  Params& integer(const char* key, int64_t& field) {
    if (auto v = take(key)) field = std::stoll(*v);
    return *this;
  }
  Params& flag(const char* key, bool& field) {
    if (auto v = take(key)) field = (*v == "1" || *v == "true");
    return *this;
  }
  Params& text(const char* key, std::string& field) {
    if (auto v = take(key)) field = *v;
    return *this;
  }
  void done() const {
    if (spec_.params.empty()) return;
    std::string known;
    for (const auto& k : known_) known += (known.empty() ? "" : ", ") + k;
    throw std::invalid_argument(kind_ + " \"" + spec_.name + "\": unknown parameter \"" +
                                spec_.params.begin()->first +
                                "\" (takes: " + (known.empty() ? "none" : known) + ")");
  }

 private:
  std::optional<std::string> take(const char* key) {
    known_.push_back(key);
    auto it = spec_.params.find(key);
    if (it == spec_.params.end()) return std::nullopt;
    auto v = it->second;
    spec_.params.erase(it);
    return v;
  }
  Spec spec_;
  std::string kind_;
  std::vector<std::string> known_;
};

template <class Sig>
struct Erased;
template <class R, class A>
struct Erased<R(A)> {
  std::function<R(A)> fn;
  R operator()(A a) const {
    if (!fn) throw std::logic_error("hafrm examples: empty loss function");
    return fn(a);
  }
};

}  // namespace detail

using RewardLossFn = detail::Erased<hafrm::LossOutput(const hafrm::RewardInputs&)>;
using PolicyLossFn = detail::Erased<hafrm::LossOutput(const hafrm::PolicyInputs&)>;
using WeightingFn = detail::Erased<hafrm::HybridWeights(int64_t)>;

inline RewardLossFn make_reward_loss(std::string_view text) {
  const auto s = parse_spec(text);
  detail::Params p(s, "reward loss");
  RewardLossFn out;
  if (s.name == "bt" || s.name == "bradley_terry") {
    hafrm::BradleyTerry l;
    p.num("label_smoothing", l.label_smoothing).num("center", l.center_coefficient).done();
    l.validate();
    out.fn = l;
  } else if (s.name == "hinge" || s.name == "reward_hinge") {
    hafrm::RewardHinge l;
    p.num("margin", l.margin).done();
    l.validate();
    out.fn = l;
  } else {
    throw std::invalid_argument("unknown reward loss \"" + s.name + "\" (known: bt, hinge)");
  }
  return out;
}

inline PolicyLossFn make_policy_loss(std::string_view text) {
  const auto s = parse_spec(text);
  detail::Params p(s, "policy loss");
  PolicyLossFn out;
  if (s.name == "sigmoid" || s.name == "dpo") {
    hafrm::Dpo l;
    p.num("beta", l.beta).num("label_smoothing", l.label_smoothing);
    p.flag("reference_free", l.reference_free).done();
    l.validate();
    out.fn = l;
  } else if (s.name == "robust" || s.name == "robust_dpo") {
    hafrm::RobustDpo l;
    p.num("beta", l.beta).num("label_smoothing", l.label_smoothing).done();
    l.validate();
    out.fn = l;
  } else if (s.name == "hinge") {
    hafrm::DpoHinge l;
    p.num("beta", l.beta).done();
    l.validate();
    out.fn = l;
  } else if (s.name == "ipo") {
    hafrm::Ipo l;
    std::string form = "length";
    p.num("beta", l.beta).text("form", form).done();
    if (form == "length")
      l.form = hafrm::IpoForm::kLengthNormalised;
    else if (form == "sum")
      l.form = hafrm::IpoForm::kSum;
    else if (form == "sqrt")
      l.form = hafrm::IpoForm::kSqrt;
    else if (form == "full")
      l.form = hafrm::IpoForm::kFull;
    else
      throw std::invalid_argument("ipo: form must be length, sum, sqrt or full, got " + form);
    l.validate();
    out.fn = l;
  } else if (s.name == "simpo") {
    hafrm::SimPO l;
    p.num("beta", l.beta).num("gamma", l.gamma).num("label_smoothing", l.label_smoothing).done();
    l.validate();
    out.fn = l;
  } else if (s.name == "nll" || s.name == "sft" || s.name == "chosen_nll") {
    hafrm::ChosenNll l;
    p.flag("token_weighted", l.token_weighted).done();
    out.fn = l;
  } else {
    throw std::invalid_argument("unknown policy loss \"" + s.name +
                                "\" (known: sigmoid, robust, hinge, ipo, simpo, nll)");
  }
  return out;
}

inline WeightingFn make_weighting(std::string_view text) {
  const auto s = parse_spec(text);
  detail::Params p(s, "weighting");
  WeightingFn out;
  if (s.name == "constant") {
    hafrm::ConstantWeighting w;
    p.num("reward", w.reward_weight).num("alpha", w.alpha).done();
    w.validate();
    out.fn = w;
  } else if (s.name == "alternate") {
    hafrm::AlternateWeighting w;
    p.integer("period", w.period).num("reward", w.reward_weight).num("alpha", w.alpha).done();
    w.validate();
    out.fn = w;
  } else if (s.name == "warmup" || s.name == "linear_warmup") {
    hafrm::LinearWarmupWeighting w;
    p.integer("steps", w.warmup_steps).num("reward", w.reward_weight).num("alpha", w.alpha).done();
    w.validate();
    out.fn = w;
  } else if (s.name == "cosine") {
    hafrm::CosineWeighting w;
    p.integer("steps", w.total_steps).num("reward", w.reward_weight);
    p.num("start", w.alpha_start).num("end", w.alpha_end).done();
    w.validate();
    out.fn = w;
  } else {
    throw std::invalid_argument("unknown weighting \"" + s.name +
                                "\" (known: constant, alternate, warmup, cosine)");
  }
  return out;
}

#endif  // HAFRM_EXAMPLES_HAVE_LOSS_REGISTRY

using HybridObjective = hafrm::HybridLoss<RewardLossFn, PolicyLossFn, WeightingFn>;

// What an objective name means. The score is what the evaluation ranks pairs by: the reward
// head for bt and haf, DPO's implicit reward beta * (logp - ref) for dpo.
struct ObjectiveSpec {
  std::string objective;  // "bt" | "haf" | "dpo"
  std::string reward_loss, policy_loss, weighting;
  bool score_is_implicit = false;
  double beta = 0.1;  // for the implicit reward beta * (logp - ref)
};

// Fills the objective's defaults for the specs left empty: bt = alpha 0, haf = HaF defaults
// (w_R 1, alpha 0.2, beta 0.1), dpo = w_R 0, alpha 1.
inline ObjectiveSpec resolve_objective(const std::string& objective, std::string reward_loss,
                                       std::string policy_loss, std::string weighting) {
  std::string default_weighting;
  if (objective == "bt")
    default_weighting = "constant:reward=1,alpha=0";
  else if (objective == "haf")
    default_weighting = "constant:reward=1,alpha=0.2";
  else if (objective == "dpo")
    default_weighting = "constant:reward=0,alpha=1";
  else
    throw std::invalid_argument("--objective must be bt, haf or dpo, got \"" + objective + "\"");
  ObjectiveSpec s;
  s.objective = objective;
  s.reward_loss = reward_loss.empty() ? "bt" : std::move(reward_loss);
  s.policy_loss = policy_loss.empty() ? "sigmoid:beta=0.1" : std::move(policy_loss);
  s.weighting = weighting.empty() ? default_weighting : std::move(weighting);
  s.score_is_implicit = objective == "dpo";
  s.beta = spec_param(s.policy_loss, "beta", 0.1);
  return s;
}

inline HybridObjective make_objective(const ObjectiveSpec& s) {
  return HybridObjective{make_reward_loss(s.reward_loss), make_policy_loss(s.policy_loss),
                         make_weighting(s.weighting)};
}

}  // namespace hafrm::examples::rm
