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
// Adding a loss to the catalogue: write its struct (policy_base.hpp shows the shape), then one line
// in policy_entries() below; the tests and docs/losses.md's generated table enumerate the catalogue
// (docs/extending.md). A loss of your own, outside the library, registers the same way:
//
// example-begin register_policy_loss global
//   struct MyCalibrated {   // DPO with a margin that grows with the rejected side's log-ratio
//     double beta = 0.1;
//     double slope = 0.5;
//     bool reference_free = false;
//     hafrm::Reduction reduction = hafrm::Reduction::kMean;
//     static constexpr const char* kName = "my_calibrated";
//     void check_params() const { hafrm::check_weight(slope, kName, "slope"); }
//     torch::Tensor per_pair(const hafrm::PolicyTerms& t) const {
//       return -torch::log_sigmoid(beta * (t.delta_c() - (1 + slope) * t.delta_r()));
//     }
//     HAFRM_POLICY_LOSS_PLUMBING
//   };
//   // Once, at start-up: the spec "my_calibrated:beta=0.2,slope=1" now builds it.
//   const bool kMyCalibratedRegistered = hafrm::register_policy_loss<MyCalibrated>(
//       {.name = "my_calibrated", .type = "MyCalibrated", .formula = "−logσ(β(Δc − (1+s)Δr))"},
//       {hafrm::registry::bind("slope", HAFRM_REGISTRY_FIELD(MyCalibrated, slope),
//                              hafrm::registry::Range::weight())});
// example-end
// example-begin register_policy_loss_use Hybrid
//   hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::AnyPolicyLoss> haf{
//       {}, hafrm::make_policy_loss("my_calibrated:slope=1,dpo@0.5")};
//   auto out = haf(reward_inputs, inputs, step);
// example-end
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "hafrm/losses/dpo_family.hpp"
#include "hafrm/losses/hybrid.hpp"
#include "hafrm/losses/modifiers.hpp"
#include "hafrm/losses/reference_free.hpp"
#include "hafrm/losses/registry_builders.hpp"
#include "hafrm/losses/unpaired.hpp"

