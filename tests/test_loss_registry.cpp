// hafrm/losses/registry.hpp, selection by name: every registry spec builds the functor it names,
// lists and weights compose, the type-erased hybrid works, every malformed spec is rejected with
// the valid choices; and over the whole catalogue: every loss stays finite at |Delta| = 1e4 in
// float32 and rejects an empty batch.
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {
hafrm::PolicyInputs make_inputs(int64_t B) {
  hafrm::PolicyInputs in;
  auto lp = [&] { return -(randn({B}).abs() + 0.05) * 10; };
  in.policy_chosen = lp(), in.policy_rejected = lp();
  in.reference_chosen = lp(), in.reference_rejected = lp();
  in.chosen_count = torch::randint(1, 30, {B}), in.rejected_count = torch::randint(1, 30, {B});
  const int64_t T = 6;
  auto mask = torch::rand({B, T}) > 0.3;
  mask.select(1, 0).fill_(true);
  auto tok = [&] { return -randn({B, T}).abs(); };
  in.tokens = hafrm::PolicyTokenInputs{tok(), tok(), mask,        mask.clone(),
                                       tok(), tok(), tok() - 0.5, tok() - 0.5};
  in.kl_estimate = torch::tensor(0.3, torch::kDouble);
  return in;
}

double value(const hafrm::LossOutput& o) { return o.loss.item<double>(); }

hafrm::FDivergence fdiv(hafrm::FDivergenceType t, double a = 0.5) { return {t, a}; }
}  // namespace

