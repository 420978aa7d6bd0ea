// One rank of the vocabulary-parallel scenarios (test_vocab_parallel.cpp launches them): every
// rank builds the same full logits / LM head from one seed, keeps its vocabulary shard, and holds
// the vocabulary-parallel results against the unsplit single-process computation it runs itself.
// Exit codes: 0 passed, 1 wrong result or unexpected error (the reason on stderr).
#include <cstdio>
#include <string>
#include <vector>

#include <hafrm/distributed/vocab_parallel.hpp>
#include <hafrm/distributed/vocab_parallel_linear.hpp>
#include <hafrm/model/packed_pair.hpp>
#include <hafrm/model/pair_forward.hpp>
#include <hafrm/torch/linear_logprobs.hpp>
#include <hafrm/torch/token_logprobs.hpp>

namespace hd = hafrm::distributed;

namespace {

constexpr int64_t kV = 11;  // divisible by neither 2 nor 3

// float32 statistics merged over shards vs the single-pass kernel: a few ulp of values ~10.
constexpr double kTol = 2e-5;

struct Failure {
  std::string what;
};

void expect_close(const torch::Tensor& got, const torch::Tensor& want, const std::string& what,
                  double tol = kTol) {
  if (got.defined() != want.defined()) throw Failure{what + ": defined differs"};
  if (!got.defined()) return;
  if (got.sizes() != want.sizes()) throw Failure{what + ": shape differs"};
  if (got.scalar_type() == torch::kBool || want.scalar_type() == torch::kBool) {
    if (!torch::equal(got, want)) throw Failure{what + ": differs"};
    return;
  }
  auto g = got.to(torch::kDouble), w = want.to(torch::kDouble);
  if (!torch::allclose(g, w, tol, tol)) {
    const double d = (g - w).abs().max().item<double>();
    throw Failure{what + ": max abs difference " + std::to_string(d)};
  }
}

void expect_outputs(const hafrm::TokenLogProbs& got, const hafrm::TokenLogProbs& want,
                    const std::string& what) {
  expect_close(got.logprobs, want.logprobs, what + " logprobs");
  expect_close(got.lse, want.lse, what + " lse");
  expect_close(got.entropy, want.entropy, what + " entropy");
  expect_close(got.log_sum_p2, want.log_sum_p2, what + " log_sum_p2");
  expect_close(got.mean_logit, want.mean_logit, what + " mean_logit");
  expect_close(got.is_argmax, want.is_argmax, what + " is_argmax");
  expect_close(got.mask, want.mask, what + " mask");
}

// Uneven contiguous chunks, assigned in reverse rank order (rank 0 owns the last one), so the
// ranges need not follow the ranks.
std::pair<int64_t, int64_t> chunk_of(int rank, int world) {
  const int c = world - 1 - rank;
  return {c * kV / world, (c + 1) * kV / world};
}

at::Generator gen(uint64_t seed) { return torch::make_generator<at::CPUGeneratorImpl>(seed); }

// Labels [B, T]: random ids, every 4th position ignored, and a few set to their row's argmax so
// is_argmax is true somewhere. hi: ids drawn from [0, hi) (a small hi leaves ranks without
// targets).
torch::Tensor make_labels(const torch::Tensor& logits, int64_t hi, uint64_t seed) {
  auto g = gen(seed);
  auto y = torch::randint(0, hi, {logits.size(0), logits.size(1)}, g, torch::kLong);
  auto am = logits.argmax(-1);
  auto pick = torch::rand({y.size(0), y.size(1)}, g) < 0.3;
  y = torch::where(pick & (am < hi), am, y);
  auto pos = torch::arange(y.numel()).view(y.sizes());
  return torch::where(pos % 4 == 1, torch::full({}, -100, y.options()), y);
}

std::vector<hafrm::TokenLogProbOptions> option_sets() {
  hafrm::TokenLogProbOptions all;
  all.return_lse = all.return_entropy = all.return_log_sum_p2 = true;
  all.return_mean_logit = all.return_is_argmax = true;
  auto transformed = all;
  transformed.logit_scale = 1.7, transformed.softcap = 4.0, transformed.temperature = 0.8;
  auto negative = all;
  negative.logit_scale = -0.9;
  hafrm::TokenLogProbOptions plain;  // log-probs only
  plain.ignore_index = -1;
  return {all, transformed, negative, plain};
}

torch::Tensor relabel(torch::Tensor y, const hafrm::TokenLogProbOptions& o) {
  return torch::where(y == -100, torch::full({}, o.ignore_index, y.options()), y);
}

// Gradient weights for the log-probs and the entropy: differentiable outputs, both used.
torch::Tensor weighted_sum(const hafrm::TokenLogProbs& t, uint64_t seed) {
  auto g = gen(seed);
  auto l = (t.logprobs * torch::randn(t.logprobs.sizes(), g)).sum();
  if (t.entropy.defined()) l = l + (t.entropy * torch::randn(t.entropy.sizes(), g)).sum();
  return l;
}

void token_path(const hd::VocabParallel& vp) {
  const int64_t v0 = vp.vocab_begin(), n = vp.shard_size();
  auto full0 = torch::randn({3, 5, kV}, gen(11)) * 3;
  for (const int64_t hi : {kV, chunk_of(vp.comm().world_size() - 1, vp.comm().world_size()).second})
    for (const auto& o : option_sets()) {
      const std::string what = "token path (labels < " + std::to_string(hi) + ", scale " +
                               std::to_string(o.logit_scale) + ")";
      auto y = relabel(make_labels(full0, hi, 5 + hi), o);
      auto full = full0.clone().requires_grad_(true);
      auto shard = full0.narrow(-1, v0, n).clone().requires_grad_(true);
      auto want = hafrm::compute_token_logprobs(full, y, o);
      auto got = hd::compute_token_logprobs(shard, y, vp, o);
      expect_outputs(got, want, what);
      weighted_sum(want, 3).backward();
      weighted_sum(got, 3).backward();
      expect_close(shard.grad(), full.grad().narrow(-1, v0, n), what + " d logits");

      auto sw = hafrm::sequence_logprobs(full0, y, o), sg = hd::sequence_logprobs(shard, y, vp, o);
      expect_close(sg.sum, sw.sum, what + " sequence sum");
      expect_close(sg.mean, sw.mean, what + " sequence mean");
      expect_close(sg.count, sw.count, what + " sequence count");
    }
  {
    // bfloat16 logits: both paths read the same bf16 values and compute in float32; the
    // gradients are rounded to bf16 (8 bits) from slightly different float32 values.
    auto o = option_sets()[0];
    auto y = make_labels(full0, kV, 7);
    auto full = full0.to(torch::kBFloat16).requires_grad_(true);
    auto shard = full.detach().narrow(-1, v0, n).clone().requires_grad_(true);
    auto want = hafrm::compute_token_logprobs(full, y, o);
    auto got = hd::compute_token_logprobs(shard, y, vp, o);
    expect_outputs(got, want, "bf16 token path");
    weighted_sum(want, 8).backward();
    weighted_sum(got, 8).backward();
    expect_close(shard.grad(), full.grad().narrow(-1, v0, n), "bf16 d logits", 1e-2);
  }
  // Causal: unshifted logits, labels aligned with the ids.
  hafrm::TokenLogProbOptions o;
  o.return_entropy = true;
  auto y = make_labels(full0, kV, 9);
  auto full = full0.clone().requires_grad_(true);
  auto shard = full0.narrow(-1, v0, n).clone().requires_grad_(true);
  auto want = hafrm::causal_sequence_logprobs(full, y, o);
  auto got = hd::causal_sequence_logprobs(shard, y, vp, o);
  expect_close(got.sum, want.sum, "causal sum");
  expect_outputs(got.tokens, want.tokens, "causal");
  weighted_sum(want.tokens, 4).backward();
  weighted_sum(got.tokens, 4).backward();
  expect_close(shard.grad(), full.grad().narrow(-1, v0, n), "causal d logits");
}

void linear_path(const hd::VocabParallel& vp) {
  const int64_t v0 = vp.vocab_begin(), n = vp.shard_size(), H = 6;
  auto h0 = torch::randn({3, 5, H}, gen(21));
  auto w0 = torch::randn({kV, H}, gen(22));
  for (auto o : option_sets()) {
    for (const auto hg : {hd::HiddenGrad::kSumOverRanks, hd::HiddenGrad::kLocal}) {
      o.linear_chunk_tokens = 4, o.linear_chunk_vocab = 2;  // several tiles each way
      const std::string what = std::string("linear path (") +
                               (hg == hd::HiddenGrad::kLocal ? "local" : "summed") +
                               " hidden grad, scale " + std::to_string(o.logit_scale) + ")";
      auto y = relabel(make_labels(torch::matmul(h0, w0.t()), kV, 31), o);
      auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
      auto hs = h0.clone().requires_grad_(true);
      auto ws = w0.narrow(0, v0, n).clone().requires_grad_(true);
      auto want = hafrm::compute_linear_token_logprobs(h, w, y, o);
      auto got = hd::compute_linear_token_logprobs(hs, ws, y, vp, o, hg);
      expect_outputs(got, want, what);
      weighted_sum(want, 6).backward();
      weighted_sum(got, 6).backward();
      expect_close(ws.grad(), w.grad().narrow(0, v0, n), what + " d weight_shard");
      auto gh = hs.grad().clone();
      if (hg == hd::HiddenGrad::kLocal) vp.comm().allreduce_(gh);  // the caller's sum
      expect_close(gh, h.grad(), what + " d hidden");
    }
  }
}

// A causal LM with a reward head whose LM head is full (shard == nullopt) or this rank's shard.
struct ToyLM {
  torch::Tensor emb, trunk, head, reward;  // [V, H], [H, H], [V or V_shard, H], [H]
  const hd::VocabParallel* vp = nullptr;   // set: the head is a shard
  bool linear = false;                     // return lm_hidden / lm_head_weight
  hafrm::ModelOutputs haf_forward(const torch::Tensor& ids, const torch::Tensor& mask) {
    auto x = torch::tanh(torch::matmul(
        emb.index_select(0, ids.reshape({-1})).view({ids.size(0), ids.size(1), -1}), trunk));
    x = x * mask.unsqueeze(-1).to(x.scalar_type());
    hafrm::ModelOutputs out;
    out.token_rewards = torch::matmul(x, reward);
    if (linear) {
      out.lm_hidden = x, out.lm_head_weight = head;
    } else {
      // Each rank's logits cover its shard only: the trunk's gradient is summed over the ranks.
      out.logits = torch::matmul(vp ? hd::reduce_grad_over_shards(x, *vp) : x, head.t());
    }
    return out;
  }
  // Positions do not interact, so the packed grid is the same per-token computation.
  hafrm::ModelOutputs haf_forward_packed(const hafrm::PackedInputs& in, hafrm::Heads) {
    return haf_forward(in.input_ids, in.attention_mask);
  }
  std::vector<torch::Tensor> params() const { return {emb, trunk, head, reward}; }
};

// ToyLM weights {emb, trunk, head, reward} with hidden size H.
std::vector<torch::Tensor> toy_weights(int64_t H, const at::Generator& g) {
  return {torch::randn({kV, H}, g), torch::randn({H, H}, g), torch::randn({kV, H}, g),
          torch::randn({H}, g)};
}

// A ToyLM on copies of `w` (leaves requiring grad); with `split`, this rank's rows of the head.
ToyLM toy_lm(const std::vector<torch::Tensor>& w, const hd::VocabParallel& vp, bool split,
             bool linear) {
  ToyLM m;
  m.emb = w[0].clone().requires_grad_(true), m.trunk = w[1].clone().requires_grad_(true);
  m.head = (split ? w[2].narrow(0, vp.vocab_begin(), vp.shard_size()) : w[2])
               .clone()
               .requires_grad_(true);
  m.reward = w[3].clone().requires_grad_(true);
  m.vp = split ? &vp : nullptr, m.linear = linear;
  return m;
}

// Backpropagates one loss over the policy sums and rewards through both forwards and checks that
// the split model's gradients equal the full one's (the head: this rank's rows).
void expect_toy_gradients(const hafrm::PairForward& want, const ToyLM& full,
                          const hafrm::PairForward& got, const ToyLM& split,
                          const hd::VocabParallel& vp, const std::string& what) {
  auto loss = [](const hafrm::PairForward& f) {
    return (f.policy.policy_chosen - 0.5 * f.policy.policy_rejected).sum() +
           (f.rewards.chosen - f.rewards.rejected).sum();
  };
  loss(want).backward();
  loss(got).backward();
  const char* names[] = {"emb", "trunk", "head", "reward"};
  for (std::size_t i = 0; i < 4; ++i) {
    auto w = full.params()[i].grad();
    if (i == 2) w = w.narrow(0, vp.vocab_begin(), vp.shard_size());
    expect_close(split.params()[i].grad(), w, what + " d " + names[i]);
  }
}

void pair_forward(const hd::VocabParallel& vp) {
  const int64_t H = 5, B = 2;
  auto g = gen(41);
  hafrm::PreferenceBatch b;
  b.chosen_ids = torch::randint(0, kV, {B, 7}, g, torch::kLong);
  b.rejected_ids = torch::randint(0, kV, {B, 6}, g, torch::kLong);
  b.chosen_mask = torch::ones_like(b.chosen_ids),
  b.rejected_mask = torch::ones_like(b.rejected_ids);
  auto prompt = [](torch::Tensor ids) {
    ids = ids.clone();
    ids.slice(1, 0, 2).fill_(-100);
    return ids;
  };
  b.chosen_labels = prompt(b.chosen_ids), b.rejected_labels = prompt(b.rejected_ids);
  const auto p0 = toy_weights(H, g);
  for (const bool linear : {false, true}) {
    const std::string what = linear ? "forward_pair (linear)" : "forward_pair (logits)";
    ToyLM full = toy_lm(p0, vp, false, linear), split = toy_lm(p0, vp, true, linear);
    ToyLM ref_full = toy_lm(p0, vp, false, linear), ref_split = toy_lm(p0, vp, true, linear);
    hafrm::PairForwardOptions o;
    o.keep_token_inputs = true;
    o.logprobs.return_log_sum_p2 = true;
    auto want = hafrm::forward_pair(full, ref_full, b, o);
    o.model_logprobs = hd::vocab_parallel_logprobs(vp);
    auto got = hafrm::forward_pair(split, ref_split, b, o);
    expect_close(got.policy.policy_chosen, want.policy.policy_chosen, what + " chosen");
    expect_close(got.policy.policy_rejected, want.policy.policy_rejected, what + " rejected");
    expect_close(got.policy.reference_chosen, want.policy.reference_chosen, what + " ref chosen");
    expect_close(got.policy.tokens->log_sum_p2_rejected, want.policy.tokens->log_sum_p2_rejected,
                 what + " log_sum_p2");
    expect_close(got.rewards.chosen, want.rewards.chosen, what + " rewards");
    expect_toy_gradients(want, full, got, split, vp, what);
  }
}

// forward_pair_packed with vocab_parallel_token_logprobs (policy and reference) equals the
// single-process packed path on the unsplit head: sums, counts, rewards and every gradient.
void packed_pair_forward(const hd::VocabParallel& vp) {
  const int64_t H = 5, B = 3, row = 12;
  auto g = gen(51);
  std::vector<std::vector<int64_t>> ci, cl, ri, rl;
  for (int64_t i = 0; i < B; ++i)
    for (auto [ids, labels] : {std::pair{&ci, &cl}, std::pair{&ri, &rl}}) {
      const int64_t len = 3 + torch::randint(0, 6, {1}, g).item<int64_t>();
      auto t = torch::randint(0, kV, {len}, g, torch::kLong);
      ids->emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + len);
      labels->push_back(ids->back());
      labels->back()[0] = -100;  // a one-token prompt
    }
  auto b = hafrm::pack_pairs(ci, cl, ri, rl, row);
  const auto p0 = toy_weights(H, g);
  for (const bool linear : {false, true}) {
    const std::string what = linear ? "packed (linear)" : "packed (logits)";
    ToyLM full = toy_lm(p0, vp, false, linear), split = toy_lm(p0, vp, true, linear);
    ToyLM ref_full = toy_lm(p0, vp, false, linear), ref_split = toy_lm(p0, vp, true, linear);
    hafrm::PairForwardOptions o;
    o.logprobs.return_entropy = true;
    auto want = hafrm::forward_pair_packed(full, ref_full, b, o);
    o.model_logprobs = hd::vocab_parallel_logprobs(vp);  // the padded path's; unused here
    o.model_token_logprobs = hd::vocab_parallel_token_logprobs(vp);
    auto got = hafrm::forward_pair_packed(split, ref_split, b, o);
    expect_close(got.policy.policy_chosen, want.policy.policy_chosen, what + " chosen");
    expect_close(got.policy.policy_rejected, want.policy.policy_rejected, what + " rejected");
    expect_close(got.policy.chosen_count, want.policy.chosen_count, what + " chosen count");
    expect_close(got.policy.reference_chosen, want.policy.reference_chosen, what + " ref chosen");
    expect_close(got.policy.reference_rejected, want.policy.reference_rejected,
                 what + " ref rejected");
    expect_close(got.rewards.chosen, want.rewards.chosen, what + " rewards");
    expect_toy_gradients(want, full, got, split, vp, what);
  }
}