namespace hafrm {

// One entry of the catalogue (loss_catalogue()).
struct LossInfo {
  std::string name{};                  // what a spec writes
  std::string registry{};              // policy, reward, unpaired or weighting
  std::string type{};                  // the functor it builds
  std::vector<std::string> aliases{};  // other accepted spellings
  std::string formula{};               // one line; notation in docs/losses.md
  std::vector<ParamInfo> params{};
  bool built_in = true;  // false for a loss registered with register_policy_loss
};

namespace detail::registry {

using F = FDivergences;

// The policy losses: one line each. Entries live in a deque, so register_policy_loss's additions
// never move the ones a caller holds.
inline std::deque<Entry<AnyPolicyLoss>>& policy_table() {
  static std::deque<Entry<AnyPolicyLoss>> e{
      // TRL's loss_type spellings (sigmoid, robust, hinge) are aliases. TRL 1.16's sigmoid
      // ignores label_smoothing; the smoothed form (cDPO) is `conservative`.
      dpo_entry<Dpo>({.name = "dpo", .type = "Dpo", .formula = "−logσ(βd)", .aliases = {"sigmoid"}},
                     F::kAny),
      dpo_entry<Dpo>({.name = "conservative",
                      .type = "Dpo",
                      .formula = "−(1−ε) logσ(βd) − ε logσ(−βd) (cDPO)"},
                     F::kAny, {smoothing_of<Dpo>()}, {.label_smoothing = 0.1}),
      dpo_entry<RobustDpo>({.name = "robust_dpo",
                            .type = "RobustDpo",
                            .formula = "(−(1−ε) logσ(βd) + ε logσ(−βd)) / (1 − 2ε)",
                            .aliases = {"robust"}},
                           F::kAny, {smoothing_of<RobustDpo>()}),
      dpo_entry<DpoHinge>({.name = "dpo_hinge",
                           .type = "DpoHinge",
                           .formula = "max(0, 1 − βd)",
                           .aliases = {"hinge"}},
                          F::kAny),
      dpo_entry<Ipo>(
          {.name = "ipo", .type = "Ipo", .formula = "(s(Δc)/nc − s(Δr)/nr − 1/2β)² (TRL's IPO)"},
          F::kAny),
      dpo_entry<Ipo>({.name = "ipo_sum", .type = "Ipo", .formula = "(d − 1/2β)² (HaF code)"},
                     F::kAny, {}, {.form = IpoForm::kSum}),
      dpo_entry<Ipo>({.name = "ipo_sqrt", .type = "Ipo", .formula = "β (d − 1/2β)² (HaF code)"},
                     F::kAny, {}, {.form = IpoForm::kSqrt}),
      dpo_entry<Ipo>({.name = "ipo_full", .type = "Ipo", .formula = "(βd − 1/2)² (HaF code)"},
                     F::kAny, {}, {.form = IpoForm::kFull}),
      dpo_entry<SigmoidNorm>({.name = "sigmoid_norm",
                              .type = "SigmoidNorm",
                              .formula = "−logσ(β (s(Δc)/nc − s(Δr)/nr))"},
                             F::kAny),
      dpo_entry<ExoPair>({.name = "exo_pair",
                          .type = "ExoPair",
                          .formula = "σ(βd)(logσ(βd) − log(1−ε)) + σ(−βd)(logσ(−βd) − log ε)"},
                         F::kAny, {smoothing_of<ExoPair>(Range::open(0.0, 1.0))}),
      dpo_entry<NcaPair>({.name = "nca_pair",
                          .type = "NcaPair",
                          .formula = "−logσ(βΔc) − ½ logσ(−βΔc) − ½ logσ(−βΔr)"},
                         F::kReverseKlOnly),
      dpo_entry<BcoPair>(
          {.name = "bco_pair", .type = "BcoPair", .formula = "−logσ(βΔc) − logσ(−βΔr)"},
          F::kReverseKlOnly),
      dpo_entry<SppoHard>(
          {.name = "sppo_hard", .type = "SppoHard", .formula = "(Δc − 1/2β)² + (Δr + 1/2β)²"},
          F::kReverseKlOnly),
      dpo_entry<Aot>(
          {.name = "aot",
           .type = "Aot",
           .formula = "δ = sort(πc − πr) − sort(ρc − ρr); −(1−ε) logσ(βδ) − ε logσ(−βδ)"},
          F::kReverseKlOnly, {smoothing_of<Aot>()}),
      dpo_entry<AotUnpaired>({.name = "aot_unpaired",
                              .type = "AotUnpaired",
                              .formula = "δ = sort(Δc) − sort(Δr); as aot"},
                             F::kReverseKlOnly, {smoothing_of<AotUnpaired>()}),
      dpo_entry<ApoZero>(
          {.name = "apo_zero", .type = "ApoZero", .formula = "(1 − σ(βΔc)) + σ(βΔr)"},
          F::kReverseKlOnly),
      dpo_entry<ApoDown>(
          {.name = "apo_down", .type = "ApoDown", .formula = "σ(βΔc) + (1 − σ(β(Δc − Δr)))"},
          F::kReverseKlOnly),
      dpo_entry<DiscoPop>(
          {.name = "discopop",
           .type = "DiscoPop",
           .formula = "z = βd, m = σ(z/τ): −logσ(z)(1 − m) + e^−z m"},
          F::kAny, {bind("discopop_tau", HAFRM_REGISTRY_FIELD(DiscoPop, tau), Range::scale())}),
      dpo_entry<Dpop>({.name = "dpop",
                       .type = "Dpop",
                       .formula = "−logσ(β(Δc − Δr − λ max(0, ρc − πc))) (DPO-Positive)"},
                      F::kReverseKlOnly,
                      {bind("lambda", HAFRM_REGISTRY_FIELD(Dpop, lambda), Range::weight())}),
      sft_entry(),
      plain_entry<AnyPolicyLoss, ChosenNll>(
          {.name = "chosen_nll",
           .type = "ChosenNll",
           .formula = "−πc/nc (HaF code's \"slic\")",
           .aliases = {"nll"}},
          {bind("token_weighted", HAFRM_REGISTRY_FIELD(ChosenNll, token_weighted))}),
      plain_entry<AnyPolicyLoss, Cpo>(
          {.name = "cpo",
           .type = "Cpo",
           .formula =
               "sigmoid, hinge, ipo or simpo on ℓ = r(πc) − r(πr), plus cpo_alpha · (−Σπc/Σnc)"},
          {bind_choice("loss_type", HAFRM_REGISTRY_FIELD(Cpo, loss),
                       {{"sigmoid", CpoLoss::kSigmoid},
                        {"hinge", CpoLoss::kHinge},
                        {"ipo", CpoLoss::kIpo},
                        {"simpo", CpoLoss::kSimpo}}),
           smoothing_of<Cpo>(),
           bind("simpo_gamma", HAFRM_REGISTRY_FIELD(Cpo, gamma), Range::weight()),
           bind("alpha", HAFRM_REGISTRY_FIELD(Cpo, alpha), Range::coefficient()),
           bind("cpo_alpha", HAFRM_REGISTRY_FIELD(Cpo, cpo_alpha), Range::weight())}),
      plain_entry<AnyPolicyLoss, Simpo>(
          {.name = "simpo",
           .type = "Simpo",
           .formula = "ℓ = qc − qr − γ/β; −(1−ε) logσ(βℓ) − ε logσ(−βℓ)"},
          simpo_fields()),
      plain_entry<AnyPolicyLoss, Simpo>(
          {.name = "alphapo",
           .type = "Simpo",
           .formula = "simpo with q → (1 − e^(−αq))/α (AlphaPO)"},
          simpo_fields(), {.alpha = 0.25},
          [](const Simpo& l, const Params& p) {
            HAFRM_CHECK_ARG(l.alpha != 0.0, p.fn(), p.arg("alpha"),
                            "expected a non-zero AlphaPO coefficient (alpha = 0 is simpo)");
          }),
      plain_entry<AnyPolicyLoss, Orpo>(
          {.name = "orpo",
           .type = "Orpo",
           .formula = "−Σπc/Σnc − β logσ((qc − qr) − (log(1 − e^qc) − log(1 − e^qr)))"},
          {bind_choice("nll_scope", HAFRM_REGISTRY_FIELD(Orpo, nll_scope),
                       {{"response", OrpoNll::kResponse},
                        {"prompt_and_response", OrpoNll::kPromptAndResponse}})}),
      // On pairs: each pair is a desirable (chosen) and an undesirable (rejected) completion.
      kto_entry<AnyPolicyLoss>(),
      apo_zero_unpaired_entry<AnyPolicyLoss>(),
  };
  return e;
}
inline const std::deque<Entry<AnyPolicyLoss>>& policy_entries() { return policy_table(); }

// ---- reward losses, unpaired losses and weightings ---------------------------------------------

inline const std::deque<Entry<AnyRewardLoss>>& reward_entries() {
  static const std::deque<Entry<AnyRewardLoss>> e{
      plain_entry<AnyRewardLoss, BradleyTerry>(
          {.name = "bradley_terry",
           .type = "BradleyTerry",
           .formula = "−(1−ε) logσ(d) − ε logσ(−d) + c (rc + rr)², d = rc − rr − m",
           .aliases = {"bt"}},
          {smoothing_of<BradleyTerry>(),
           bind("center", HAFRM_REGISTRY_FIELD(BradleyTerry, center_coefficient),
                Range::weight())}),
      plain_entry<AnyRewardLoss, RewardHinge>(
          {.name = "reward_hinge",
           .type = "RewardHinge",
           .formula = "max(0, m − (rc − rr))",
           .aliases = {"hinge"}},
          {bind("margin", HAFRM_REGISTRY_FIELD(RewardHinge, margin),
                Range::closed(0.0, kMaxScale))}),
      plain_entry<AnyRewardLoss, PlackettLuce>(
          {.name = "plackett_luce",
           .type = "PlackettLuce",
           .formula = "−Σ_{k<K−1} (r_k − logsumexp_{j≥k} r_j) over [B, K] ranked scores"}),
  };
  return e;
}

// The same names for unpaired completions (KtoInputs): desirable and undesirable on their own.
inline const std::deque<Entry<AnyUnpairedLoss>>& unpaired_entries() {
  static const std::deque<Entry<AnyUnpairedLoss>> e{kto_entry<AnyUnpairedLoss>(),
                                                    apo_zero_unpaired_entry<AnyUnpairedLoss>()};
  return e;
}

inline const std::deque<Entry<AnyWeighting>>& weighting_entries() {
  using C = ConstantWeighting;
  using A = AlternateWeighting;
  using W = LinearWarmupWeighting;
  using Cos = CosineWeighting;
  static const std::deque<Entry<AnyWeighting>> e{
      plain_entry<AnyWeighting, C>(
          {.name = "constant", .type = "ConstantWeighting", .formula = "w_R, α fixed (HaF)"},
          {reward_weight_of<C>(), alpha_of<C>()}),
      plain_entry<AnyWeighting, A>(
          {.name = "alternate",
           .type = "AlternateWeighting",
           .formula = "blocks of period steps: even policy only, odd reward only"},
          {bind("period", HAFRM_REGISTRY_FIELD(A, period), Range::at_least(1)),
           reward_weight_of<A>(), alpha_of<A>()}),
      plain_entry<AnyWeighting, W>(
          {.name = "warmup",
           .type = "LinearWarmupWeighting",
           .formula = "α rises linearly from 0 over steps"},
          {bind("steps", HAFRM_REGISTRY_FIELD(W, warmup_steps), Range::at_least(0)),
           reward_weight_of<W>(), alpha_of<W>()}),
      plain_entry<AnyWeighting, Cos>(
          {.name = "cosine",
           .type = "CosineWeighting",
           .formula = "α follows a half cosine from start to end over steps"},
          {bind("steps", HAFRM_REGISTRY_FIELD(Cos, total_steps), Range::at_least(1)),
           bind("start", HAFRM_REGISTRY_FIELD(Cos, alpha_start), Range::weight()),
           bind("end", HAFRM_REGISTRY_FIELD(Cos, alpha_end), Range::weight()),
           reward_weight_of<Cos>()}),
  };
  return e;
}

// ---- lookup ------------------------------------------------------------------------------------

template <class Built>
std::vector<std::string> names_of(const std::deque<Entry<Built>>& entries) {
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back(e.doc.name);
  return names;
}

// Every spelling a spec may use, for error messages: "dpo", "sigmoid (= dpo)", ...
template <class Built>
std::vector<std::string> spellings_of(const std::deque<Entry<Built>>& entries) {
  std::vector<std::string> names;
  for (const auto& e : entries) {
    names.push_back(e.doc.name);
    for (const auto& a : e.doc.aliases) names.push_back(a + " (= " + e.doc.name + ")");
  }
  return names;
}

template <class Built>
const Entry<Built>& find_entry(const std::deque<Entry<Built>>& entries, const std::string& name,
                               std::string_view fn, std::string_view what) {
  for (const auto& e : entries) {
    if (e.doc.name == name) return e;
    for (const auto& a : e.doc.aliases)
      if (a == name) return e;
  }
  HAFRM_CHECK_ARG(false, fn, "spec", "unknown ", what, " '", name,
                  "'; valid names: ", join(spellings_of(entries)));
  return entries.front();  // unreachable
}

// A spec that must name exactly one item without a weight (reward losses, weightings).
template <class Built>
Built make_single(std::string_view spec, const std::deque<Entry<Built>>& entries,
                  std::string_view fn, std::string_view what) {
  auto items = parse_spec(spec, fn, spellings_of(entries));
  HAFRM_CHECK_ARG(items.size() == 1, fn, "spec", "expected one ", what, ", got ", items.size(),
                  " in '", spec, "' (only policy losses form weighted lists)");
  HAFRM_CHECK_ARG(!items[0].weight, fn, "spec", "a ", what, " takes no '@' weight: '", spec, "'");
  const auto& e = find_entry(entries, items[0].name, fn, what);
  return e.build(Params(std::string(fn), items[0].name, items[0].name, e.params, items[0]));
}

template <class Built>
void describe(std::vector<LossInfo>& out, const std::deque<Entry<Built>>& entries,
              const char* registry) {
  for (const auto& e : entries) {
    LossInfo info{.name = e.doc.name,
                  .registry = registry,
                  .type = e.doc.type,
                  .aliases = e.doc.aliases,
                  .formula = e.doc.formula,
                  .built_in = e.built_in};
    for (const auto& p : e.params) info.params.push_back(p.info);
    out.push_back(std::move(info));
  }
}

// A non-default f-divergence on a loss that reads each side's log-ratio on its own is an error,
// listing the losses that accept one: silently ignoring it would train something else.
inline void check_f_divergence_accepted(const Entry<AnyPolicyLoss>& e, const Params& p) {
  if (e.f_divergences == FDivergences::kAny) return;
  const auto type = p.choice("f_divergence_type", "reverse_kl");
  if (type == "reverse_kl") return;
  std::vector<std::string> accepting;
  for (const auto& other : policy_entries())
    if (other.f_divergences == FDivergences::kAny) accepting.push_back(other.doc.name);
  HAFRM_CHECK_ARG(false, p.fn(), p.arg("f_divergence_type"), "must be reverse_kl for '", p.loss(),
                  "' (got ", type, "): only ", join(accepting),
                  " accept another f-divergence, since the f-DPO reparameterisation's log Z term "
                  "cancels only in the chosen - rejected difference");
}

}  // namespace detail::registry

// Registers a pairwise policy loss of your own (policy_base.hpp) under doc.name, so that
// make_policy_loss, loss_catalogue() and the example trainer's --policy-loss build it by name:
// `beta` is bound when L has one, `fields` are its other parameters, `proto` gives the defaults.
// Call it once per process before building specs, from one thread (a static initialiser, or the
// start of main). A name or alias the catalogue already has is an error. Returns true, so that a
// namespace-scope constant can hold the call.
template <class L>
bool register_policy_loss(registry::Doc doc, std::vector<registry::Binding<L>> fields = {},
                          L proto = {}) {
  namespace r = detail::registry;
  constexpr const char* fn = "register_policy_loss";
  HAFRM_CHECK_ARG(!doc.name.empty() && !doc.type.empty() && !doc.formula.empty(), fn, "doc",
                  "expected a name, a type and a one-line formula, got name '", doc.name,
                  "', type '", doc.type, "'");
  auto spellings = doc.aliases;
  spellings.push_back(doc.name);
  for (const auto& e : r::policy_entries())
    for (const auto& s : spellings)
      HAFRM_CHECK_ARG(s != e.doc.name && std::find(e.doc.aliases.begin(), e.doc.aliases.end(), s) ==
                                             e.doc.aliases.end(),
                      fn, "doc.name", "'", s, "' is already a policy loss of the catalogue ('",
                      e.doc.name, "')");
  auto entry = r::plain_entry<AnyPolicyLoss, L>(std::move(doc), std::move(fields), proto);
  entry.built_in = false;
  r::policy_table().push_back(std::move(entry));
  return true;
}

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
    const r::Params params(fn, item.name, label, e.params, item);
    r::check_f_divergence_accepted(e, params);
    auto loss = e.build(params);
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
// docs/losses.md's generated table holds (tests/test_loss_catalogue_api.cpp compares the two). The
// DPO family's common parameters are listed once, under the policy table. kBuiltIn leaves out the
// losses this program registered itself (register_policy_loss).
enum class CatalogueEntries { kAll, kBuiltIn };
inline std::string loss_catalogue_markdown(CatalogueEntries which = CatalogueEntries::kAll) {
  namespace r = detail::registry;
  std::string s, current, shared;
  auto end_table = [&] {
    if (!shared.empty())
      s += "\n◆ any f-divergence, ◇ reverse_kl only; both also take " + shared + ".\n";
    shared.clear();
  };
  for (const auto& l : loss_catalogue()) {
    if (which == CatalogueEntries::kBuiltIn && !l.built_in) continue;
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
