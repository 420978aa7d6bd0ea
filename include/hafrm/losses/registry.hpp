// hafrm/losses/registry.hpp: every loss and weighting of the catalogue, built from a short string,
// so trainers and command lines select them without code.
//
// example-begin registry
//   auto policy = hafrm::make_policy_loss("sigmoid:beta=0.1,ipo:beta=0.5@0.2");  // weighted list
//   auto reward = hafrm::make_reward_loss("bt:label_smoothing=0.1,center=0.01");
//   auto weights = hafrm::make_weighting("cosine:steps=1000,start=0.2,end=0");
//   auto kto = hafrm::make_unpaired_loss("kto:beta=0.1");   // over KtoInputs (unpaired data)
//   hafrm::HybridLoss<hafrm::AnyRewardLoss, hafrm::AnyPolicyLoss, hafrm::AnyWeighting> haf{
//       reward, policy, weights};
// example-end
//
// Syntax: spec_parser.hpp. Names are the functors' kName; TRL's spellings (sigmoid, robust, hinge,
// bt) are kept as aliases. Parameters follow TRL where TRL has them, each bound to its field once
// (loss_params.hpp); unknown names or parameters, and values of the wrong type, are rejected with
// the list of valid ones. loss_catalogue() lists everything, with defaults, ranges and formulas.
//
// Adding a loss: write its struct (policy_base.hpp shows the shape), then one line below, e.g.
//   e.push_back(beta_only<BcoPair>("bco_pair", {"BcoPair", "−logσ(βΔc) − logσ(−βΔr)"}, false));
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "hafrm/losses/dpo_family.hpp"
#include "hafrm/losses/hybrid.hpp"
#include "hafrm/losses/kto.hpp"
#include "hafrm/losses/modifiers.hpp"
#include "hafrm/losses/reference_free.hpp"
#include "hafrm/losses/registry_builders.hpp"

