// Sweeps over the whole built-in catalogue (registry.hpp), so that a loss added to the registry
// without its test or its documentation fails here:
//   - every policy and reward loss matches a float64 transcription of its formula, written below
//     from docs/losses.md, in value and in gradient (central differences of the transcription);
//   - every loss has its row in docs/losses.md, and the generated catalogue there is current;
//   - every spec written back with its declared defaults builds the same loss as the bare name.
// A new loss needs its transcription in kPolicyReferences (or kRewardReferences) and its row in
// docs/losses.md; nothing else in the tests names it.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {

// One pair in docs/losses.md's notation: summed log-probs, reference sums, token counts.
struct Pair {
  double pc, pr, rc, rr, nc, nr;
  double dc() const { return pc - rc; }
  double dr() const { return pr - rr; }
};
using Batch = std::vector<Pair>;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double log_sigmoid(double x) {
  return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}
double mean_of(const Batch& b, const std::function<double(const Pair&)>& f) {
  double s = 0;
  for (const auto& p : b) s += f(p);
  return s / static_cast<double>(b.size());
}
double chosen_nll(const Batch& b) {  // -sum(pi_c) / sum(n_c)
  double s = 0, n = 0;
  for (const auto& p : b) s += p.pc, n += p.nc;
  return -s / n;
}
// AOT's sorted difference: the i-th smallest of a minus the i-th smallest of b.
double aot_mean(std::vector<double> a, std::vector<double> b, double beta) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += -log_sigmoid(beta * (a[i] - b[i]));
  return s / static_cast<double>(a.size());
}
double alphapo(double q, double a) { return (1.0 - std::exp(-a * q)) / a; }

struct Reference {
  std::string spec;  // built through the registry, with non-default parameters where it has some
  std::function<double(const Batch&)> loss;
};

