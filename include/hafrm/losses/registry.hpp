// hafrm/losses/registry.hpp: every loss and weighting of the catalogue, built from a short string,
// so trainers and command lines select them without code.
//
//   auto policy = hafrm::make_policy_loss("sigmoid:beta=0.1,ipo:beta=0.5@0.2");  // weighted list
//   auto reward = hafrm::make_reward_loss("bt:label_smoothing=0.1,center=0.01");
//   auto weights = hafrm::make_weighting("cosine:steps=1000,start=0.2,end=0");
//   auto kto = hafrm::make_unpaired_loss("kto:beta=0.1");   // over KtoInputs (unpaired data)
//   hafrm::HybridLoss<hafrm::AnyRewardLoss, hafrm::AnyPolicyLoss, hafrm::AnyWeighting> haf{
//       reward, policy, weights};
//
// Syntax: `name[:key=value,key=value...][@weight]`, several policy losses separated by commas (a
// comma-separated item without '=' or with ':' starts the next loss). The weight (default 1) may
// end any item of its loss. Names and parameters follow TRL where TRL has them; unknown names or
// parameters, and values of the wrong type, are rejected with the list of valid ones.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hafrm/losses/dpo_family.hpp"
#include "hafrm/losses/hybrid.hpp"
#include "hafrm/losses/kto.hpp"
#include "hafrm/losses/modifiers.hpp"
#include "hafrm/losses/reference_free.hpp"

namespace hafrm {

namespace detail {
template <>
inline constexpr const char* kAnyLossName<KtoInputs> = "unpaired_loss";
}  // namespace detail

// Type-erased unpaired loss: anything callable as LossOutput(const KtoInputs&).
using AnyUnpairedLoss = AnyLoss<KtoInputs>;

// Type-erased weighting schedule: anything callable as HybridWeights(int64_t step).
class AnyWeighting {
 public:
  AnyWeighting() = default;
  template <class W, class = std::enable_if_t<!std::is_same_v<std::decay_t<W>, AnyWeighting>>>
  AnyWeighting(W w, std::string name = "weighting")  // NOLINT: implicit by design
      : fn_([w = std::move(w)](int64_t step) { return w(step); }), name_(std::move(name)) {}
  HybridWeights operator()(int64_t step) const {
    TORCH_CHECK(fn_, "hafrm::AnyWeighting: called while empty");
    return fn_(step);
  }
  const std::string& name() const { return name_; }
  explicit operator bool() const { return static_cast<bool>(fn_); }