namespace hafrm {

// One entry of the catalogue (loss_catalogue()).
struct LossInfo {
  std::string name;                  // what a spec writes
  std::string registry;              // policy, reward, unpaired or weighting
  std::string type;                  // the functor it builds
  std::vector<std::string> aliases;  // other accepted spellings
  std::string formula;               // one line; notation in docs/losses.md
  std::vector<ParamInfo> params;
};

namespace detail::registry {

inline const std::vector<Entry<AnyPolicyLoss>>& policy_entries() {
  static const std::vector<Entry<AnyPolicyLoss>> entries = [] {
    std::vector<Entry<AnyPolicyLoss>> e;
    // One line per loss. TRL's loss_type spellings (sigmoid, robust, hinge) stay as aliases.
    // TRL 1.16's sigmoid ignores label_smoothing; the smoothed form (cDPO) is `conservative`.
    e.push_back(beta_only<Dpo>("dpo", {"Dpo", "−logσ(βd)", {"sigmoid"}}, true));
    e.push_back(beta_smoothing<Dpo>("conservative", {"Dpo", "−(1−ε) logσ(βd) − ε logσ(−βd) (cDPO)"},
                                    true, Dpo{.label_smoothing = 0.1}));
    e.push_back(beta_smoothing<RobustDpo>(
        "robust_dpo", {"RobustDpo", "(−(1−ε) logσ(βd) + ε logσ(−βd)) / (1 − 2ε)", {"robust"}},
        true));
    e.push_back(beta_only<DpoHinge>("dpo_hinge", {"DpoHinge", "max(0, 1 − βd)", {"hinge"}}, true));
    e.push_back(beta_only<Ipo>("ipo", {"Ipo", "(s(Δc)/nc − s(Δr)/nr − 1/2β)² (TRL's IPO)"}, true));
    e.push_back(beta_only<Ipo>("ipo_sum", {"Ipo", "(d − 1/2β)² (HaF code)"}, true,
                               Ipo{.form = IpoForm::kSum}));
    e.push_back(beta_only<Ipo>("ipo_sqrt", {"Ipo", "β (d − 1/2β)² (HaF code)"}, true,
                               Ipo{.form = IpoForm::kSqrt}));
    e.push_back(beta_only<Ipo>("ipo_full", {"Ipo", "(βd − 1/2)² (HaF code)"}, true,
                               Ipo{.form = IpoForm::kFull}));
    e.push_back(beta_only<SigmoidNorm>("sigmoid_norm",
                                       {"SigmoidNorm", "−logσ(β (s(Δc)/nc − s(Δr)/nr))"}, true));
    e.push_back(dpo_entry<ExoPair>(
        "exo_pair", {"ExoPair", "σ(βd)(logσ(βd) − log(1−ε)) + σ(−βd)(logσ(−βd) − log ε)"}, true, {},
        {beta_of(ExoPair{}), smoothing_of(ExoPair{}, Range::open(0.0, 1.0))}));
    e.push_back(beta_only<NcaPair>("nca_pair",
                                   {"NcaPair", "−logσ(βΔc) − ½ logσ(−βΔc) − ½ logσ(−βΔr)"}, false));
    e.push_back(beta_only<BcoPair>("bco_pair", {"BcoPair", "−logσ(βΔc) − logσ(−βΔr)"}, false));
    e.push_back(
        beta_only<SppoHard>("sppo_hard", {"SppoHard", "(Δc − 1/2β)² + (Δr + 1/2β)²"}, false));
    e.push_back(beta_smoothing<Aot>(
        "aot", {"Aot", "δ = sort(πc − πr) − sort(ρc − ρr); −(1−ε) logσ(βδ) − ε logσ(−βδ)"}, false));
    e.push_back(beta_smoothing<AotUnpaired>(
        "aot_unpaired", {"AotUnpaired", "δ = sort(Δc) − sort(Δr); as aot"}, false));
    e.push_back(beta_only<ApoZero>("apo_zero", {"ApoZero", "(1 − σ(βΔc)) + σ(βΔr)"}, false));
    e.push_back(beta_only<ApoDown>("apo_down", {"ApoDown", "σ(βΔc) + (1 − σ(β(Δc − Δr)))"}, false));
    e.push_back(dpo_entry<DiscoPop>(
        "discopop", {"DiscoPop", "z = βd, m = σ(z/τ): −logσ(z)(1 − m) + e^−z m"}, true, {},
        {beta_of(DiscoPop{}),
         bind("discopop_tau", HAFRM_REGISTRY_FIELD(DiscoPop, tau), DiscoPop{}, Range::scale())}));
    // sft accepts an f-divergence (TRL) but does not use it: it reads no log-ratio.
    {
      auto params = f_divergence_decls();
      params.push_back(use_weighting_decl());
      e.push_back({"sft",
                   params,
                   [](const Params& p) {
                     parse_f_divergence(p, true);
                     return with_weighting(ChosenNll{.token_weighted = true}, p);
                   },
                   true,
                   {},
                   "−Σπc / Σnc over the batch (TRL's sft)",
                   "ChosenNll"});
    }
    e.push_back(plain_entry<AnyPolicyLoss>(
        "chosen_nll", {"ChosenNll", "−πc/nc (HaF code's \"slic\")", {"nll"}}, ChosenNll{},
        {bind("token_weighted", HAFRM_REGISTRY_FIELD(ChosenNll, token_weighted), ChosenNll{})}));
    const Cpo cpo{};
    e.push_back(plain_entry<AnyPolicyLoss>(
        "cpo",
        {"Cpo", "sigmoid, hinge, ipo or simpo on ℓ = r(πc) − r(πr), plus cpo_alpha · (−Σπc/Σnc)"},
        cpo,
        {beta_of(cpo),
         bind_choice("loss_type", HAFRM_REGISTRY_FIELD(Cpo, loss), cpo,
                     {{"sigmoid", CpoLoss::kSigmoid},
                      {"hinge", CpoLoss::kHinge},
                      {"ipo", CpoLoss::kIpo},
                      {"simpo", CpoLoss::kSimpo}}),
         smoothing_of(cpo),
         bind("simpo_gamma", HAFRM_REGISTRY_FIELD(Cpo, gamma), cpo, Range::weight()),
         bind("alpha", HAFRM_REGISTRY_FIELD(Cpo, alpha), cpo, Range::coefficient()),
         bind("cpo_alpha", HAFRM_REGISTRY_FIELD(Cpo, cpo_alpha), cpo, Range::weight())}));
    auto simpo_fields = [](const Simpo& proto) {
      return std::vector<Binding<Simpo>>{
          beta_of(proto),
          bind("simpo_gamma", HAFRM_REGISTRY_FIELD(Simpo, gamma), proto, Range::weight()),
          smoothing_of(proto),
          bind("alpha", HAFRM_REGISTRY_FIELD(Simpo, alpha), proto, Range::coefficient())};
    };
    e.push_back(plain_entry<AnyPolicyLoss>(
        "simpo", {"Simpo", "ℓ = qc − qr − γ/β; −(1−ε) logσ(βℓ) − ε logσ(−βℓ)"}, Simpo{},
        simpo_fields(Simpo{})));
    e.push_back(plain_entry<AnyPolicyLoss>(
        "alphapo", {"Simpo", "simpo with q → (1 − e^(−αq))/α (AlphaPO)"}, Simpo{.alpha = 0.25},
        simpo_fields(Simpo{.alpha = 0.25}), [](const Simpo& l, const Params& p) {
          HAFRM_CHECK_ARG(l.alpha != 0.0, p.fn(), p.arg("alpha"),
                          "expected a non-zero AlphaPO coefficient (alpha = 0 is simpo)");
        }));
    e.push_back(plain_entry<AnyPolicyLoss>(
        "orpo", {"Orpo", "−Σπc/Σnc − β logσ((qc − qr) − (log(1 − e^qc) − log(1 − e^qr)))"}, Orpo{},
        {beta_of(Orpo{}), bind_choice("nll_scope", HAFRM_REGISTRY_FIELD(Orpo, nll_scope), Orpo{},
                                      {{"response", OrpoNll::kResponse},
                                       {"prompt_and_response", OrpoNll::kPromptAndResponse}})}));
    // On pairs: each pair is a desirable (chosen) and an undesirable (rejected) completion.
    e.push_back(kto_entry<AnyPolicyLoss>());
    e.push_back(apo_zero_unpaired_entry<AnyPolicyLoss>());
    return e;
  }();
  return entries;
}

// ---- reward losses, unpaired losses and weightings ---------------------------------------------

inline const std::vector<Entry<AnyRewardLoss>>& reward_entries() {
  static const std::vector<Entry<AnyRewardLoss>> entries = [] {
    std::vector<Entry<AnyRewardLoss>> e;
    const BradleyTerry bt{};
    e.push_back(plain_entry<AnyRewardLoss>(
        "bradley_terry",
        {"BradleyTerry", "−(1−ε) logσ(d) − ε logσ(−d) + c (rc + rr)², d = rc − rr − m", {"bt"}}, bt,
        {smoothing_of(bt), bind("center", HAFRM_REGISTRY_FIELD(BradleyTerry, center_coefficient),
                                bt, Range::weight())}));
    e.push_back(plain_entry<AnyRewardLoss>(
        "reward_hinge", {"RewardHinge", "max(0, m − (rc − rr))", {"hinge"}}, RewardHinge{},
        {bind("margin", HAFRM_REGISTRY_FIELD(RewardHinge, margin), RewardHinge{},
              Range::closed(0.0, kMaxScale))}));
    e.push_back(plain_entry<AnyRewardLoss>(
        "plackett_luce",
        {"PlackettLuce", "−Σ_k (r_k − logsumexp_{j≥k} r_j) over [B, K] ranked scores"},
        PlackettLuce{}, {}));
    return e;
  }();
  return entries;
}

// The same names for unpaired completions (KtoInputs): desirable and undesirable on their own.
inline const std::vector<Entry<AnyUnpairedLoss>>& unpaired_entries() {
  static const std::vector<Entry<AnyUnpairedLoss>> entries{
      kto_entry<AnyUnpairedLoss>(), apo_zero_unpaired_entry<AnyUnpairedLoss>()};
  return entries;
}

inline const std::vector<Entry<AnyWeighting>>& weighting_entries() {
  static const std::vector<Entry<AnyWeighting>> entries = [] {
    std::vector<Entry<AnyWeighting>> e;
    const ConstantWeighting c{};
    const AlternateWeighting a{};
    const LinearWarmupWeighting w{};
    const CosineWeighting cos{};
    e.push_back(plain_entry<AnyWeighting>("constant", {"ConstantWeighting", "w_R, α fixed (HaF)"},
                                          c, {reward_weight_of(c), alpha_of(c)}));
    e.push_back(plain_entry<AnyWeighting>(
        "alternate",
        {"AlternateWeighting", "blocks of period steps: even policy only, odd reward only"}, a,
        {bind("period", HAFRM_REGISTRY_FIELD(AlternateWeighting, period), a, Range::at_least(1)),
         reward_weight_of(a), alpha_of(a)}));
    e.push_back(plain_entry<AnyWeighting>(
        "warmup", {"LinearWarmupWeighting", "α rises linearly from 0 over steps"}, w,
        {bind("steps", HAFRM_REGISTRY_FIELD(LinearWarmupWeighting, warmup_steps), w,
              Range::at_least(0)),
         reward_weight_of(w), alpha_of(w)}));
    e.push_back(plain_entry<AnyWeighting>(
        "cosine", {"CosineWeighting", "α follows a half cosine from start to end over steps"}, cos,
        {bind("steps", HAFRM_REGISTRY_FIELD(CosineWeighting, total_steps), cos, Range::at_least(1)),
         bind("start", HAFRM_REGISTRY_FIELD(CosineWeighting, alpha_start), cos, Range::weight()),
         bind("end", HAFRM_REGISTRY_FIELD(CosineWeighting, alpha_end), cos, Range::weight()),
         reward_weight_of(cos)}));
    return e;
  }();
  return entries;
}

// ---- lookup ------------------------------------------------------------------------------------

template <class Built>
std::vector<std::string> names_of(const std::vector<Entry<Built>>& entries) {
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.name);
  return names;
}

// Every spelling a spec may use, for error messages: "dpo", "sigmoid (= dpo)", ...
template <class Built>
std::vector<std::string> spellings_of(const std::vector<Entry<Built>>& entries) {
  std::vector<std::string> names;
  for (const auto& e : entries) {
    names.push_back(e.name);
    for (const auto& a : e.aliases) names.push_back(a + " (= " + e.name + ")");
  }
  return names;
}

template <class Built>
const Entry<Built>& find_entry(const std::vector<Entry<Built>>& entries, const std::string& name,
                               std::string_view fn, std::string_view what) {
  for (const auto& e : entries) {
    if (e.name == name) return e;
    for (const auto& a : e.aliases)
      if (a == name) return e;
  }
  HAFRM_CHECK_ARG(false, fn, "spec", "unknown ", what, " '", name,
                  "'; valid names: ", join(spellings_of(entries)));
  return entries.front();  // unreachable
}

// A spec that must name exactly one item without a weight (reward losses, weightings).
template <class Built>
Built make_single(std::string_view spec, const std::vector<Entry<Built>>& entries,
                  std::string_view fn, std::string_view what) {
  auto items = parse_spec(spec, fn, spellings_of(entries));
  HAFRM_CHECK_ARG(items.size() == 1, fn, "spec", "expected one ", what, ", got ", items.size(),
                  " in '", spec, "' (only policy losses form weighted lists)");
  HAFRM_CHECK_ARG(!items[0].weight, fn, "spec", "a ", what, " takes no '@' weight: '", spec, "'");
  const auto& e = find_entry(entries, items[0].name, fn, what);
  return e.build(Params(std::string(fn), items[0].name, items[0].name, e.params, items[0]));
}

template <class Built>
void describe(std::vector<LossInfo>& out, const std::vector<Entry<Built>>& entries,
              const char* registry) {
  for (const auto& e : entries) {
    LossInfo info{e.name, registry, e.type, e.aliases, e.formula, {}};
    for (const auto& p : e.params) info.params.push_back(p.info);
    out.push_back(std::move(info));
  }
}

}  // namespace detail::registry