TEST_CASE("every registry name builds the functor it names", "[losses]") {
  auto in = make_inputs(6);
  using F = hafrm::FDivergenceType;
  using L = hafrm::CpoLoss;
  struct Case {
    std::string spec;
    std::function<hafrm::LossOutput(const hafrm::PolicyInputs&)> direct;
  };
  const std::vector<Case> cases{
      {"sigmoid", hafrm::Dpo{}},
      {"sigmoid:beta=0.3", hafrm::Dpo{.beta = 0.3}},
      {"conservative:beta=0.3,label_smoothing=0.2",
       hafrm::Dpo{.beta = 0.3, .label_smoothing = 0.2}},
      {"sigmoid:reference_free=true", hafrm::Dpo{.reference_free = true}},
      {"sigmoid:f_divergence_type=alpha_divergence,f_alpha_divergence_coef=0.3",
       hafrm::Dpo{.f_divergence = fdiv(F::kAlphaDivergence, 0.3)}},
      {"conservative", hafrm::Dpo{.label_smoothing = 0.1}},
      {"robust:label_smoothing=0.2", hafrm::RobustDpo{.label_smoothing = 0.2}},
      {"hinge:beta=0.5,f_divergence_type=js_divergence",
       hafrm::DpoHinge{.beta = 0.5, .f_divergence = fdiv(F::kJsDivergence)}},
      {"ipo:beta=0.5", hafrm::Ipo{.beta = 0.5}},
      {"ipo_sum:beta=0.5", hafrm::Ipo{.beta = 0.5, .form = hafrm::IpoForm::kSum}},
      {"ipo_sqrt", hafrm::Ipo{.form = hafrm::IpoForm::kSqrt}},
      {"ipo_full", hafrm::Ipo{.form = hafrm::IpoForm::kFull}},
      {"sigmoid_norm:f_divergence_type=forward_kl",
       hafrm::SigmoidNorm{.f_divergence = fdiv(F::kForwardKl)}},
      {"exo_pair", hafrm::ExoPair{}},
      {"exo_pair:label_smoothing=0.01", hafrm::ExoPair{.label_smoothing = 0.01}},
      {"nca_pair:beta=0.2", hafrm::NcaPair{.beta = 0.2}},
      {"bco_pair", hafrm::BcoPair{}},
      {"sppo_hard", hafrm::SppoHard{}},
      {"aot:label_smoothing=0.1", hafrm::Aot{.label_smoothing = 0.1}},
      {"aot_unpaired", hafrm::AotUnpaired{}},
      {"apo_zero", hafrm::ApoZero{}},
      {"apo_down", hafrm::ApoDown{}},
      {"discopop:discopop_tau=0.1", hafrm::DiscoPop{.tau = 0.1}},
      {"dpop:beta=0.3,lambda=5", hafrm::Dpop{.beta = 0.3, .lambda = 5}},
      {"dpop", hafrm::Dpop{.lambda = 50}},
      {"sft", hafrm::ChosenNll{.token_weighted = true}},
      {"sft:f_divergence_type=js_divergence", hafrm::ChosenNll{.token_weighted = true}},
      {"nll", hafrm::ChosenNll{}},
      {"cpo", hafrm::Cpo{}},
      {"cpo:loss_type=ipo,cpo_alpha=0.5,alpha=0.2",
       hafrm::Cpo{.loss = L::kIpo, .alpha = 0.2, .cpo_alpha = 0.5}},
      {"cpo:loss_type=simpo,simpo_gamma=0.3", hafrm::Cpo{.loss = L::kSimpo, .gamma = 0.3}},
      {"simpo:beta=2,simpo_gamma=0.5", hafrm::Simpo{.beta = 2, .gamma = 0.5}},
      {"alphapo", hafrm::Simpo{.alpha = 0.25}},
      {"alphapo:alpha=-0.3,beta=2.5", hafrm::Simpo{.beta = 2.5, .alpha = -0.3}},
      {"orpo:beta=0.2", hafrm::Orpo{.beta = 0.2}},
      {"kto:undesirable_weight=1.5", hafrm::Kto{.undesirable_weight = 1.5}},
      {"apo_zero_unpaired", hafrm::ApoZeroUnpaired{}},
      {"sigmoid:ld_alpha=0.4", hafrm::LengthDesensitised<hafrm::Dpo>{.ld_alpha = 0.4}},
      {"ipo:use_weighting=true", hafrm::WpoWeighted<hafrm::Ipo>{}},
      {"robust:ld_alpha=0.5,use_weighting=1",
       hafrm::WpoWeighted<hafrm::LengthDesensitised<hafrm::RobustDpo>>{}},
      {" sigmoid : beta = 0.3 ", hafrm::Dpo{.beta = 0.3}},
      // The catalogue's names (each functor's kName); the TRL spellings above are aliases.
      {"dpo:beta=0.3", hafrm::Dpo{.beta = 0.3}},
      {"robust_dpo:label_smoothing=0.2", hafrm::RobustDpo{.label_smoothing = 0.2}},
      {"dpo_hinge:beta=0.5", hafrm::DpoHinge{.beta = 0.5}},
      {"chosen_nll:token_weighted=true", hafrm::ChosenNll{.token_weighted = true}},
  };
  std::set<std::string> covered;
  for (const auto& c : cases) {
    INFO(c.spec);
    auto loss = hafrm::make_policy_loss(c.spec);
    CHECK(value(loss(in)) == Approx(value(c.direct(in))).epsilon(1e-12));
    covered.insert(std::string(hafrm::detail::registry::trim(c.spec.substr(0, c.spec.find(':')))));
  }
  // Every built-in name of the catalogue is covered above.
  for (const auto& l : hafrm::loss_catalogue()) {
    if (l.registry != "policy" || !l.built_in) continue;
    INFO(l.name << ": add a spec case for it above");
    CHECK(covered.count(l.name) == 1);
  }
  CHECK(hafrm::reward_loss_names() ==
        std::vector<std::string>{"bradley_terry", "reward_hinge", "plackett_luce"});
  CHECK(hafrm::weighting_names() ==
        std::vector<std::string>{"constant", "alternate", "warmup", "cosine"});
  // The weightings' kName is their registry name, as for the losses, and names them when erased.
  CHECK(hafrm::weighting_names() == std::vector<std::string>{hafrm::ConstantWeighting::kName,
                                                             hafrm::AlternateWeighting::kName,
                                                             hafrm::LinearWarmupWeighting::kName,
                                                             hafrm::CosineWeighting::kName});
  CHECK(hafrm::AnyWeighting(hafrm::CosineWeighting{}).name() == "cosine");
  CHECK(hafrm::AnyWeighting(hafrm::CosineWeighting{}, "mine").name() == "mine");
}