 private:
  std::function<HybridWeights(int64_t)> fn_;
  std::string name_;
};

namespace detail::registry {

enum class Kind { kNumber, kInteger, kBool, kChoice };

struct ParamDecl {
  std::string name;
  Kind kind = Kind::kNumber;
  std::vector<std::string> choices{};
};

// One `name:key=value,...@weight` item of a spec.
struct Item {
  std::string name;
  std::vector<std::pair<std::string, std::string>> params;
  std::optional<double> weight;
};

inline std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

inline std::optional<double> parse_number(std::string_view s) {
  const std::string str(s);
  if (str.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(str.c_str(), &end);
  if (end != str.c_str() + str.size() || errno == ERANGE) return std::nullopt;
  return v;
}

inline std::optional<int64_t> parse_integer(std::string_view s) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

inline std::optional<bool> parse_bool(std::string_view s) {
  if (s == "true" || s == "1") return true;
  if (s == "false" || s == "0") return false;
  return std::nullopt;
}

// Splits a spec into items; `valid` (the names) only feeds error messages.
inline std::vector<Item> parse_spec(std::string_view spec, std::string_view fn,
                                    const std::vector<std::string>& valid) {
  std::vector<Item> items;
  HAFRM_CHECK_ARG(!trim(spec).empty(), fn, "spec", "must name a loss; valid names: ", join(valid));
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view token = trim(spec.substr(start, comma - start));
    start = comma + 1;
    HAFRM_CHECK_ARG(!token.empty(), fn, "spec", "has an empty item in '", spec, "'");
    std::optional<double> weight;
    if (auto at = token.rfind('@'); at != std::string_view::npos) {
      auto w = parse_number(trim(token.substr(at + 1)));
      HAFRM_CHECK_ARG(w.has_value(), fn, "spec", "expected a number after '@' in '", token, "'");
      weight = w;
      token = trim(token.substr(0, at));
    }
    std::string_view param;
    const size_t colon = token.find(':');
    if (colon != std::string_view::npos || token.find('=') == std::string_view::npos) {
      Item item;
      item.name = std::string(trim(token.substr(0, colon)));
      HAFRM_CHECK_ARG(!item.name.empty(), fn, "spec", "expected a loss name before ':' in '", token,
                      "'; valid names: ", join(valid));
      items.push_back(std::move(item));
      if (colon != std::string_view::npos) {
        param = trim(token.substr(colon + 1));
        HAFRM_CHECK_ARG(!param.empty(), fn, "spec", "expected key=value after ':' in '", token,
                        "'");
      }
    } else {
      HAFRM_CHECK_ARG(!items.empty(), fn, "spec", "starts with a parameter ('", token,
                      "') instead of a name; valid names: ", join(valid));
      param = token;
    }
    Item& cur = items.back();
    if (weight) {
      HAFRM_CHECK_ARG(!cur.weight, fn, cur.name, "has two weights ('@') in '", spec, "'");
      cur.weight = weight;
    }
    if (!param.empty()) {
      const size_t eq = param.find('=');
      HAFRM_CHECK_ARG(eq != std::string_view::npos, fn, cur.name, "expected key=value, got '",
                      param, "'");
      std::string key(trim(param.substr(0, eq)));
      std::string value(trim(param.substr(eq + 1)));
      HAFRM_CHECK_ARG(!key.empty() && !value.empty(), fn, cur.name, "expected key=value, got '",
                      param, "'");
      for (const auto& [k, v] : cur.params)
        HAFRM_CHECK_ARG(k != key, fn, cur.name + ":" + key, "is given twice");
      cur.params.emplace_back(std::move(key), std::move(value));
    }
    if (comma == spec.size()) break;
  }
  return items;
}

// The parameters of one item, checked against its loss's declarations: unknown keys and values of
// the wrong type are rejected up front, whether or not the builder reads them.
class Params {
 public:
  Params(std::string fn, const std::string& loss, std::string label,
         const std::vector<ParamDecl>& decls, const Item& item)
      : fn_(std::move(fn)), loss_(loss), label_(std::move(label)) {
    std::vector<std::string> names;
    for (const auto& d : decls) names.push_back(d.name);
    for (const auto& [key, value] : item.params) {
      auto it = std::find_if(decls.begin(), decls.end(), [&](auto& d) { return d.name == key; });
      HAFRM_CHECK_ARG(it != decls.end(), fn_, arg(key), "is not a parameter of '", loss,
                      "'; valid parameters: ", names.empty() ? "(none)" : join(names));
      switch (it->kind) {
        case Kind::kNumber:
          HAFRM_CHECK_ARG(parse_number(value).has_value(), fn_, arg(key),
                          "expected a number, got '", value, "'");
          break;
        case Kind::kInteger:
          HAFRM_CHECK_ARG(parse_integer(value).has_value(), fn_, arg(key),
                          "expected an integer, got '", value, "'");
          break;
        case Kind::kBool:
          HAFRM_CHECK_ARG(parse_bool(value).has_value(), fn_, arg(key),
                          "expected true or false (or 1 / 0), got '", value, "'");
          break;
        case Kind::kChoice:
          HAFRM_CHECK_ARG(
              std::find(it->choices.begin(), it->choices.end(), value) != it->choices.end(), fn_,
              arg(key), "expected one of ", join(it->choices), ", got '", value, "'");
          break;
      }
      values_[key] = value;
    }
  }
  const std::string& fn() const { return fn_; }
  const std::string& loss() const { return loss_; }    // the registry name
  const std::string& label() const { return label_; }  // the built loss's name (metrics prefix)
  std::string arg(std::string_view key) const { return loss_ + ":" + std::string(key); }
  bool has(const std::string& key) const { return values_.count(key) > 0; }
  double number(const std::string& key, double fallback) const {
    return has(key) ? *parse_number(values_.at(key)) : fallback;
  }
  int64_t integer(const std::string& key, int64_t fallback) const {
    return has(key) ? *parse_integer(values_.at(key)) : fallback;
  }
  bool flag(const std::string& key, bool fallback) const {
    return has(key) ? *parse_bool(values_.at(key)) : fallback;
  }
  std::string choice(const std::string& key, std::string fallback) const {
    return has(key) ? values_.at(key) : fallback;
  }