// Transcriptions of docs/losses.md, one per built-in policy loss, at the parameters of `spec`.
const std::map<std::string, Reference>& policy_references() {
  static const std::map<std::string, Reference> refs{
      {"dpo",
       {"dpo:beta=0.3",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) { return -log_sigmoid(0.3 * (p.dc() - p.dr())); });
        }}},
      {"conservative",
       {"conservative:beta=0.2,label_smoothing=0.2",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            const double x = 0.2 * (p.dc() - p.dr());
            return -0.8 * log_sigmoid(x) - 0.2 * log_sigmoid(-x);
          });
        }}},
      {"robust_dpo",
       {"robust_dpo:label_smoothing=0.2",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            const double x = 0.1 * (p.dc() - p.dr());
            return (-0.8 * log_sigmoid(x) + 0.2 * log_sigmoid(-x)) / 0.6;
          });
        }}},
      {"dpo_hinge",
       {"dpo_hinge:beta=0.5",
        [](const Batch& b) {
          return mean_of(
              b, [](const Pair& p) { return std::max(0.0, 1.0 - 0.5 * (p.dc() - p.dr())); });
        }}},
      {"ipo",
       {"ipo:beta=0.5",
        [](const Batch& b) {
          return mean_of(
              b, [](const Pair& p) { return std::pow(p.dc() / p.nc - p.dr() / p.nr - 1.0, 2); });
        }}},
      {"ipo_sum",
       {"ipo_sum:beta=0.5",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) { return std::pow(p.dc() - p.dr() - 1.0, 2); });
        }}},
      {"ipo_sqrt",
       {"ipo_sqrt:beta=0.5",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) { return 0.5 * std::pow(p.dc() - p.dr() - 1.0, 2); });
        }}},
      {"ipo_full",
       {"ipo_full:beta=0.5",
        [](const Batch& b) {
          return mean_of(b,
                         [](const Pair& p) { return std::pow(0.5 * (p.dc() - p.dr()) - 0.5, 2); });
        }}},
      {"sigmoid_norm",
       {"sigmoid_norm:beta=2",
        [](const Batch& b) {
          return mean_of(
              b, [](const Pair& p) { return -log_sigmoid(2.0 * (p.dc() / p.nc - p.dr() / p.nr)); });
        }}},
      {"exo_pair",
       {"exo_pair:label_smoothing=0.01",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            const double x = 0.1 * (p.dc() - p.dr()), e = 0.01;
            return sigmoid(x) * (log_sigmoid(x) - std::log(1 - e)) +
                   sigmoid(-x) * (log_sigmoid(-x) - std::log(e));
          });
        }}},
      {"nca_pair",
       {"nca_pair:beta=0.2",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            const double c = 0.2 * p.dc(), r = 0.2 * p.dr();
            return -log_sigmoid(c) - 0.5 * log_sigmoid(-c) - 0.5 * log_sigmoid(-r);
          });
        }}},
      {"bco_pair",
       {"bco_pair",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            return -log_sigmoid(0.1 * p.dc()) - log_sigmoid(-0.1 * p.dr());
          });
        }}},
      {"sppo_hard",
       {"sppo_hard:beta=0.5",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            return std::pow(p.dc() - 1.0, 2) + std::pow(p.dr() + 1.0, 2);
          });
        }}},
      {"aot",
       {"aot:beta=0.2",
        [](const Batch& b) {
          std::vector<double> a, r;
          for (const auto& p : b) a.push_back(p.pc - p.pr), r.push_back(p.rc - p.rr);
          return aot_mean(a, r, 0.2);
        }}},
      {"aot_unpaired",
       {"aot_unpaired:beta=0.2",
        [](const Batch& b) {
          std::vector<double> c, r;
          for (const auto& p : b) c.push_back(p.dc()), r.push_back(p.dr());
          return aot_mean(c, r, 0.2);
        }}},
      {"apo_zero",
       {"apo_zero:beta=0.3",
        [](const Batch& b) {
          return mean_of(
              b, [](const Pair& p) { return (1 - sigmoid(0.3 * p.dc())) + sigmoid(0.3 * p.dr()); });
        }}},
      {"apo_down",
       {"apo_down:beta=0.3",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            return sigmoid(0.3 * p.dc()) + (1 - sigmoid(0.3 * (p.dc() - p.dr())));
          });
        }}},
      {"discopop",
       {"discopop:beta=0.3,discopop_tau=0.5",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            const double z = 0.3 * (p.dc() - p.dr()), m = sigmoid(z / 0.5);
            return -log_sigmoid(z) * (1 - m) + std::exp(-z) * m;
          });
        }}},
      {"dpop",
       {"dpop:beta=0.3,lambda=2",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            const double penalty = std::max(0.0, p.rc - p.pc);
            return -log_sigmoid(0.3 * (p.dc() - p.dr() - 2.0 * penalty));
          });
        }}},
      {"sft", {"sft", [](const Batch& b) { return chosen_nll(b); }}},
      {"chosen_nll",
       {"chosen_nll",
        [](const Batch& b) { return mean_of(b, [](const Pair& p) { return -p.pc / p.nc; }); }}},
      {"cpo",
       {"cpo:beta=0.2,cpo_alpha=0.5",
        [&](const Batch& b) {
          const double nll = chosen_nll(b);
          return mean_of(
              b, [&](const Pair& p) { return -log_sigmoid(0.2 * (p.pc - p.pr)) + 0.5 * nll; });
        }}},
      {"simpo",
       {"simpo:beta=2,simpo_gamma=0.5",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            return -log_sigmoid(2.0 * (p.pc / p.nc - p.pr / p.nr - 0.25));
          });
        }}},
      {"alphapo",
       {"alphapo:beta=2.5,simpo_gamma=0.1,alpha=0.25",
        [](const Batch& b) {
          return mean_of(b, [](const Pair& p) {
            const double l = alphapo(p.pc / p.nc, 0.25) - alphapo(p.pr / p.nr, 0.25);
            return -log_sigmoid(2.5 * (l - 0.1 / 2.5));
          });
        }}},
      {"orpo",
       {"orpo:beta=0.2",
        [](const Batch& b) {
          const double nll = chosen_nll(b);
          return mean_of(b, [&](const Pair& p) {
            const double qc = p.pc / p.nc, qr = p.pr / p.nr;
            const double odds = (qc - qr) - (std::log1p(-std::exp(qc)) - std::log1p(-std::exp(qr)));
            return nll - 0.2 * log_sigmoid(odds);
          });
        }}},
      {"kto",
       {"kto:beta=0.2,undesirable_weight=1.5",
        [](const Batch& b) {
          const double z = 0.3;  // the inputs' KL estimate
          double s = 0;
          for (const auto& p : b)
            s += (1 - sigmoid(0.2 * (p.dc() - z))) + 1.5 * (1 - sigmoid(0.2 * (z - p.dr())));
          return s / (2.0 * static_cast<double>(b.size()));
        }}},
      {"apo_zero_unpaired",
       {"apo_zero_unpaired:beta=0.2",
        [](const Batch& b) {
          double s = 0;
          for (const auto& p : b) s += (1 - sigmoid(0.2 * p.dc())) + sigmoid(0.2 * p.dr());
          return s / (2.0 * static_cast<double>(b.size()));
        }}},
  };
  return refs;
}

