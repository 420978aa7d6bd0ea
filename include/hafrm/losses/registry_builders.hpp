// hafrm/losses/registry_builders.hpp: what registry.hpp's catalogue is written with: an entry
// (name, aliases, one-line formula, parameters, builder) and the helpers that make one from a
// functor and its member-pointer bindings, so that each loss in registry.hpp is one line. The DPO
// family's shared parameters (f-divergence, reference_free, LD-DPO, WPO) are added here once.
//
// Every helper binds `beta` by itself when the functor has one (a scale in [1e-6, 1e6]); the
// bindings a line lists are the functor's other parameters.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hafrm/losses/any_loss.hpp"
#include "hafrm/losses/loss_params.hpp"
#include "hafrm/losses/modifiers.hpp"
#include "hafrm/losses/reference_free.hpp"
#include "hafrm/losses/unpaired.hpp"

namespace hafrm {
namespace registry {

// What a catalogue line says about an entry besides its parameters.
struct Doc {
  std::string name;                    // what a spec writes
  std::string type;                    // the functor it builds, e.g. "Dpo"
  std::string formula;                 // one line; notation in docs/losses.md
  std::vector<std::string> aliases{};  // other accepted spellings
};

// Which f-divergence scores a DPO-family loss accepts (docs/losses.md, "The f-divergence score").
enum class FDivergences {
  kAny,            // every score: the loss compares s(Delta_c) - s(Delta_r)
  kReverseKlOnly,  // reverse KL only: the loss reads each side's log-ratio on its own
};

// One catalogue entry. Built by the helpers below; what it builds is erased to Built.
template <class Built>
struct Entry {
  Doc doc;
  std::vector<ParamDecl> params;
  std::function<Built(const Params&)> build;
  FDivergences f_divergences = FDivergences::kReverseKlOnly;
  bool built_in = true;  // false for an entry registered by a user (register_policy_loss)
};

}  // namespace registry

namespace detail::registry {

using namespace ::hafrm::registry;

// The bindings several entries share.
template <class L>
Binding<L> smoothing_of(Range r = Range::smoothing()) {
  return bind("label_smoothing", HAFRM_REGISTRY_FIELD(L, label_smoothing), r);
}
template <class W>
Binding<W> reward_weight_of() {
  return bind("reward", HAFRM_REGISTRY_FIELD(W, reward_weight), Range::weight());
}
template <class W>
Binding<W> alpha_of() {
  return bind("alpha", HAFRM_REGISTRY_FIELD(W, alpha), Range::weight());
}

// `beta` first when L has one, then the listed fields.
template <class L>
std::vector<Binding<L>> with_beta(std::vector<Binding<L>> own) {
  if constexpr (requires { &L::beta; })
    own.insert(own.begin(), bind("beta", HAFRM_REGISTRY_FIELD(L, beta), Range::scale()));
  return own;
}

template <class L>
L bound(const L& proto, const std::vector<Binding<L>>& fields, const Params& p) {
  L l = proto;
  for (const auto& b : fields) b.set(l, p);
  return l;
}

inline std::vector<ParamDecl> f_divergence_decls() {
  std::vector<std::string> types;
  for (auto t : kFDivergenceTypes) types.emplace_back(f_divergence_name(t));
  return {declare("f_divergence_type", Kind::kChoice, types.front(), "f_divergence.type", types),
          declare("f_alpha_divergence_coef", Kind::kNumber, number_text(FDivergence{}.alpha),
                  "f_divergence.alpha", {}, Range::coefficient())};
}
inline ParamDecl use_weighting_decl() {
  return declare("use_weighting", Kind::kBool, "false", "WpoWeighted<L> (WPO)");
}

// The f-divergence a spec asks for. Whether the loss accepts it is the registry's check
// (registry.hpp, check_f_divergence_accepted), which can list the losses that do.
inline FDivergence parse_f_divergence(const Params& p) {
  FDivergence f;
  const auto type = p.choice("f_divergence_type", "reverse_kl");
  for (auto t : kFDivergenceTypes)
    if (f_divergence_name(t) == type) f.type = t;
  HAFRM_CHECK_ARG(
      !p.has("f_alpha_divergence_coef") || f.type == FDivergenceType::kAlphaDivergence, p.fn(),
      p.arg("f_alpha_divergence_coef"),
      "is only used with f_divergence_type=alpha_divergence, got f_divergence_type=", type);
  f.alpha = p.number("f_alpha_divergence_coef", f.alpha);
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
AnyPolicyLoss dpo_family(L loss, const Params& p) {
  auto f = parse_f_divergence(p);
  if constexpr (requires { loss.f_divergence; }) loss.f_divergence = f;
  loss.validate();
  if (p.has("ld_alpha")) {
    LengthDesensitised<L> ld{std::move(loss), p.number("ld_alpha", 0.5)};
    HAFRM_CHECK_ARG(ld.ld_alpha >= 0.0 && ld.ld_alpha <= 1.0, p.fn(), p.arg("ld_alpha"),
                    "expected a value in [0, 1], got ", ld.ld_alpha);
    return with_weighting(std::move(ld), p);
  }
  return with_weighting(std::move(loss), p);
}

// A DPO-family entry: beta and its own fields, then the f-divergence, reference_free, LD-DPO and
// WPO parameters every such loss shares.
template <class L>
Entry<AnyPolicyLoss> dpo_entry(Doc doc, FDivergences f_div, std::vector<Binding<L>> own = {},
                               L proto = {}) {
  own = with_beta(std::move(own));
  own.push_back(bind("reference_free", HAFRM_REGISTRY_FIELD(L, reference_free)));
  auto params = decls_of(own, proto);
  auto shared = f_divergence_decls();
  if (f_div == FDivergences::kReverseKlOnly) shared[0].info.type = "reverse_kl";
  shared.push_back(params.back());  // reference_free, listed with the shared parameters
  params.pop_back();
  shared.push_back(declare("ld_alpha", Kind::kNumber, "off", "LengthDesensitised<L> (LD-DPO)", {},
                           Range::closed(0.0, 1.0)));
  shared.push_back(use_weighting_decl());
  for (auto& d : shared) {
    d.info.shared = true;
    params.push_back(d);
  }
  return {.doc = std::move(doc),
          .params = std::move(params),
          .build = [proto, own](const Params& p) { return dpo_family(bound(proto, own, p), p); },
          .f_divergences = f_div};
}

// An entry whose functor is built from beta (when it has one) and its bound fields, then
// validated; `check` adds a rule of the entry's own (alphapo's non-zero alpha).
template <class Built, class L>
Entry<Built> plain_entry(Doc doc, std::vector<Binding<L>> fields = {}, L proto = {},
                         void (*check)(const L&, const Params&) = nullptr) {
  fields = with_beta(std::move(fields));
  auto params = decls_of(fields, proto);
  return {.doc = std::move(doc),
          .params = std::move(params),
          .build = [proto, fields, check](const Params& p) {
            L l = bound(proto, fields, p);
            if (check) check(l, p);
            l.validate();
            return Built(std::move(l), p.label());
          }};
}

// The unpaired losses (Kto, ApoZeroUnpaired) share their parameters, whether they are built for
// pairs (AnyPolicyLoss) or for unpaired completions (AnyUnpairedLoss).
template <class Built, class L>
Entry<Built> unpaired_entry(Doc doc) {
  return plain_entry<Built, L>(
      std::move(doc),
      {bind("desirable_weight", HAFRM_REGISTRY_FIELD(L, desirable_weight), Range::weight()),
       bind("undesirable_weight", HAFRM_REGISTRY_FIELD(L, undesirable_weight), Range::weight())});
}
template <class Built>
Entry<Built> kto_entry() {
  return unpaired_entry<Built, Kto>(
      {.name = "kto",
       .type = "Kto",
       .formula = "desirable: λD (1 − σ(β(Δ − z))), undesirable: λU (1 − σ(β(z − Δ))), z the KL "
                  "estimate"});
}
template <class Built>
Entry<Built> apo_zero_unpaired_entry() {
  return unpaired_entry<Built, ApoZeroUnpaired>(
      {.name = "apo_zero_unpaired",
       .type = "ApoZeroUnpaired",
       .formula = "desirable: 1 − σ(βΔ), undesirable: σ(βΔ)"});
}

// TRL's sft: the token-weighted NLL of the chosen responses. It accepts an f-divergence (as TRL
// does) but reads no log-ratio, so the score changes nothing.
inline Entry<AnyPolicyLoss> sft_entry() {
  auto params = f_divergence_decls();
  params.push_back(use_weighting_decl());
  return {.doc = {.name = "sft",
                  .type = "ChosenNll",
                  .formula = "−Σπc / Σnc over the batch (TRL's sft)"},
          .params = std::move(params),
          .build =
              [](const Params& p) {
                parse_f_divergence(p);
                return with_weighting(ChosenNll{.token_weighted = true}, p);
              },
          .f_divergences = FDivergences::kAny};
}

// SimPO's parameters, shared by simpo and alphapo (which differ in their defaults).
inline std::vector<Binding<Simpo>> simpo_fields() {
  return {bind("simpo_gamma", HAFRM_REGISTRY_FIELD(Simpo, gamma), Range::weight()),
          smoothing_of<Simpo>(),
          bind("alpha", HAFRM_REGISTRY_FIELD(Simpo, alpha), Range::coefficient())};
}

}  // namespace detail::registry
}  // namespace hafrm