template <class F>
void expect_error(F&& f, const std::vector<std::string>& parts, const std::string& what) {
  try {
    f();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    for (const auto& p : parts)
      if (msg.find(p) == std::string::npos)
        throw Failure{what + ": message lacks '" + p + "': " + msg};
    std::fprintf(stderr, "rank: expected error (%s): %s\n", what.c_str(), msg.c_str());
    return;
  }
  throw Failure{what + ": no error"};
}

void bad_inputs(const std::shared_ptr<hd::Communicator>& comm) {
  const int r = comm->rank(), W = comm->world_size();
  const auto range = chunk_of(r, W);
  const int64_t b = range.first, e = range.second;  // plain names: lambdas capture them
  // Every rank sees the same verdict (and no rank is left waiting in a collective).
  // Rank 0 owns the last chunk (b > 0): moving its start overlaps or uncovers its neighbour's end.
  expect_error([&] { hd::VocabParallel::create(comm, b - (r == 0 ? 1 : 0), e); }, {"overlap"},
               "overlapping ranges");
  const int64_t b0 = chunk_of(0, W).first;  // rank 0's start: the gap opens there
  expect_error(
      [&] { hd::VocabParallel::create(comm, b + (r == 0 ? 1 : 0), e); },
      {"without gaps", "no rank owns [" + std::to_string(b0) + ", " + std::to_string(b0 + 1) + ")"},
      "a gap");
  expect_error([&] { hd::VocabParallel::create(comm, b, r == 1 ? b : e); },
               {"0 <= vocab_begin < vocab_end", "rank 1"}, "an empty range");
  expect_error([&] { hd::VocabParallel::create(comm, b + (r == W - 1 ? 1 : 0), e); },
               {"no rank owns [0, 1)"}, "no rank owns 0");
  auto vp = hd::VocabParallel::create(comm, b, e);
  if (vp.vocab_size() != kV) throw Failure{"vocab_size " + std::to_string(vp.vocab_size())};
  const int64_t n = vp.shard_size();
  auto y = torch::zeros({2, 3}, torch::kLong);
  expect_error(
      [&] {
        hd::token_logprobs(torch::randn({2, 3, n + 1}), y, vp);
      },
      {"'logits_shard'", "vocab_end - vocab_begin"}, "wrong shard width");
  auto y_big = y.clone();
  y_big[1][2] = kV;  // in range for no shard: beyond the whole vocabulary
  expect_error(
      [&] {
        hd::token_logprobs(torch::randn({2, 3, n}), y_big, vp);
      },
      {"'labels'", "[0, 11)"}, "label past the vocabulary");
  auto y_neg = y.clone();
  y_neg[0][0] = -3;
  expect_error(
      [&] {
        hd::sequence_logprobs(torch::randn({2, 3, n}), y_neg, vp);
      },
      {"'labels'", "found -3"}, "negative label");
  expect_error(
      [&] {
        hd::linear_token_logprobs(torch::randn({2, 3, 4}), torch::randn({n + 2, 4}), y, vp);
      },
      {"'weight_shard'"}, "wrong weight shard");
  expect_error(
      [&] {
        hd::linear_token_logprobs(torch::randn({2, 3, 4}), torch::randn({n, 4}), y_big, vp);
      },
      {"'labels'"}, "linear label past the vocabulary");
  hafrm::TokenLogProbOptions ref;
  ref.backend = hafrm::LogProbBackend::kReference;
  expect_error(
      [&] {
        hd::token_logprobs(torch::randn({2, 3, n}), y, vp, ref);
      },
      {"'options.backend'"}, "reference backend");
  comm->barrier();
}

