// hafrm/losses/registry_builders.hpp: the pieces registry.hpp's catalogue is written with: an
// entry (name, aliases, parameters, builder, one-line formula), the DPO family's shared parameters
// (f-divergence, reference_free, LD-DPO, WPO) and the helpers that make an entry from a functor and
// its member-pointer bindings, so that each loss in registry.hpp is one line. Internal: include
// registry.hpp, which defines the policy_entries() that the f-divergence error message lists.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hafrm/losses/any_loss.hpp"
#include "hafrm/losses/kto.hpp"
#include "hafrm/losses/loss_params.hpp"
#include "hafrm/losses/modifiers.hpp"

namespace hafrm::detail::registry {

// ---- entries ---------------------------------------------------------------------------------

// One catalogue entry: its name, the other spellings it accepts, its parameters and builder, and a
// one-line formula for the catalogue. Built by the helpers below from member-pointer bindings.
template <class Built>
struct Entry {
  std::string name;
  std::vector<ParamDecl> params;
  std::function<Built(const Params&)> build;
  bool accepts_f_divergence = false;
  std::vector<std::string> aliases{};
  std::string formula{};
  std::string type{};  // the functor a spec builds, for the catalogue
};

// What a catalogue line says about an entry besides its parameters.
struct Doc {
  std::string type;     // e.g. "Dpo"
  std::string formula;  // one line
  std::vector<std::string> aliases{};
};

// ---- policy losses -------------------------------------------------------------------------

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
  for (auto t : kFDivergenceTypes)
    if (f_divergence_name(t) == type) f.type = t;
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

template <class L>
std::vector<ParamDecl> decls_of(const std::vector<Binding<L>>& fields) {
  std::vector<ParamDecl> d;
  for (const auto& b : fields) d.push_back(b.decl);
  return d;
}

template <class L>
L bound(const L& proto, const std::vector<Binding<L>>& fields, const Params& p) {
  L l = proto;
  for (const auto& b : fields) b.set(l, p);
  return l;
}

template <class L>
Binding<L> beta_of(const L& proto) {
  return bind("beta", HAFRM_REGISTRY_FIELD(L, beta), proto, Range::scale());
}
template <class L>
Binding<L> smoothing_of(const L& proto, Range r = Range::smoothing()) {
  return bind("label_smoothing", HAFRM_REGISTRY_FIELD(L, label_smoothing), proto, r);
}

// A DPO-family entry: its own fields, then the f-divergence, reference_free, LD-DPO and WPO
// parameters every such loss shares (f_div: whether a non-reverse-KL score is valid for it).
template <class L>
Entry<AnyPolicyLoss> dpo_entry(std::string name, Doc doc, bool f_div, L proto,
                               std::vector<Binding<L>> own) {
  auto params = decls_of(own);
  auto shared = f_divergence_decls();
  if (!f_div) shared[0].info.type = "reverse_kl";  // the only one it accepts
  auto ref = bind("reference_free", HAFRM_REGISTRY_FIELD(L, reference_free), proto);
  own.push_back(ref);
  shared.push_back(ref.decl);
  shared.push_back(declare("ld_alpha", Kind::kNumber, "off", "LengthDesensitised<L> (LD-DPO)", {},
                           Range::closed(0.0, 1.0)));
  shared.push_back(use_weighting_decl());
  for (auto& d : shared) {
    d.info.shared = true;
    params.push_back(d);
  }
  return {
      std::move(name),
      std::move(params),
      [proto, own, f_div](const Params& p) { return dpo_family(bound(proto, own, p), p, f_div); },
      f_div,
      std::move(doc.aliases),
      std::move(doc.formula),
      std::move(doc.type)};
}

// An entry whose functor is built from its bound fields and validated; `check` adds a rule of the
// entry's own (alphapo's non-zero alpha).
template <class Built, class L>
Entry<Built> plain_entry(
    std::string name, Doc doc, L proto, std::vector<Binding<L>> fields,
    std::type_identity_t<std::function<void(const L&, const Params&)>> check = {}) {
  auto params = decls_of(fields);
  return {std::move(name),
          std::move(params),
          [proto, fields, check](const Params& p) {
            L l = bound(proto, fields, p);
            if (check) check(l, p);
            l.validate();
            return Built(std::move(l), p.label());
          },
          false,
          std::move(doc.aliases),
          std::move(doc.formula),
          std::move(doc.type)};
}

// The unpaired losses (Kto, ApoZeroUnpaired) share their parameters, whether they are built for
// pairs (AnyPolicyLoss) or for unpaired completions (AnyUnpairedLoss).
template <class Built, class L>
Entry<Built> unpaired_entry(std::string name, Doc doc) {
  const L proto{};
  return plain_entry<Built>(
      std::move(name), std::move(doc), proto,
      {beta_of(proto),
       bind("desirable_weight", HAFRM_REGISTRY_FIELD(L, desirable_weight), proto, Range::weight()),
       bind("undesirable_weight", HAFRM_REGISTRY_FIELD(L, undesirable_weight), proto,
            Range::weight())});
}
template <class Built>
Entry<Built> kto_entry() {
  return unpaired_entry<Built, Kto>(
      "kto",
      {"Kto",
       "desirable: λD (1 − σ(β(Δ − z))), undesirable: λU (1 − σ(β(z − Δ))), z the KL estimate"});
}
template <class Built>
Entry<Built> apo_zero_unpaired_entry() {
  return unpaired_entry<Built, ApoZeroUnpaired>(
      "apo_zero_unpaired", {"ApoZeroUnpaired", "desirable: 1 − σ(βΔ), undesirable: σ(βΔ)"});
}

template <class L>
Entry<AnyPolicyLoss> beta_only(std::string name, Doc doc, bool f_div, L proto = {}) {
  return dpo_entry<L>(std::move(name), std::move(doc), f_div, proto, {beta_of(proto)});
}
template <class L>
Entry<AnyPolicyLoss> beta_smoothing(std::string name, Doc doc, bool f_div, L proto = {}) {
  return dpo_entry<L>(std::move(name), std::move(doc), f_div, proto,
                      {beta_of(proto), smoothing_of(proto)});
}

template <class W>
Binding<W> reward_weight_of(const W& proto) {
  return bind("reward", HAFRM_REGISTRY_FIELD(W, reward_weight), proto, Range::weight());
}
template <class W>
Binding<W> alpha_of(const W& proto) {
  return bind("alpha", HAFRM_REGISTRY_FIELD(W, alpha), proto, Range::weight());
}

}  // namespace hafrm::detail::registry