// The reward losses, on (r_c, r_r) pairs.
struct RewardReference {
  std::string spec;
  std::function<double(double rc, double rr)> per_pair;
};
const std::map<std::string, RewardReference>& reward_references() {
  static const std::map<std::string, RewardReference> refs{
      {"bradley_terry",
       {"bradley_terry:label_smoothing=0.1,center=0.01",
        [](double c, double r) {
          return -0.9 * log_sigmoid(c - r) - 0.1 * log_sigmoid(r - c) + 0.01 * (c + r) * (c + r);
        }}},
      {"reward_hinge",
       {"reward_hinge:margin=0.5",
        [](double c, double r) { return std::max(0.0, 0.5 - (c - r)); }}},
      {"plackett_luce", {"plackett_luce", [](double c, double r) { return -log_sigmoid(c - r); }}},
  };
  return refs;
}

// Built-in names of one registry (a loss a test registers itself is not the catalogue's).
std::vector<std::string> built_in(const std::string& registry) {
  std::vector<std::string> names;
  for (const auto& l : hafrm::loss_catalogue())
    if (l.registry == registry && l.built_in) names.push_back(l.name);
  return names;
}

// B pairs whose log-ratios take both signs (DPOP's penalty is on for some, off for others), and
// whose mean log-probs stay below 0 (ORPO's odds).
Batch random_batch(int64_t B) {
  auto lp = [&] { return -(randn({B}).abs() * 4 + 1.0); };
  auto pc = lp(), pr = lp(), rc = lp(), rr = lp();
  auto nc = torch::randint(1, 9, {B}, torch::kDouble),
       nr = torch::randint(1, 9, {B}, torch::kDouble);
  Batch b;
  for (int64_t i = 0; i < B; ++i)
    b.push_back({pc[i].item<double>(), pr[i].item<double>(), rc[i].item<double>(),
                 rr[i].item<double>(), nc[i].item<double>(), nr[i].item<double>()});
  return b;
}

hafrm::PolicyInputs to_inputs(const Batch& b) {
  std::vector<double> pc, pr, rc, rr, nc, nr;
  for (const auto& p : b) {
    pc.push_back(p.pc), pr.push_back(p.pr), rc.push_back(p.rc), rr.push_back(p.rr);
    nc.push_back(p.nc), nr.push_back(p.nr);
  }
  auto t = [](const std::vector<double>& v) { return torch::tensor(v, torch::kDouble); };
  hafrm::PolicyInputs in;
  in.policy_chosen = t(pc).requires_grad_(), in.policy_rejected = t(pr).requires_grad_();
  in.reference_chosen = t(rc), in.reference_rejected = t(rr);
  in.chosen_count = t(nc), in.rejected_count = t(nr);
  in.kl_estimate = torch::tensor(0.3, torch::kDouble);
  return in;
}

// Central difference of f in one coordinate of the batch.
double central_difference(const std::function<double(const Batch&)>& f, Batch b, size_t i,
                          double Pair::*field) {
  const double h = 1e-5 * std::max(1.0, std::abs(b[i].*field));
  b[i].*field += h;
  const double up = f(b);
  b[i].*field -= 2 * h;
  const double down = f(b);
  return (up - down) / (2 * h);
}