// One policy loss, or a PolicyLossList when the spec names several (or gives a weight). Names are
// the catalogue's (loss_catalogue()) or their aliases; a built loss is named as the spec wrote it.
inline AnyPolicyLoss make_policy_loss(std::string_view spec) {
  namespace r = detail::registry;
  constexpr const char* fn = "make_policy_loss";
  const auto& entries = r::policy_entries();
  auto items = r::parse_spec(spec, fn, r::spellings_of(entries));
  std::vector<std::pair<double, AnyPolicyLoss>> built;
  std::map<std::string, int> seen;
  for (const auto& item : items) {
    const auto& e = r::find_entry(entries, item.name, fn, "policy loss");
    const int n = ++seen[item.name];
    // Repeated names get a suffix so that their metrics stay apart in a list.
    const std::string label = n == 1 ? item.name : item.name + "_" + std::to_string(n);
    auto loss = e.build(r::Params(fn, item.name, label, e.params, item));
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
// example-begin make_unpaired_loss Unpaired
//   auto kto = hafrm::make_unpaired_loss("kto:beta=0.2,desirable_weight=1.33");
//   auto z = hafrm::kto_kl_estimate(pi_kl, rho_kl);
//   auto out = kto(hafrm::KtoInputs{.policy = pi, .reference = rho, .desirable = labels, .kl = z});
// example-end
inline AnyUnpairedLoss make_unpaired_loss(std::string_view spec) {
  namespace r = detail::registry;
  return r::make_single(spec, r::unpaired_entries(), "make_unpaired_loss", "unpaired loss");
}

inline AnyWeighting make_weighting(std::string_view spec) {
  namespace r = detail::registry;
  return r::make_single(spec, r::weighting_entries(), "make_weighting", "weighting");
}

// The catalogue's names (aliases not included).
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

// Everything the registry can build: per entry its name, registry (policy, reward, unpaired,
// weighting), functor, aliases, one-line formula and parameters with defaults and ranges.
inline std::vector<LossInfo> loss_catalogue() {
  namespace r = detail::registry;
  std::vector<LossInfo> out;
  r::describe(out, r::policy_entries(), "policy");
  r::describe(out, r::reward_entries(), "reward");
  r::describe(out, r::unpaired_entries(), "unpaired");
  r::describe(out, r::weighting_entries(), "weighting");
  return out;
}

namespace detail::registry {
inline std::string param_text(const ParamInfo& p) {
  std::string s = "`" + p.name + "` " + p.default_value;
  if (!p.range.empty()) s += " in " + p.range;
  if (p.type.find('/') != std::string::npos) s += " (" + p.type + ")";
  if (!p.field.empty() && p.field != p.name) s += " → " + p.field;
  return s;
}
}  // namespace detail::registry

// The catalogue as Markdown tables, one per registry: what `haf_rm --list-losses` prints and what
// README.md's generated table holds (tests/test_loss_catalogue_api.cpp compares the two). The
// DPO family's common parameters are listed once, under the policy table.
inline std::string loss_catalogue_markdown() {
  namespace r = detail::registry;
  std::string s, current, shared;
  auto end_table = [&] {
    if (!shared.empty())
      s += "\n◆ any f-divergence, ◇ reverse_kl only; both also take " + shared + ".\n";
    shared.clear();
  };
  for (const auto& l : loss_catalogue()) {
    if (l.registry != current) {
      end_table();
      current = l.registry;
      s += (s.empty() ? "" : "\n") + std::string("#### ") + current + "\n\n";
      s += "| name | functor | formula | parameters: default, range |\n|---|---|---|---|\n";
    }
    std::string names = "`" + l.name + "`";
    for (const auto& a : l.aliases) names += ", `" + a + "`";
    std::string params, mark;
    for (const auto& p : l.params) {
      if (p.shared) {
        if (p.name == "f_divergence_type") mark = p.type == "reverse_kl" ? "◇" : "◆";
        if (shared.find("`" + p.name + "`") == std::string::npos && p.type != "reverse_kl")
          shared += (shared.empty() ? "" : "; ") + r::param_text(p);
        continue;
      }
      params += (params.empty() ? "" : "; ") + r::param_text(p);
    }
    if (!mark.empty()) params += (params.empty() ? "" : "; ") + mark;
    if (params.empty()) params = "—";
    s += "| " + names + " | `" + l.type + "` | " + l.formula + " | " + params + " |\n";
  }
  end_table();
  return s;
}

}  // namespace hafrm