 private:
  std::string fn_, loss_, label_;
  std::map<std::string, std::string> values_;
};

template <class Built>
struct Entry {
  std::string name;
  std::vector<ParamDecl> params;
  std::function<Built(const Params&)> build;
  bool accepts_f_divergence = false;
};

template <class Built>
const Entry<Built>& find_entry(const std::vector<Entry<Built>>& entries, const std::string& name,
                               std::string_view fn, std::string_view what) {
  for (const auto& e : entries)
    if (e.name == name) return e;
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.name);
  HAFRM_CHECK_ARG(false, fn, "spec", "unknown ", what, " '", name, "'; valid names: ", join(names));
  return entries.front();  // unreachable
}

// ---- policy losses -------------------------------------------------------------------------

inline const std::vector<ParamDecl>& f_divergence_decls() {
  static const std::vector<ParamDecl> d{
      {"f_divergence_type",
       Kind::kChoice,
       {"reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"}},
      {"f_alpha_divergence_coef", Kind::kNumber}};
  return d;
}

inline std::vector<ParamDecl> dpo_decls(std::vector<ParamDecl> own, bool modifiers = true) {
  for (const auto& d : f_divergence_decls()) own.push_back(d);
  own.push_back({"reference_free", Kind::kBool});
  if (modifiers) {
    own.push_back({"ld_alpha", Kind::kNumber});
    own.push_back({"use_weighting", Kind::kBool});
  }
  return own;
}

inline const std::vector<Entry<AnyPolicyLoss>>& policy_entries();

inline std::vector<std::string> f_divergence_loss_names() {
  std::vector<std::string> names;
  for (const auto& e : policy_entries())
    if (e.accepts_f_divergence) names.push_back(e.name);
  return names;
}

inline FDivergence parse_f_divergence(const Params& p, bool accepted) {
  FDivergence f;
  const auto type = p.choice("f_divergence_type", "reverse_kl");
  if (type == "forward_kl") f.type = FDivergenceType::kForwardKl;
  if (type == "js_divergence") f.type = FDivergenceType::kJsDivergence;
  if (type == "alpha_divergence") f.type = FDivergenceType::kAlphaDivergence;
  HAFRM_CHECK_ARG(
      !p.has("f_alpha_divergence_coef") || f.type == FDivergenceType::kAlphaDivergence, p.fn(),
      p.arg("f_alpha_divergence_coef"),
      "is only used with f_divergence_type=alpha_divergence, got f_divergence_type=", type);
  f.alpha = p.number("f_alpha_divergence_coef", f.alpha);
  HAFRM_CHECK_ARG(accepted || f.type == FDivergenceType::kReverseKl, p.fn(),
                  p.arg("f_divergence_type"), "must be reverse_kl for '", p.loss(), "' (got ", type,
                  "): only ", join(f_divergence_loss_names()),
                  " accept another f-divergence, since the f-DPO reparameterisation's log Z term "
                  "cancels only in the chosen - rejected difference");
  f.validate(p.loss());
  return f;
}

template <class L>
AnyPolicyLoss with_weighting(L loss, const Params& p) {
  if (!p.flag("use_weighting", false)) return AnyPolicyLoss(std::move(loss), p.label());
  HAFRM_CHECK_ARG(!sorts_batch<L>(), p.fn(), p.arg("use_weighting"), "is not available for '",
                  p.loss(), "': it sorts the batch, which would misalign WPO's per-pair weights");
  WpoWeighted<L> w{std::move(loss)};
  w.validate();
  return AnyPolicyLoss(std::move(w), p.label());
}

// Applies the DPO-family parameters every such loss shares, then LD-DPO and WPO when asked.
template <class L>
AnyPolicyLoss dpo_family(L loss, const Params& p, bool accepts_f_divergence) {
  auto f = parse_f_divergence(p, accepts_f_divergence);
  if constexpr (requires { loss.f_divergence; }) loss.f_divergence = f;
  if constexpr (requires { loss.reference_free; })
    loss.reference_free = p.flag("reference_free", loss.reference_free);
  loss.validate();
  if (p.has("ld_alpha")) {
    LengthDesensitised<L> ld{std::move(loss), p.number("ld_alpha", 0.5)};
    HAFRM_CHECK_ARG(ld.ld_alpha >= 0.0 && ld.ld_alpha <= 1.0, p.fn(), p.arg("ld_alpha"),
                    "expected a value in [0, 1], got ", ld.ld_alpha);
    return with_weighting(std::move(ld), p);
  }
  return with_weighting(std::move(loss), p);
}

// A DPO-family entry whose functor takes beta (and label_smoothing when `smoothing`).
template <class L>
Entry<AnyPolicyLoss> dpo_entry(std::string name, bool f_div, bool smoothing, L proto = {}) {
  std::vector<ParamDecl> own{{"beta", Kind::kNumber}};
  if (smoothing) own.push_back({"label_smoothing", Kind::kNumber});
  return {name, dpo_decls(own),
          [proto, smoothing, f_div](const Params& p) {
            L l = proto;
            l.beta = p.number("beta", l.beta);
            if constexpr (requires { l.label_smoothing; })
              if (smoothing) l.label_smoothing = p.number("label_smoothing", l.label_smoothing);
            return dpo_family(std::move(l), p, f_div);
          },
          f_div};
}

// The unpaired losses (Kto, ApoZeroUnpaired) share their parameters and builder, whether they
// are built for pairs (AnyPolicyLoss) or for unpaired completions (AnyUnpairedLoss).
inline const std::vector<ParamDecl>& unpaired_decls() {
  static const std::vector<ParamDecl> d{{"beta", Kind::kNumber},
                                        {"desirable_weight", Kind::kNumber},
                                        {"undesirable_weight", Kind::kNumber}};
  return d;
}

template <class Built, class L>
std::function<Built(const Params&)> unpaired_builder(L proto) {
  return [proto](const Params& p) {
    L l = proto;
    l.beta = p.number("beta", l.beta);
    l.desirable_weight = p.number("desirable_weight", l.desirable_weight);
    l.undesirable_weight = p.number("undesirable_weight", l.undesirable_weight);
    l.validate();
    return Built(l, p.label());
  };
}

inline const std::vector<Entry<AnyPolicyLoss>>& policy_entries() {
  static const std::vector<Entry<AnyPolicyLoss>> entries = [] {
    std::vector<Entry<AnyPolicyLoss>> e;
    // TRL 1.16's sigmoid ignores label_smoothing; the smoothed form (cDPO) is `conservative`.
    e.push_back(dpo_entry<Dpo>("sigmoid", true, false));
    e.push_back(dpo_entry<Dpo>("conservative", true, true, Dpo{.label_smoothing = 0.1}));
    e.push_back(dpo_entry<RobustDpo>("robust", true, true));
    e.push_back(dpo_entry<DpoHinge>("hinge", true, false));
    e.push_back(dpo_entry<Ipo>("ipo", true, false));
    e.push_back(dpo_entry<Ipo>("ipo_sum", true, false, Ipo{.form = IpoForm::kSum}));
    e.push_back(dpo_entry<Ipo>("ipo_sqrt", true, false, Ipo{.form = IpoForm::kSqrt}));
    e.push_back(dpo_entry<Ipo>("ipo_full", true, false, Ipo{.form = IpoForm::kFull}));
    e.push_back(dpo_entry<SigmoidNorm>("sigmoid_norm", true, false));
    e.push_back(dpo_entry<ExoPair>("exo_pair", true, true));
    e.push_back(dpo_entry<NcaPair>("nca_pair", false, false));
    e.push_back(dpo_entry<BcoPair>("bco_pair", false, false));
    e.push_back(dpo_entry<SppoHard>("sppo_hard", false, false));
    e.push_back(dpo_entry<Aot>("aot", false, true));
    e.push_back(dpo_entry<AotUnpaired>("aot_unpaired", false, true));
    e.push_back(dpo_entry<ApoZero>("apo_zero", false, false));
    e.push_back(dpo_entry<ApoDown>("apo_down", false, false));
    {
      auto d = dpo_entry<DiscoPop>("discopop", true, false);
      d.params.insert(d.params.begin() + 1, {"discopop_tau", Kind::kNumber});
      d.build = [](const Params& p) {
        DiscoPop l;
        l.beta = p.number("beta", l.beta);
        l.tau = p.number("discopop_tau", l.tau);
        return dpo_family(std::move(l), p, true);
      };
      e.push_back(std::move(d));
    }
    // sft accepts an f-divergence (TRL) but does not use it: it reads no log-ratio.
    e.push_back({"sft",
                 {f_divergence_decls()[0], f_divergence_decls()[1], {"use_weighting", Kind::kBool}},
                 [](const Params& p) {
                   parse_f_divergence(p, true);
                   return with_weighting(ChosenNll{.token_weighted = true}, p);
                 },
                 true});
    e.push_back({"nll", {{"token_weighted", Kind::kBool}}, [](const Params& p) {
                   ChosenNll l{.token_weighted = p.flag("token_weighted", false)};
                   return AnyPolicyLoss(l, p.label());
                 }});
    e.push_back({"cpo",
                 {{"beta", Kind::kNumber},
                  {"loss_type", Kind::kChoice, {"sigmoid", "hinge", "ipo", "simpo"}},
                  {"label_smoothing", Kind::kNumber},
                  {"simpo_gamma", Kind::kNumber},
                  {"alpha", Kind::kNumber},
                  {"cpo_alpha", Kind::kNumber}},
                 [](const Params& p) {
                   Cpo l;
                   l.beta = p.number("beta", l.beta);
                   const auto type = p.choice("loss_type", "sigmoid");
                   if (type == "hinge") l.loss = CpoLoss::kHinge;
                   if (type == "ipo") l.loss = CpoLoss::kIpo;
                   if (type == "simpo") l.loss = CpoLoss::kSimPO;
                   l.label_smoothing = p.number("label_smoothing", l.label_smoothing);
                   l.gamma = p.number("simpo_gamma", l.gamma);
                   l.alpha = p.number("alpha", l.alpha);
                   l.cpo_alpha = p.number("cpo_alpha", l.cpo_alpha);
                   l.validate();
                   return AnyPolicyLoss(l, p.label());
                 }});
    auto simpo = [](double default_alpha, bool alphapo) {
      return [default_alpha, alphapo](const Params& p) {
        SimPO l{.alpha = default_alpha};
        l.beta = p.number("beta", l.beta);
        l.gamma = p.number("simpo_gamma", l.gamma);
        l.label_smoothing = p.number("label_smoothing", l.label_smoothing);
        l.alpha = p.number("alpha", l.alpha);
        HAFRM_CHECK_ARG(!alphapo || l.alpha != 0.0, p.fn(), p.arg("alpha"),
                        "expected a non-zero AlphaPO coefficient (alpha = 0 is simpo)");
        l.validate();
        return AnyPolicyLoss(l, p.label());
      };
    };
    const std::vector<ParamDecl> simpo_decls{{"beta", Kind::kNumber},
                                             {"simpo_gamma", Kind::kNumber},
                                             {"label_smoothing", Kind::kNumber},
                                             {"alpha", Kind::kNumber}};
    e.push_back({"simpo", simpo_decls, simpo(0.0, false)});
    e.push_back({"alphapo", simpo_decls, simpo(0.25, true)});
    e.push_back({"orpo",
                 {{"beta", Kind::kNumber},
                  {"nll_scope", Kind::kChoice, {"response", "prompt_and_response"}}},
                 [](const Params& p) {
                   Orpo l;
                   l.beta = p.number("beta", l.beta);
                   if (p.choice("nll_scope", "response") == "prompt_and_response")
                     l.nll_scope = OrpoNll::kPromptAndResponse;
                   l.validate();
                   return AnyPolicyLoss(l, p.label());
                 }});
    // On pairs: each pair is a desirable (chosen) and an undesirable (rejected) completion.
    e.push_back({"kto", unpaired_decls(), unpaired_builder<AnyPolicyLoss>(Kto{})});
    e.push_back({"apo_zero_unpaired", unpaired_decls(),
                 unpaired_builder<AnyPolicyLoss>(ApoZeroUnpaired{})});
    return e;
  }();
  return entries;
}

// ---- reward losses and weightings ------------------------------------------------------------

inline const std::vector<Entry<AnyRewardLoss>>& reward_entries() {
  static const std::vector<Entry<AnyRewardLoss>> entries = [] {
    std::vector<Entry<AnyRewardLoss>> e;
    e.push_back({"bt",
                 {{"label_smoothing", Kind::kNumber}, {"center", Kind::kNumber}},
                 [](const Params& p) {
                   BradleyTerry l;
                   l.label_smoothing = p.number("label_smoothing", l.label_smoothing);
                   l.center_coefficient = p.number("center", l.center_coefficient);
                   l.validate();
                   return AnyRewardLoss(l, p.loss());
                 }});
    e.push_back({"hinge", {{"margin", Kind::kNumber}}, [](const Params& p) {
                   RewardHinge l;
                   l.margin = p.number("margin", l.margin);
                   l.validate();
                   return AnyRewardLoss(l, p.loss());
                 }});
    e.push_back({"plackett_luce", {}, [](const Params& p) {
                   return AnyRewardLoss(PlackettLuce{}, p.loss());
                 }});
    return e;
  }();
  return entries;
}

// The same names for unpaired completions (KtoInputs): desirable and undesirable on their own.
inline const std::vector<Entry<AnyUnpairedLoss>>& unpaired_entries() {
  static const std::vector<Entry<AnyUnpairedLoss>> entries = [] {
    std::vector<Entry<AnyUnpairedLoss>> e;
    e.push_back({"kto", unpaired_decls(), unpaired_builder<AnyUnpairedLoss>(Kto{})});
    e.push_back({"apo_zero_unpaired", unpaired_decls(),
                 unpaired_builder<AnyUnpairedLoss>(ApoZeroUnpaired{})});
    return e;
  }();
  return entries;
}

inline const std::vector<Entry<AnyWeighting>>& weighting_entries() {
  static const std::vector<Entry<AnyWeighting>> entries = [] {
    std::vector<Entry<AnyWeighting>> e;
    const ParamDecl reward{"reward", Kind::kNumber}, alpha{"alpha", Kind::kNumber};
    e.push_back({"constant", {reward, alpha}, [](const Params& p) {
                   ConstantWeighting w;
                   w.reward_weight = p.number("reward", w.reward_weight);
                   w.alpha = p.number("alpha", w.alpha);
                   w.validate();
                   return AnyWeighting(w, p.loss());
                 }});
    e.push_back({"alternate", {{"period", Kind::kInteger}, reward, alpha}, [](const Params& p) {
                   AlternateWeighting w;
                   w.period = p.integer("period", w.period);
                   w.reward_weight = p.number("reward", w.reward_weight);
                   w.alpha = p.number("alpha", w.alpha);
                   w.validate();
                   return AnyWeighting(w, p.loss());
                 }});
    e.push_back({"warmup", {{"steps", Kind::kInteger}, reward, alpha}, [](const Params& p) {
                   LinearWarmupWeighting w;
                   w.warmup_steps = p.integer("steps", w.warmup_steps);
                   w.reward_weight = p.number("reward", w.reward_weight);
                   w.alpha = p.number("alpha", w.alpha);
                   w.validate();
                   return AnyWeighting(w, p.loss());
                 }});
    e.push_back(
        {"cosine",
         {{"steps", Kind::kInteger}, {"start", Kind::kNumber}, {"end", Kind::kNumber}, reward},
         [](const Params& p) {
           CosineWeighting w;
           w.total_steps = p.integer("steps", w.total_steps);
           w.alpha_start = p.number("start", w.alpha_start);
           w.alpha_end = p.number("end", w.alpha_end);
           w.reward_weight = p.number("reward", w.reward_weight);
           w.validate();
           return AnyWeighting(w, p.loss());
         }});
    return e;
  }();
  return entries;
}

template <class Built>
std::vector<std::string> names_of(const std::vector<Entry<Built>>& entries) {
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.name);
  return names;
}

