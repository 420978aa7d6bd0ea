// forward_pair_packed equals the padded forward_pair (rewards, policy and reference sums, counts,
// parameter gradients) on a model whose every position mixes in its whole causal prefix, so any
// leak across a segment boundary, or a position that does not restart, changes the numbers.
#include <set>
#include <vector>

#include "hafrm/model/packed_pair.hpp"
#include "test_util.hpp"

using namespace hafrm_test;

namespace {

// h_t = E[id_t] + P[pos_t] + tanh(mean of E over the sequence's tokens 0..t) M. Logits (or the
// fused linear path's input and weight) from h, rewards from tanh(h) w + b.
struct PrefixModelImpl : torch::nn::Module {
  PrefixModelImpl(int64_t V, int64_t H, int64_t P, bool fused) : fused(fused) {
    E = register_parameter("E", torch::randn({V, H}));
    Pe = register_parameter("P", torch::randn({P, H}) * 0.5);
    M = register_parameter("M", torch::randn({H, H}) * 0.5);
    W = register_parameter("W", torch::randn({V, H}) * 0.5);
    w = register_parameter("w", torch::randn({H}));
  }
  hafrm::ModelOutputs outputs(const torch::Tensor& h, hafrm::Heads heads) {
    hafrm::ModelOutputs out;
    out.token_rewards = torch::matmul(torch::tanh(h), w);
    if (heads == hafrm::Heads::kReward) return out;
    if (fused) {
      out.lm_hidden = h, out.lm_head_weight = W;
    } else {
      out.logits = torch::matmul(h, W.t());
    }
    return out;
  }
  // Padded rows: positions 0.., the prefix mean along each row (right padding never precedes).
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor&,
                                  hafrm::Heads heads) {
    const int64_t T = ids.size(1);
    auto e = E.index_select(0, ids.reshape({-1})).view({ids.size(0), T, -1});
    auto n = torch::arange(1, T + 1, e.options()).view({1, T, 1});
    auto h = e + Pe.slice(0, 0, T).unsqueeze(0) + torch::matmul(torch::tanh(e.cumsum(1) / n), M);
    return outputs(h, heads);
  }
  // Packed grid: the same, with prefixes and positions restarting at each segment.
  hafrm::ModelOutputs haf_forward_packed(const hafrm::PackedInputs& in, hafrm::Heads heads) {
    const int64_t R = in.input_ids.size(0), L = in.input_ids.size(1);
    auto flat_pos = in.position_ids.reshape({-1});
    auto e = E.index_select(0, in.input_ids.reshape({-1}));  // [N, H]
    auto cs = e.cumsum(0);
    auto start = torch::arange(R * L, flat_pos.options()) - flat_pos;  // segment start
    auto before = torch::where((start > 0).unsqueeze(1),
                               cs.index_select(0, (start - 1).clamp_min(0)), torch::zeros_like(cs));
    auto mean = (cs - before) / (flat_pos + 1).to(e.scalar_type()).unsqueeze(1);
    auto h = e + Pe.index_select(0, flat_pos) + torch::matmul(torch::tanh(mean), M);
    return outputs(h.view({R, L, -1}), heads);
  }
  bool fused;
  torch::Tensor E, Pe, M, W, w;
};
TORCH_MODULE(PrefixModel);

struct Pairs {
  std::vector<std::vector<int64_t>> ci, cl, ri, rl;
  hafrm::PreferenceBatch padded(int64_t pad_id) const {
    auto side = [&](const auto& ids, const auto& labels, torch::Tensor& i, torch::Tensor& m,
                    torch::Tensor& l) {
      int64_t T = 0;
      for (const auto& s : ids) T = std::max<int64_t>(T, static_cast<int64_t>(s.size()));
      const auto B = static_cast<int64_t>(ids.size());
      i = torch::full({B, T}, pad_id, torch::kLong), m = torch::zeros({B, T}, torch::kLong);
      l = torch::full({B, T}, -100, torch::kLong);
      for (int64_t b = 0; b < B; ++b) {
        const auto n = static_cast<int64_t>(ids[b].size());
        i[b].slice(0, 0, n).copy_(torch::tensor(ids[b], torch::kLong));
        l[b].slice(0, 0, n).copy_(torch::tensor(labels[b], torch::kLong));
        m[b].slice(0, 0, n).fill_(1);
      }
    };
    hafrm::PreferenceBatch b;
    side(ci, cl, b.chosen_ids, b.chosen_mask, b.chosen_labels);
    side(ri, rl, b.rejected_ids, b.rejected_mask, b.rejected_labels);
    return b;
  }
};

