// The registry's public description of itself (loss_catalogue()): aliases build what their names
// build, every declared range is the one the functor enforces (checked at each bound), and the
// generated table in docs/losses.md is the catalogue's current output.
//
// Regenerate that table after changing the registry:
//   HAFRM_UPDATE_DOCS=1 build/dev/tests/hafrm_tests "[catalogue]"
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "hafrm/hafrm.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {

hafrm::PolicyInputs pair_inputs() {
  const int64_t B = 5;
  hafrm::PolicyInputs in;
  in.policy_chosen = -(randn({B}).abs() + 0.5) * 8,
  in.policy_rejected = -(randn({B}).abs() + 0.5) * 8;
  in.reference_chosen = -(randn({B}).abs() + 0.5) * 8;
  in.reference_rejected = -(randn({B}).abs() + 0.5) * 8;
  in.chosen_count = torch::randint(1, 20, {B}), in.rejected_count = torch::randint(1, 20, {B});
  in.kl_estimate = torch::tensor(0.2, torch::kDouble);
  return in;
}

double step(double bound) { return std::max(std::abs(bound) * 1e-9, 1e-12); }

std::string spec_number(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

// Builds `name:key=value` in the registry the entry belongs to; true when it builds.
bool builds(const hafrm::LossInfo& l, const std::string& params) {
  const std::string spec = l.name + (params.empty() ? "" : ":" + params);
  try {
    if (l.registry == "policy") hafrm::make_policy_loss(spec);
    if (l.registry == "reward") hafrm::make_reward_loss(spec);
    if (l.registry == "unpaired") hafrm::make_unpaired_loss(spec);
    if (l.registry == "weighting") hafrm::make_weighting(spec);
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

// The part of docs/losses.md between the catalogue markers.
const char* kBegin =
    "<!-- loss-catalogue:begin (generated: see tests/test_loss_catalogue_api.cpp) -->\n";
const char* kEnd = "<!-- loss-catalogue:end -->";

}  // namespace

TEST_CASE("aliases build what the catalogue names build", "[losses][catalogue]") {
  auto in = pair_inputs();
  for (const auto& l : hafrm::loss_catalogue()) {
    if (l.registry != "policy") continue;
    bool has_beta = false;
    for (const auto& p : l.params) has_beta = has_beta || p.name == "beta";
    const std::string params = has_beta ? ":beta=0.3" : "";
    for (const auto& a : l.aliases) {
      INFO(a << " = " << l.name);
      auto by_alias = hafrm::make_policy_loss(a + params)(in).loss.item<double>();
      auto by_name = hafrm::make_policy_loss(l.name + params)(in).loss.item<double>();
      CHECK(by_alias == by_name);
    }
  }
  hafrm::RewardInputs r{randn({4}), randn({4})};
  CHECK(hafrm::make_reward_loss("bt:center=0.1")(r).loss.item<double>() ==
        hafrm::make_reward_loss("bradley_terry:center=0.1")(r).loss.item<double>());
  CHECK(hafrm::make_reward_loss("hinge:margin=2")(r).loss.item<double>() ==
        hafrm::make_reward_loss("reward_hinge:margin=2")(r).loss.item<double>());
  // The name a functor reports in its errors is its catalogue name.
  CHECK(std::string(hafrm::Dpo::kName) == "dpo");
  CHECK(std::string(hafrm::RobustDpo::kName) == "robust_dpo");
  CHECK(std::string(hafrm::DpoHinge::kName) == "dpo_hinge");
  CHECK(std::string(hafrm::ChosenNll::kName) == "chosen_nll");
  CHECK(std::string(hafrm::BradleyTerry::kName) == "bradley_terry");
  CHECK(std::string(hafrm::RewardHinge::kName) == "reward_hinge");
}

TEST_CASE("every catalogue entry describes itself and its defaults build", "[losses][catalogue]") {
  const auto cat = hafrm::loss_catalogue();
  CHECK(cat.size() == hafrm::policy_loss_names().size() + hafrm::reward_loss_names().size() +
                          hafrm::unpaired_loss_names().size() + hafrm::weighting_names().size());
  for (const auto& l : cat) {
    INFO(l.registry << " " << l.name);
    CHECK(!l.type.empty());
    CHECK(!l.formula.empty());
    CHECK(builds(l, ""));
    for (const auto& p : l.params) {
      INFO(p.name);
      CHECK(!p.type.empty());
      CHECK(!p.default_value.empty());
      // A declared default is a value the spec may write back (except an optional modifier's).
      if (p.default_value != "off" && p.name != "f_alpha_divergence_coef")
        CHECK(builds(l, p.name + "=" + p.default_value));
    }
  }
}

TEST_CASE("each declared range is the range the functor enforces", "[losses][catalogue]") {
  namespace r = hafrm::detail::registry;
  using hafrm::registry::Kind;
  int checked = 0;
  auto check_entries = [&](const auto& entries, const char* registry) {
    for (const auto& e : entries) {
      hafrm::LossInfo l{.name = e.doc.name, .registry = registry};
      for (const auto& d : e.params) {
        if (!d.range) continue;
        INFO(registry << " " << e.doc.name << ":" << d.name << " in " << d.range->text());
        std::string prefix;
        if (d.name == "f_alpha_divergence_coef") {
          prefix = "f_divergence_type=alpha_divergence,";
          if (!builds(l, "f_divergence_type=alpha_divergence")) continue;  // not accepted here
        }
        const bool integer = d.kind == Kind::kInteger;
        auto try_value = [&](double v) {
          return builds(l,
                        prefix + d.name + "=" +
                            (integer ? std::to_string(static_cast<int64_t>(v)) : spec_number(v)));
        };
        const auto& range = *d.range;
        if (!std::isinf(range.lo)) {
          // A step well above round-off but far inside any neighbouring valid value.
          const double below = integer         ? range.lo - 1
                               : range.lo_open ? range.lo
                                               : range.lo - step(range.lo);
          CHECK_FALSE(try_value(below));
          const double at =
              range.lo_open ? (range.lo + std::min(range.hi, range.lo + 1.0)) / 2 : range.lo;
          CHECK(try_value(at));
        }
        if (!std::isinf(range.hi)) {
          const double above = range.hi_open ? range.hi : range.hi + step(range.hi);
          CHECK_FALSE(try_value(above));
          if (!range.hi_open) CHECK(try_value(range.hi));
        }
        if (range.or_zero && e.doc.name != "alphapo") CHECK(try_value(0.0));
        ++checked;
      }
    }
  };
  check_entries(r::policy_entries(), "policy");
  check_entries(r::reward_entries(), "reward");
  check_entries(r::unpaired_entries(), "unpaired");
  check_entries(r::weighting_entries(), "weighting");
  CHECK(checked > 60);
}

TEST_CASE("docs/losses.md's catalogue table is the registry's output", "[losses][catalogue]") {
  const std::string path = std::string(HAFRM_SOURCE_DIR) + "/docs/losses.md";
  std::ifstream f(path);
  REQUIRE(f.good());
  std::stringstream buf;
  buf << f.rdbuf();
  std::string doc = buf.str();
  const auto b = doc.find(kBegin);
  const auto e = doc.find(kEnd);
  REQUIRE(b != std::string::npos);
  REQUIRE(e != std::string::npos);
  const auto from = b + std::string(kBegin).size();
  const std::string generated = hafrm::loss_catalogue_markdown(hafrm::CatalogueEntries::kBuiltIn);
  if (std::getenv("HAFRM_UPDATE_DOCS") != nullptr) {
    doc.replace(from, e - from, generated);
    std::ofstream(path) << doc;
    WARN("rewrote the catalogue table in " << path);
    return;
  }
  INFO(
      "docs/losses.md's table differs from loss_catalogue_markdown(); regenerate with\n"
      "  HAFRM_UPDATE_DOCS=1 build/dev/tests/hafrm_tests \"[catalogue]\"");
  CHECK(doc.substr(from, e - from) == generated);
}