// A spec that must name exactly one item without a weight (reward losses, weightings).
template <class Built>
Built make_single(std::string_view spec, const std::vector<Entry<Built>>& entries,
                  std::string_view fn, std::string_view what) {
  auto items = parse_spec(spec, fn, names_of(entries));
  HAFRM_CHECK_ARG(items.size() == 1, fn, "spec", "expected one ", what, ", got ", items.size(),
                  " in '", spec, "' (only policy losses form weighted lists)");
  HAFRM_CHECK_ARG(!items[0].weight, fn, "spec", "a ", what, " takes no '@' weight: '", spec, "'");
  const auto& e = find_entry(entries, items[0].name, fn, what);
  return e.build(Params(std::string(fn), e.name, e.name, e.params, items[0]));
}

}  // namespace detail::registry

// One policy loss, or a PolicyLossList when the spec names several (or gives a weight).
inline AnyPolicyLoss make_policy_loss(std::string_view spec) {
  namespace r = detail::registry;
  constexpr const char* fn = "make_policy_loss";
  const auto& entries = r::policy_entries();
  auto items = r::parse_spec(spec, fn, r::names_of(entries));
  std::vector<std::pair<double, AnyPolicyLoss>> built;
  std::map<std::string, int> seen;
  for (const auto& item : items) {
    const auto& e = r::find_entry(entries, item.name, fn, "policy loss");
    const int n = ++seen[item.name];
    // Repeated names get a suffix so that their metrics stay apart in a list.
    const std::string label = n == 1 ? e.name : e.name + "_" + std::to_string(n);
    auto loss = e.build(r::Params(fn, e.name, label, e.params, item));
    const double w = item.weight.value_or(1.0);
    detail::check_weight(w, fn, item.name + "@weight");
    built.emplace_back(w, std::move(loss));
  }
  if (built.size() == 1 && built[0].first == 1.0) return built[0].second;
  PolicyLossList list;
  for (auto& [w, l] : built) list.add(w, std::move(l));
  return AnyPolicyLoss(std::move(list), "policy_loss_list");
}