TEST_CASE("a spec with several losses is a weighted list", "[losses]") {
  auto in = make_inputs(5);
  auto list = hafrm::make_policy_loss("sigmoid:beta=0.1,ipo:beta=0.5@0.2");
  const double expect =
      value(hafrm::Dpo{.beta = 0.1}(in)) + 0.2 * value(hafrm::Ipo{.beta = 0.5}(in));
  auto out = list(in);
  CHECK(value(out) == Approx(expect).epsilon(1e-12));
  CHECK(out.metrics.count("sigmoid/loss") == 1);
  CHECK(out.metrics.count("ipo/rewards_margin") == 1);
  // The weight may end any item of its loss; repeated names get a suffix.
  auto again = hafrm::make_policy_loss("sigmoid@0.5, beta=0.2, sigmoid:beta=0.3, sft@2");
  auto o2 = again(in);
  CHECK(value(o2) ==
        Approx(0.5 * value(hafrm::Dpo{.beta = 0.2}(in)) + value(hafrm::Dpo{.beta = 0.3}(in)) +
               2 * value(hafrm::ChosenNll{.token_weighted = true}(in)))
            .epsilon(1e-12));
  CHECK(o2.metrics.count("sigmoid_2/loss") == 1);
  CHECK(hafrm::make_policy_loss("sigmoid").name() == "sigmoid");
  // One loss with a weight is a one-item list.
  CHECK(value(hafrm::make_policy_loss("hinge@0.25")(in)) ==
        Approx(0.25 * value(hafrm::DpoHinge{}(in))).epsilon(1e-12));
  // Three losses share one per-token part: the inputs are read, never recomputed.
  auto three = hafrm::make_policy_loss("sigmoid:ld_alpha=0.5,ipo:use_weighting=true,sft");
  CHECK(all_finite(three(in).loss));
}

TEST_CASE("reward losses and weightings by name", "[hybrid]") {
  hafrm::RewardInputs r{randn({6}), randn({6})};
  CHECK(value(hafrm::make_reward_loss("bt")(r)) == Approx(value(hafrm::BradleyTerry{}(r))));
  CHECK(value(hafrm::make_reward_loss("bt:label_smoothing=0.1,center=0.01")(r)) ==
        Approx(value(hafrm::BradleyTerry{.label_smoothing = 0.1, .center_coefficient = 0.01}(r)))
            .epsilon(1e-12));
  CHECK(value(hafrm::make_reward_loss("hinge:margin=1")(r)) ==
        Approx(value(hafrm::RewardHinge{.margin = 1}(r))));
  CHECK(value(hafrm::make_reward_loss("plackett_luce")(r)) ==
        Approx(value(hafrm::BradleyTerry{}(r))).epsilon(1e-12));
  CHECK(hafrm::make_reward_loss("bt").name() == "bt");
  auto c = hafrm::make_weighting("constant:reward=1,alpha=0.3")(7);
  CHECK((c.reward == 1.0 && c.policy == 0.3));
  auto alt = hafrm::make_weighting("alternate:period=10");
  CHECK(alt(5).reward == 0.0);
  CHECK(alt(15).policy == 0.0);
  CHECK(hafrm::make_weighting("warmup:steps=100")(50).policy == Approx(0.1));
  hafrm::CosineWeighting cw{.total_steps = 1000, .alpha_start = 0.2, .alpha_end = 0.0};
  CHECK(hafrm::make_weighting("cosine:steps=1000,start=0.2,end=0")(300).policy ==
        Approx(cw(300).policy));
}