// B pairs of lengths 2..max_len, a shared prompt of 1-3 tokens (labels -100).
Pairs random_pairs(int64_t B, int64_t V, int64_t max_len) {
  Pairs p;
  auto rnd = [](int64_t lo, int64_t hi) { return torch::randint(lo, hi + 1, {1}).item<int64_t>(); };
  for (int64_t b = 0; b < B; ++b) {
    const int64_t prompt = rnd(1, 3);
    std::vector<int64_t> pr;
    for (int64_t t = 0; t < prompt; ++t) pr.push_back(rnd(0, V - 1));
    for (auto* side : {&p.ci, &p.ri}) {
      auto ids = pr;
      const int64_t n = rnd(std::max<int64_t>(2, prompt + 1), max_len);
      while (static_cast<int64_t>(ids.size()) < n) ids.push_back(rnd(0, V - 1));
      std::vector<int64_t> lab(ids);
      std::fill(lab.begin(), lab.begin() + prompt, -100);
      side->push_back(ids);
      (side == &p.ci ? p.cl : p.rl).push_back(lab);
    }
  }
  return p;
}

std::vector<torch::Tensor> grads_of(torch::nn::Module& m, const torch::Tensor& loss) {
  m.zero_grad();
  loss.backward();
  std::vector<torch::Tensor> g;
  for (auto& p : m.parameters()) g.push_back(p.grad().clone());
  return g;
}

}  // namespace

TEST_CASE("forward_pair_packed equals the padded forward_pair, values and gradients",
          "[packed][model]") {
  const bool fused = GENERATE(false, true);
  const int64_t V = 23, H = 6, B = 7, row = 16;
  PrefixModel model(V, H, row, fused);
  auto pairs = random_pairs(B - 1, V, 11);
  // Two sides of 11 tokens cannot share a row of 16: this pair's sides land in different rows.
  std::vector<int64_t> a(11, 3), b(11, 4), lab(11, 5);
  lab[0] = -100;
  pairs.ci.push_back(a), pairs.cl.push_back(lab), pairs.ri.push_back(b), pairs.rl.push_back(lab);
  auto packed = hafrm::pack_pairs(pairs.ci, pairs.cl, pairs.ri, pairs.rl, row, /*pad_id=*/0);
  auto padded = pairs.padded(0);

  auto cu = packed.cu_seqlens;
  auto row_of = [&](const torch::Tensor& segs) {
    return cu.index_select(0, segs).div(row, "floor");
  };
  CHECK((row_of(packed.chosen_segments)[B - 1] != row_of(packed.rejected_segments)[B - 1])
            .item<bool>());

  auto gc = randn({B}, torch::kFloat), gr = randn({B}, torch::kFloat);
  auto loss_of = [&](const hafrm::PairForward& f) {
    return (f.rewards.chosen * gc).sum() - (f.rewards.rejected * gr).sum() +
           (f.policy.policy_chosen * gr).sum() + (f.policy.policy_rejected * gc).sum();
  };
  auto fp = hafrm::forward_pair_packed(model, packed);
  auto fd = hafrm::forward_pair(model, padded);
  CHECK(max_abs_diff(fp.rewards.chosen, fd.rewards.chosen) < 1e-5);
  CHECK(max_abs_diff(fp.rewards.rejected, fd.rewards.rejected) < 1e-5);
  CHECK(max_abs_diff(fp.policy.policy_chosen, fd.policy.policy_chosen) < 1e-4);
  CHECK(max_abs_diff(fp.policy.policy_rejected, fd.policy.policy_rejected) < 1e-4);
  CHECK(torch::equal(fp.policy.chosen_count, fd.policy.chosen_count));
  CHECK(torch::equal(fp.policy.rejected_count, fd.policy.rejected_count));
  auto g_packed = grads_of(*model, loss_of(fp));
  auto g_padded = grads_of(*model, loss_of(hafrm::forward_pair(model, padded)));
  for (std::size_t i = 0; i < g_packed.size(); ++i)
    CHECK(max_abs_diff(g_packed[i], g_padded[i]) < 1e-4);

  // With a frozen reference: the reference sums equal the padded ones; reward-only: no policy.
  PrefixModel reference(V, H, row, fused);
  auto fr = hafrm::forward_pair_packed(model, reference, packed);
  auto [rc, rr] = hafrm::reference_logprobs(reference, padded);
  CHECK(max_abs_diff(fr.policy.reference_chosen, rc) < 1e-4);
  CHECK(max_abs_diff(fr.policy.reference_rejected, rr) < 1e-4);
  auto fo = hafrm::forward_pair_packed(model, reference, packed, {.heads = hafrm::Heads::kReward});
  CHECK(max_abs_diff(fo.rewards.chosen, fd.rewards.chosen) < 1e-5);
  CHECK_FALSE(fo.policy.policy_chosen.defined());
}