inline AnyRewardLoss make_reward_loss(std::string_view spec) {
  namespace r = detail::registry;
  return r::make_single(spec, r::reward_entries(), "make_reward_loss", "reward loss");
}

// An unpaired loss (kto, apo_zero_unpaired) over KtoInputs: completions labelled desirable or
// undesirable on their own, with the same names and parameters as the paired route.
//   auto kto = hafrm::make_unpaired_loss("kto:beta=0.2,desirable_weight=1.33");
//   auto out = kto(hafrm::KtoInputs{.policy = pi, .reference = rho, .desirable = d, .kl = z});
inline AnyUnpairedLoss make_unpaired_loss(std::string_view spec) {
  namespace r = detail::registry;
  return r::make_single(spec, r::unpaired_entries(), "make_unpaired_loss", "unpaired loss");
}

inline AnyWeighting make_weighting(std::string_view spec) {
  namespace r = detail::registry;
  return r::make_single(spec, r::weighting_entries(), "make_weighting", "weighting");
}

inline std::vector<std::string> policy_loss_names() {
  return detail::registry::names_of(detail::registry::policy_entries());
}
inline std::vector<std::string> reward_loss_names() {
  return detail::registry::names_of(detail::registry::reward_entries());
}
inline std::vector<std::string> unpaired_loss_names() {
  return detail::registry::names_of(detail::registry::unpaired_entries());
}
inline std::vector<std::string> weighting_names() {
  return detail::registry::names_of(detail::registry::weighting_entries());
}

}  // namespace hafrm
