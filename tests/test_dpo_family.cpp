// hafrm/losses/dpo_family.hpp: the rest of TRL's DPO family (sigmoid_norm, exo_pair, nca_pair,
// bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop; sft is ChosenNll) against
// float64 transcriptions of docs/losses.md, value and gradient; bad parameters named in the error.
#include <algorithm>
#include <cmath>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
using namespace hafrm_test::catalogue;

TEST_CASE("the rest of the DPO family matches LOSSES.md", "[losses]") {
  const double beta = GENERATE(0.1, 0.7);
  const bool ref = GENERATE(true, false);
  INFO("beta " << beta << ", reference " << ref);
  check_value_and_grad(hafrm::NcaPair{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double c = beta * (pc - rc), r = beta * (pr - rr);
                         return -log_sig(c) - 0.5 * log_sig(-c) - 0.5 * log_sig(-r);
                       }),
                       ref);
  check_value_and_grad(hafrm::BcoPair{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         return -log_sig(beta * (pc - rc)) - log_sig(-beta * (pr - rr));
                       }),
                       ref);
  check_value_and_grad(hafrm::SppoHard{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double w = (pc - rc) - 1 / (2 * beta), l = (pr - rr) + 1 / (2 * beta);
                         return w * w + l * l;
                       }),
                       ref);
  check_value_and_grad(hafrm::ApoZero{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         return (1 - sig(beta * (pc - rc))) + sig(beta * (pr - rr));
                       }),
                       ref);
  check_value_and_grad(hafrm::ApoDown{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double dc = pc - rc, dr = pr - rr;
                         return sig(beta * dc) + (1 - sig(beta * (dc - dr)));
                       }),
                       ref);
  check_value_and_grad(hafrm::DiscoPop{.beta = beta},
                       pairwise([=](double pc, double pr, double rc, double rr, double, double) {
                         double z = beta * ((pc - rc) - (pr - rr)), m = sig(z / 0.05);
                         // exp(-z) m in log space: for z < -709 exp(-z) overflows while m
                         // underflows to 0, and inf * 0 would make the expected value NaN.
                         return -log_sig(z) * (1 - m) + std::exp(-z + log_sig(z / 0.05));
                       }),
                       ref, 2.0);
  const double eps = GENERATE(0.0, 0.15);
  // aot: sort both margins over the batch, ascending, then the conservative sigmoid loss.
  auto sorted_cons = [=](std::vector<double> x, std::vector<double> y) {
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = cons(beta * (x[i] - y[i]), eps);
    return out;
  };
  check_value_and_grad(
      hafrm::Aot{.beta = beta, .label_smoothing = eps},
      [=](const Batch& b) {
        std::vector<double> x(b.size()), y(b.size());
        for (size_t i = 0; i < b.size(); ++i) x[i] = b.pc[i] - b.pr[i], y[i] = b.rc[i] - b.rr[i];
        return sorted_cons(x, y);
      },
      ref);
  check_value_and_grad(
      hafrm::AotUnpaired{.beta = beta, .label_smoothing = eps},
      [=](const Batch& b) {
        std::vector<double> x(b.size()), y(b.size());
        for (size_t i = 0; i < b.size(); ++i) x[i] = b.pc[i] - b.rc[i], y[i] = b.pr[i] - b.rr[i];
        return sorted_cons(x, y);
      },
      ref);
  // sft: the chosen tokens' mean NLL over the whole batch, the same value for every pair.
  check_value_and_grad(hafrm::ChosenNll{.token_weighted = true}, [](const Batch& b) {
    double s = 0, n = 0;
    for (size_t i = 0; i < b.size(); ++i) s += b.pc[i], n += b.nc[i];
    return std::vector<double>(b.size(), -s / n);
  });
}

TEST_CASE("the DPO family rejects bad parameters and missing counts by name", "[losses]") {
  auto p = make_pairs(4);
  auto in = p.inputs();
  // beta <= 0 for every functor.
  require_error([&] { hafrm::SigmoidNorm{.beta = 0}(in); }, {"sigmoid_norm", "beta", "> 0"});
  require_error([&] { hafrm::ExoPair{.beta = -1}(in); }, {"exo_pair", "beta"});
  require_error([&] { hafrm::NcaPair{.beta = 0}(in); }, {"nca_pair", "beta"});
  require_error([&] { hafrm::BcoPair{.beta = 0}(in); }, {"bco_pair", "beta"});
  require_error([&] { hafrm::SppoHard{.beta = 0}(in); }, {"sppo_hard", "beta"});
  require_error([&] { hafrm::Aot{.beta = 0}(in); }, {"aot", "beta"});
  require_error([&] { hafrm::AotUnpaired{.beta = 0}(in); }, {"aot_unpaired", "beta"});
  require_error([&] { hafrm::ApoZero{.beta = 0}(in); }, {"apo_zero", "beta"});
  require_error([&] { hafrm::ApoDown{.beta = 0}(in); }, {"apo_down", "beta"});
  require_error([&] { hafrm::DiscoPop{.beta = 0}(in); }, {"discopop", "beta"});
  // epsilon and tau outside their ranges.
  require_error([&] { hafrm::ExoPair{.label_smoothing = 0}(in); },
                {"exo_pair", "label_smoothing", "(0, 1)"});
  require_error([&] { hafrm::ExoPair{.label_smoothing = 1}(in); }, {"exo_pair", "label_smoothing"});
  require_error([&] { hafrm::Aot{.label_smoothing = -0.1}(in); }, {"aot", "label_smoothing"});
  require_error([&] { hafrm::DiscoPop{.tau = 0}(in); }, {"discopop", "tau"});
  // Counts where a loss takes means.
  auto no_counts = in;
  no_counts.chosen_count = torch::Tensor();
  require_error([&] { hafrm::SigmoidNorm{}(no_counts); }, {"sigmoid_norm", "inputs.chosen_count"});
}