// The gradient's i-th element; 0 where the loss does not read the tensor (no gradient at all).
double grad_at(const torch::Tensor& x, size_t i) {
  return x.grad().defined() ? x.grad()[static_cast<int64_t>(i)].item<double>() : 0.0;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  REQUIRE(f.good());
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("every built-in policy loss matches its float64 transcription, value and gradient",
          "[losses][sweep]") {
  const auto& refs = policy_references();
  const auto names = built_in("policy");
  REQUIRE(names.size() >= 27);
  for (const auto& name : names) {
    INFO(name << ": add its transcription to policy_references() in " << __FILE__);
    REQUIRE(refs.count(name) == 1);
  }
  for (const auto& [name, ref] : refs) {
    INFO(ref.spec);
    CHECK(std::find(names.begin(), names.end(), name) != names.end());  // no stale reference
    for (int trial = 0; trial < 3; ++trial) {
      const auto batch = random_batch(6);
      auto in = to_inputs(batch);
      auto out = hafrm::make_policy_loss(ref.spec)(in);
      CHECK(out.loss.item<double>() == Approx(ref.loss(batch)).epsilon(1e-10).margin(1e-12));
      out.loss.backward();
      for (size_t i = 0; i < batch.size(); ++i) {
        const double gc = central_difference(ref.loss, batch, i, &Pair::pc);
        const double gr = central_difference(ref.loss, batch, i, &Pair::pr);
        CHECK(grad_at(in.policy_chosen, i) == Approx(gc).epsilon(1e-5).margin(1e-7));
        CHECK(grad_at(in.policy_rejected, i) == Approx(gr).epsilon(1e-5).margin(1e-7));
      }
    }
  }
}

TEST_CASE("every built-in reward loss matches its float64 transcription, value and gradient",
          "[losses][sweep]") {
  const auto& refs = reward_references();
  for (const auto& name : built_in("reward")) {
    INFO(name << ": add its transcription to reward_references() in " << __FILE__);
    REQUIRE(refs.count(name) == 1);
  }
  for (const auto& [name, ref] : refs) {
    INFO(ref.spec);
    const int64_t B = 5;
    auto c = randn({B}).requires_grad_(), r = randn({B}).requires_grad_();
    auto out = hafrm::make_reward_loss(ref.spec)(hafrm::RewardInputs{.chosen = c, .rejected = r});
    double expect = 0;
    for (int64_t i = 0; i < B; ++i)
      expect += ref.per_pair(c[i].item<double>(), r[i].item<double>());
    CHECK(out.loss.item<double>() == Approx(expect / B).epsilon(1e-12));
    out.loss.backward();
    for (int64_t i = 0; i < B; ++i) {
      const double ci = c[i].item<double>(), ri = r[i].item<double>(), h = 1e-6;
      const double gc = (ref.per_pair(ci + h, ri) - ref.per_pair(ci - h, ri)) / (2 * h * B);
      const double gr = (ref.per_pair(ci, ri + h) - ref.per_pair(ci, ri - h)) / (2 * h * B);
      CHECK(c.grad()[i].item<double>() == Approx(gc).epsilon(1e-5).margin(1e-8));
      CHECK(r.grad()[i].item<double>() == Approx(gr).epsilon(1e-5).margin(1e-8));
    }
  }
}

TEST_CASE("every catalogue entry has its row in docs/losses.md", "[losses][sweep]") {
  const auto doc = read_file(std::string(HAFRM_SOURCE_DIR) + "/docs/losses.md");
  for (const auto& l : hafrm::loss_catalogue()) {
    if (!l.built_in) continue;
    INFO(l.registry << " '" << l.name << "': docs/losses.md needs a row starting | `" << l.name
                    << "`");
    // A hand-written row (formula and source) before the generated catalogue.
    const auto row = doc.find("\n| `" + l.name + "`");
    CHECK(row != std::string::npos);
    CHECK(row < doc.find("<!-- loss-catalogue:begin"));
  }
}

TEST_CASE("every spec written back with its declared defaults builds the same loss",
          "[losses][sweep]") {
  const auto batch = random_batch(5);
  auto in = to_inputs(batch);
  hafrm::RewardInputs r{randn({5}), randn({5})};
  for (const auto& l : hafrm::loss_catalogue()) {
    if (!l.built_in || (l.registry != "policy" && l.registry != "reward")) continue;
    std::string spec = l.name;
    for (const auto& p : l.params) {
      // An optional modifier's "off", and the alpha-divergence coefficient that is only read with
      // its divergence, have no spelling that means "default".
      if (p.default_value == "off" || p.name == "f_alpha_divergence_coef") continue;
      spec += (spec == l.name ? ":" : ",") + p.name + "=" + p.default_value;
    }
    INFO(spec);
    if (l.registry == "policy") {
      CHECK(hafrm::make_policy_loss(spec)(in).loss.item<double>() ==
            hafrm::make_policy_loss(l.name)(in).loss.item<double>());
    } else {
      CHECK(hafrm::make_reward_loss(spec)(r).loss.item<double>() ==
            hafrm::make_reward_loss(l.name)(r).loss.item<double>());
    }
  }
}