TEST_CASE("HybridLoss over the type-erased registry terms", "[hybrid]") {
  auto in = make_inputs(6);
  auto pc = in.policy_chosen.clone().requires_grad_();
  in.policy_chosen = pc;
  hafrm::RewardInputs r{randn({6}).requires_grad_(), randn({6})};
  hafrm::HybridLoss<hafrm::AnyRewardLoss, hafrm::AnyPolicyLoss, hafrm::AnyWeighting> haf{
      hafrm::make_reward_loss("bt:center=0.01"),
      hafrm::make_policy_loss("sigmoid:beta=0.1,ipo:beta=0.5@0.2,kto@0.1"),
      hafrm::make_weighting("cosine:steps=100,start=0.4,end=0.1")};
  hafrm::PolicyLossList list{
      {1.0, hafrm::Dpo{}}, {0.2, hafrm::Ipo{.beta = 0.5}}, {0.1, hafrm::Kto{}}};
  hafrm::HybridLoss<hafrm::BradleyTerry, hafrm::PolicyLossList, hafrm::CosineWeighting> direct{
      {.center_coefficient = 0.01},
      list,
      {.total_steps = 100, .alpha_start = 0.4, .alpha_end = 0.1}};
  auto out = haf(r, in, 30);
  auto ref = direct(r, in, 30);
  CHECK(out.loss.item<double>() == Approx(ref.loss.item<double>()).epsilon(1e-12));
  CHECK(out.weights.policy == Approx(ref.weights.policy));
  CHECK(out.metrics.count("policy/kto/kl") == 1);
  out.loss.backward();
  CHECK(r.chosen.grad().abs().sum().item<double>() > 0);
  CHECK(pc.grad().abs().sum().item<double>() > 0);
}