TEST_CASE("pack_pairs places every side once, in rows of the given length", "[packed][model]") {
  const int64_t V = 50, B = 9, row = 12;
  auto pairs = random_pairs(B, V, 12);
  auto b = hafrm::pack_pairs(pairs.ci, pairs.cl, pairs.ri, pairs.rl, row, /*pad_id=*/V);
  const int64_t R = b.input_ids.size(0);
  CHECK(b.input_ids.size(1) == row);
  int64_t total = 0;
  for (int64_t k = 0; k < B; ++k)
    total += static_cast<int64_t>(pairs.ci[k].size() + pairs.ri[k].size());
  CHECK(R >= (total + row - 1) / row);
  CHECK(R < 2 * B);  // fewer rows than the padded layout's 2B
  auto ids = b.input_ids.reshape({-1}), labels = b.labels.reshape({-1});
  std::set<int64_t> used;
  for (int64_t k = 0; k < B; ++k) {
    for (int side = 0; side < 2; ++side) {
      const int64_t s = (side ? b.rejected_segments : b.chosen_segments)[k].item<int64_t>();
      CHECK(used.insert(s).second);
      const int64_t a = b.cu_seqlens[s].item<int64_t>(), e = b.cu_seqlens[s + 1].item<int64_t>();
      const auto& want_ids = side ? pairs.ri[k] : pairs.ci[k];
      const auto& want_labels = side ? pairs.rl[k] : pairs.cl[k];
      CHECK(torch::equal(ids.slice(0, a, e), torch::tensor(want_ids, torch::kLong)));
      CHECK(torch::equal(labels.slice(0, a, e), torch::tensor(want_labels, torch::kLong)));
    }
  }
  // Every other segment is a filler: all labels ignored.
  const int64_t S = b.cu_seqlens.size(0) - 1;
  for (int64_t s = 0; s < S; ++s) {
    if (used.count(s)) continue;
    CHECK((labels.slice(0, b.cu_seqlens[s].item<int64_t>(), b.cu_seqlens[s + 1].item<int64_t>()) ==
           -100)
              .all()
              .item<bool>());
  }
}