// Tensor-parallel groups inside the world (Communicator::split): colors rank % 2, so 3 ranks
// form {0, 2} and {1} and 2 ranks two groups of one. Each group sums over its own members only,
// runs every vocab-parallel path over its members, and a second split gets fresh connections.
void subgroups(const std::shared_ptr<hd::Communicator>& comm) {
  const int r = comm->rank(), W = comm->world_size();
  auto tp = comm->split(r % 2);
  int64_t want_size = 0, want_rank = 0, want_sum = 0;
  for (int q = 0; q < W; ++q)
    if (q % 2 == r % 2) want_rank += q < r, ++want_size, want_sum += q + 1;
  if (tp->world_size() != want_size || tp->rank() != want_rank)
    throw Failure{"split: group rank " + std::to_string(tp->rank()) + " of " +
                  std::to_string(tp->world_size()) + ", expected " + std::to_string(want_rank) +
                  " of " + std::to_string(want_size)};
  auto t = torch::full({1}, static_cast<double>(r + 1), torch::kDouble);
  tp->allreduce_(t);
  if (t.item<double>() != static_cast<double>(want_sum))
    throw Failure{"split: group sum " + std::to_string(t.item<double>()) + ", expected " +
                  std::to_string(want_sum)};
  const auto [b, e] = chunk_of(tp->rank(), tp->world_size());
  auto vp = hd::VocabParallel::create(tp, b, e);
  if (vp.vocab_size() != kV) throw Failure{"group vocab_size " + std::to_string(vp.vocab_size())};
  token_path(vp);
  linear_path(vp);
  pair_forward(vp);
  auto all = comm->split(0);  // everyone again, over new connections
  if (all->world_size() != W || all->rank() != r) throw Failure{"split(0) is not the world"};
  if (all->allreduce(1.0) != static_cast<double>(W)) throw Failure{"split(0) sum"};
  expect_error([&] { comm->split(-1); }, {"'color'", "must be >= 0"}, "negative color");
  comm->barrier();
}

}  // namespace

int run_vocab_child(const std::string& scenario, const std::shared_ptr<hd::Communicator>& comm) {
  try {
    if (scenario == "vocab_bad_input") {
      bad_inputs(comm);
      return 0;
    }
    if (scenario == "vocab_packed") {
      const auto [b, e] = chunk_of(comm->rank(), comm->world_size());
      packed_pair_forward(hd::VocabParallel::create(comm, b, e));
      comm->barrier();
      return 0;
    }
    if (scenario == "vocab_subgroups") {
      subgroups(comm);
      return 0;
    }
    const auto [b, e] = chunk_of(comm->rank(), comm->world_size());
    auto vp = hd::VocabParallel::create(comm, b, e);
    if (vp.vocab_size() != kV) throw Failure{"vocab_size " + std::to_string(vp.vocab_size())};
    token_path(vp);
    linear_path(vp);
    pair_forward(vp);
    comm->barrier();
    return 0;
  } catch (const Failure& f) {
    std::fprintf(stderr, "rank %d: FAILED: %s\n", comm->rank(), f.what.c_str());
  }
  return 1;
}