TEST_CASE("malformed specs are rejected with the valid choices", "[losses]") {
  using hafrm::make_policy_loss;
  require_error([] { make_policy_loss("dop"); },
                {"make_policy_loss", "unknown policy loss 'dop'", "sigmoid", "apo_zero_unpaired"});
  require_error([] { make_policy_loss(""); }, {"spec", "valid names", "sigmoid"});
  require_error([] { make_policy_loss("sigmoid:bta=0.1"); },
                {"sigmoid:bta", "valid parameters", "beta", "ld_alpha", "use_weighting"});
  // As in TRL 1.16, sigmoid has no label smoothing: the smoothed form is `conservative`.
  require_error([] { make_policy_loss("sigmoid:label_smoothing=0.1"); },
                {"sigmoid:label_smoothing", "valid parameters"});
  require_error([] { make_policy_loss("sigmoid:beta=abc"); }, {"sigmoid:beta", "number", "abc"});
  require_error([] { make_policy_loss("sigmoid:use_weighting=maybe"); },
                {"sigmoid:use_weighting", "true or false"});
  require_error([] { make_policy_loss("sigmoid:f_divergence_type=kl"); },
                {"f_divergence_type", "reverse_kl", "alpha_divergence"});
  require_error([] { make_policy_loss("cpo:loss_type=bco"); }, {"cpo:loss_type", "simpo"});
  require_error([] { make_policy_loss("beta=0.1"); }, {"spec", "starts with a parameter"});
  require_error([] { make_policy_loss("sigmoid,,ipo"); }, {"spec", "empty item"});
  require_error([] { make_policy_loss("sigmoid:beta=0.1,beta=0.2"); }, {"sigmoid:beta", "twice"});
  require_error([] { make_policy_loss("sigmoid@0.5,beta=0.1@2"); }, {"sigmoid", "two weights"});
  require_error([] { make_policy_loss("sigmoid@x"); }, {"spec", "number after '@'"});
  require_error([] { make_policy_loss("sigmoid@-1"); }, {"sigmoid", "weight"});
  require_error([] { make_policy_loss("sigmoid:"); }, {"spec", "key=value"});
  // Parameter values are validated by the functor, naming it and the argument.
  require_error([] { make_policy_loss("sigmoid:beta=0"); }, {"dpo", "beta", "> 0"});
  require_error([] { make_policy_loss("exo_pair:label_smoothing=0"); },
                {"exo_pair", "label_smoothing"});
  require_error([] { make_policy_loss("robust:label_smoothing=0.5"); },
                {"robust_dpo", "label_smoothing"});
  require_error([] { make_policy_loss("sigmoid:ld_alpha=1.2"); }, {"sigmoid:ld_alpha", "[0, 1]"});
  require_error([] { make_policy_loss("alphapo:alpha=0"); }, {"alphapo:alpha", "non-zero"});
  require_error([] { make_policy_loss("kto:beta=-1"); }, {"kto", "beta"});
  // f-divergences: only the compatible losses accept a non-default one.
  for (const char* name : {"nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero",
                           "apo_down", "dpop"}) {
    INFO(name);
    require_error([&] { make_policy_loss(std::string(name) + ":f_divergence_type=js_divergence"); },
                  {std::string(name) + ":f_divergence_type", "must be reverse_kl", "sigmoid_norm",
                   "discopop"});
    CHECK_NOTHROW(make_policy_loss(std::string(name) + ":f_divergence_type=reverse_kl"));
  }
  require_error([] { make_policy_loss("cpo:f_divergence_type=js_divergence"); },
                {"cpo:f_divergence_type", "valid parameters"});
  require_error([] { make_policy_loss("sigmoid:f_alpha_divergence_coef=0.3"); },
                {"f_alpha_divergence_coef", "alpha_divergence"});
  require_error(
      [] {
        make_policy_loss("sigmoid:f_divergence_type=alpha_divergence,f_alpha_divergence_coef=nan");
      },
      {"f_divergence.alpha", "finite"});
  require_error([] { make_policy_loss("aot:use_weighting=true"); }, {"aot:use_weighting", "sorts"});
  require_error([] { make_policy_loss("aot_unpaired:use_weighting=true"); },
                {"aot_unpaired:use_weighting"});
  // Reward losses and weightings: one item, no weight, their own names and parameters.
  require_error([] { hafrm::make_reward_loss("bradley"); },
                {"make_reward_loss", "bradley_terry", "bt", "plackett_luce"});
  require_error([] { hafrm::make_reward_loss("bt,hinge"); },
                {"make_reward_loss", "one reward loss"});
  require_error([] { hafrm::make_reward_loss("bt@0.5"); }, {"make_reward_loss", "'@'"});
  require_error([] { hafrm::make_reward_loss("bt:center=-1"); },
                {"bradley_terry", "center_coefficient"});
  require_error([] { hafrm::make_reward_loss("hinge:beta=1"); }, {"hinge:beta", "margin"});
  require_error([] { hafrm::make_weighting("linear"); }, {"make_weighting", "constant", "cosine"});
  require_error([] { hafrm::make_weighting("alternate:period=1.5"); },
                {"alternate:period", "integer"});
  require_error([] { hafrm::make_weighting("alternate:period=0"); }, {"alternate", "period"});
  require_error([] { hafrm::make_weighting("cosine:alpha=0.1"); },
                {"cosine:alpha", "start", "end"});
  hafrm::RewardInputs with_margin{randn({3}), randn({3}), randn({3}).abs()};
  require_error([&] { hafrm::make_reward_loss("plackett_luce")(with_margin); },
                {"plackett_luce", "inputs.margin"});
}