TEST_CASE("packed pair batches: bad inputs name the argument", "[packed][model]") {
  PrefixModel model(11, 4, 8, false);
  auto pairs = random_pairs(3, 11, 6);
  while (pairs.ci[0].size() < 6) pairs.ci[0].push_back(1), pairs.cl[0].push_back(1);
  CHECK_THROWS_WITH(
      hafrm::pack_pairs(pairs.ci, pairs.cl, pairs.ri, pairs.rl, 5),
      Catch::Contains("'chosen_ids'") && Catch::Contains("sequence 0") && Catch::Contains("got 6"));
  auto short_labels = pairs.cl;
  short_labels[1].pop_back();
  CHECK_THROWS_WITH(hafrm::pack_pairs(pairs.ci, short_labels, pairs.ri, pairs.rl, 8),
                    Catch::Contains("'chosen_labels'") && Catch::Contains("sequence 1"));
  CHECK_THROWS_WITH(hafrm::pack_pairs({}, {}, {}, {}, 8), Catch::Contains("empty batch"));
  auto b = hafrm::pack_pairs(pairs.ci, pairs.cl, pairs.ri, pairs.rl, 8);
  auto bad = b;
  bad.chosen_segments = b.chosen_segments.clone();
  bad.chosen_segments[0] = 99;
  CHECK_THROWS_WITH(hafrm::forward_pair_packed(model, bad),
                    Catch::Contains("'chosen_segments'") && Catch::Contains("got 99"));
  bad = b;
  bad.cu_seqlens = b.cu_seqlens.flip(0);
  CHECK_THROWS_WITH(hafrm::forward_pair_packed(model, bad), Catch::Contains("'cu_seqlens'"));
  bad = b;
  bad.labels = b.labels.slice(1, 0, 7);
  CHECK_THROWS_WITH(hafrm::forward_pair_packed(model, bad), Catch::Contains("'labels'"));
  CHECK_THROWS_WITH(hafrm::forward_pair_packed(model, b, {.keep_token_inputs = true}),
                    Catch::Contains("keep_token_inputs"));
}

TEST_CASE("packed batches take a model_token_logprobs hook for the policy and the reference",
          "[packed][model]") {
  const bool fused = GENERATE(false, true);
  const int64_t V = 19, H = 5, B = 5, row = 14;
  PrefixModel model(V, H, row, fused), reference(V, H, row, fused);
  auto pairs = random_pairs(B, V, 9);
  auto packed = hafrm::pack_pairs(pairs.ci, pairs.cl, pairs.ri, pairs.rl, row);
  auto padded = pairs.padded(0);
  const int64_t N = packed.input_ids.numel();

  // The library's own per-token kernels on the rows it is given: the packed path without a hook.
  int calls = 0;
  hafrm::PairForwardOptions o;
  o.model_token_logprobs = [&](const hafrm::ModelOutputs& rows, const torch::Tensor& labels,
                               const hafrm::TokenLogProbOptions& lo) {
    ++calls;
    CHECK(labels.sizes() == torch::IntArrayRef{N});
    if (rows.logits.defined()) {
      CHECK(rows.logits.sizes() == torch::IntArrayRef{N, V});
      return hafrm::compute_token_logprobs(rows.logits, labels, lo);
    }
    CHECK(rows.lm_hidden.sizes() == torch::IntArrayRef{N, H});
    return hafrm::compute_linear_token_logprobs(rows.lm_hidden, rows.lm_head_weight, labels, lo);
  };
  auto gc = randn({B}, torch::kFloat), gr = randn({B}, torch::kFloat);
  auto loss_of = [&](const hafrm::PairForward& f) {
    return (f.rewards.chosen * gc).sum() + (f.policy.policy_chosen * gr).sum() -
           (f.policy.policy_rejected * gc).sum();
  };
  auto fh = hafrm::forward_pair_packed(model, packed, o);
  CHECK(calls == 1);
  auto fp = hafrm::forward_pair_packed(model, packed);
  auto fd = hafrm::forward_pair(model, padded);
  for (const auto* want : {&fp, &fd}) {
    CHECK(max_abs_diff(fh.policy.policy_chosen, want->policy.policy_chosen) < 1e-4);
    CHECK(max_abs_diff(fh.policy.policy_rejected, want->policy.policy_rejected) < 1e-4);
    CHECK(torch::equal(fh.policy.chosen_count, want->policy.chosen_count));
    CHECK(torch::equal(fh.policy.rejected_count, want->policy.rejected_count));
  }
  auto g_hook = grads_of(*model, loss_of(fh));
  auto g_packed = grads_of(*model, loss_of(fp));
  auto g_padded = grads_of(*model, loss_of(fd));
  for (std::size_t i = 0; i < g_hook.size(); ++i) {
    CHECK(max_abs_diff(g_hook[i], g_packed[i]) < 1e-4);
    CHECK(max_abs_diff(g_hook[i], g_padded[i]) < 1e-4);
  }

  // With a reference model the hook runs twice: once for the reference, once for the policy.
  calls = 0;
  auto fr = hafrm::forward_pair_packed(model, reference, packed, o);
  CHECK(calls == 2);
  auto [rc, rr] = hafrm::reference_logprobs(reference, padded);
  CHECK(max_abs_diff(fr.policy.reference_chosen, rc) < 1e-4);
  CHECK(max_abs_diff(fr.policy.reference_rejected, rr) < 1e-4);
  calls = 0;
  auto [pc, pr] = hafrm::reference_logprobs_packed(reference, packed, o);
  CHECK(calls == 1);
  CHECK(max_abs_diff(pc, rc) < 1e-4);
  CHECK(max_abs_diff(pr, rr) < 1e-4);
  // The reward-only path computes no log-probs.
  calls = 0;
  o.heads = hafrm::Heads::kReward;
  hafrm::forward_pair_packed(model, reference, packed, o);
  CHECK(calls == 0);
}

TEST_CASE("packed batches refuse model_logprobs alone and check the token hook's outputs",
          "[packed][model]") {
  PrefixModel model(11, 4, 8, false);
  auto pairs = random_pairs(3, 11, 6);
  auto b = hafrm::pack_pairs(pairs.ci, pairs.cl, pairs.ri, pairs.rl, 8);
  int padded_calls = 0;
  hafrm::PairForwardOptions o;
  o.model_logprobs = [&](const hafrm::ModelOutputs& out, const torch::Tensor& labels,
                         const hafrm::TokenLogProbOptions& lo) {
    ++padded_calls;
    return hafrm::causal_sequence_logprobs(out.logits, labels, lo);
  };
  CHECK_THROWS_WITH(hafrm::forward_pair_packed(model, b, o),
                    Catch::Contains("'options.model_logprobs'") &&
                        Catch::Contains("set options.model_token_logprobs for packed batches"));
  CHECK_THROWS_WITH(hafrm::reference_logprobs_packed(model, b, o),
                    Catch::Contains("options.model_token_logprobs"));
  // Both set: the packed path uses the token hook, never the padded one.
  o.model_token_logprobs = [](const hafrm::ModelOutputs& rows, const torch::Tensor& labels,
                              const hafrm::TokenLogProbOptions& lo) {
    return hafrm::compute_token_logprobs(rows.logits, labels, lo);
  };
  auto f = hafrm::forward_pair_packed(model, model, b, o);
  CHECK(padded_calls == 0);
  CHECK(max_abs_diff(f.policy.policy_chosen,
                     hafrm::forward_pair_packed(model, b).policy.policy_chosen) < 1e-5);
  // A hook whose outputs do not cover the rows is an error naming it.
  o.model_token_logprobs = [](const hafrm::ModelOutputs& rows, const torch::Tensor& labels,
                              const hafrm::TokenLogProbOptions& lo) {
    return hafrm::compute_token_logprobs(rows.logits.slice(0, 1), labels.slice(0, 1), lo);
  };
  CHECK_THROWS_WITH(
      hafrm::forward_pair_packed(model, b, o),
      Catch::Contains("'options.model_token_logprobs'") && Catch::Contains("one value per row"));
}