TEST_CASE("every catalogue loss stays finite at |Delta| = 1e4 in float32", "[losses]") {
  const double sign = GENERATE(-1.0, 1.0);
  const int64_t B = 3, T = 4;
  auto pc = torch::full({B}, sign * 1e4, torch::kFloat).requires_grad_();
  auto pr = torch::full({B}, -sign * 1e4, torch::kFloat).requires_grad_();
  auto lc = torch::full({B, T}, -2500.0f).requires_grad_();
  hafrm::PolicyInputs in;
  in.policy_chosen = pc, in.policy_rejected = pr;
  in.reference_chosen = torch::zeros({B}), in.reference_rejected = torch::zeros({B});
  in.chosen_count = torch::full({B}, 5), in.rejected_count = torch::full({B}, 7);
  auto mask = torch::ones({B, T}, torch::kBool);
  in.tokens = hafrm::PolicyTokenInputs{lc,
                                       torch::full({B, T}, -2500.0f),
                                       mask,
                                       mask,
                                       torch::zeros({B, T}),
                                       torch::zeros({B, T}),
                                       torch::full({B, T}, -1.0f),
                                       torch::full({B, T}, -1.0f)};
  in.kl_estimate = torch::tensor(0.5f);
  std::vector<std::string> specs = hafrm::policy_loss_names();
  for (const char* extra :
       {"sigmoid:ld_alpha=0.5,use_weighting=true", "hinge:use_weighting=true", "alphapo:alpha=0.25",
        "alphapo:alpha=-0.5", "cpo:alpha=0.25", "cpo:loss_type=simpo,alpha=0.5",
        "conservative:label_smoothing=0.3", "exo_pair:label_smoothing=0.4"})
    specs.push_back(extra);
  // Every f-divergence on every loss that accepts one (except the quadratic ipo forms: squaring
  // exp(80) overflows float32, and the formula is unbounded there).
  for (const char* name :
       {"sigmoid", "robust", "hinge", "sigmoid_norm", "exo_pair", "discopop", "sft"})
    for (const char* f : {"forward_kl", "js_divergence", "alpha_divergence"})
      specs.push_back(std::string(name) + ":f_divergence_type=" + f);
  for (const auto& spec : specs) {
    INFO(spec << ", sign " << sign);
    pc.mutable_grad() = torch::Tensor(), pr.mutable_grad() = torch::Tensor();
    lc.mutable_grad() = torch::Tensor();
    auto out = hafrm::make_policy_loss(spec)(in);
    out.loss.backward();
    CHECK(all_finite(out.loss));
    for (auto* g : {&pc, &pr, &lc})
      if (g->grad().defined()) CHECK(all_finite(g->grad()));
  }
  // DiscoPOP at large |z| in both directions, also with tau > 1.
  for (double tau : {0.05, 3.0}) {
    pc.mutable_grad() = torch::Tensor();
    auto out = hafrm::DiscoPop{.beta = 1.0, .tau = tau}(in);
    out.loss.backward();
    CHECK(all_finite(out.loss));
    CHECK(all_finite(pc.grad()));
  }
  // ORPO with a mean log-prob of exactly 0 (probability 1) and just below it.
  auto q0 = torch::tensor({0.0f, -1e-9f, -3.0f}).requires_grad_();
  hafrm::PolicyInputs o;
  o.policy_chosen = q0, o.policy_rejected = torch::tensor({-1e4f, 0.0f, -2.0f});
  o.chosen_count = torch::ones({3}), o.rejected_count = torch::ones({3});
  auto orpo = hafrm::Orpo{}(o);
  orpo.loss.backward();
  CHECK(all_finite(orpo.loss));
  CHECK(all_finite(q0.grad()));
}

TEST_CASE("every registry loss rejects an empty batch by name", "[losses]") {
  hafrm::PolicyInputs empty;
  empty.policy_chosen = torch::empty({0}), empty.policy_rejected = torch::empty({0});
  empty.chosen_count = torch::empty({0}), empty.rejected_count = torch::empty({0});
  empty.kl_estimate = torch::tensor(0.0);
  for (const auto& name : hafrm::policy_loss_names()) {
    INFO(name);
    require_error([&] { hafrm::make_policy_loss(name)(empty); }, {"inputs.policy_chosen", "empty"});
  }
}
