// Packed (padding-free) sequences: per-segment log-probs and rewards equal the padded path (one
// sequence per row) to round-off, values and gradients, on the token and the fused linear path;
// bad boundaries are refused with the argument named.
#include <vector>

#include "hafrm/torch/packed_logprobs.hpp"
#include "test_util.hpp"

using namespace hafrm_test;
using hafrm_test::catalogue::to_vec;

namespace {

// Segment lengths covering the edge cases: length 1 (nothing to predict), a segment whose labels
// are all ignored (no scored token), ordinary ones; then `pad` padding positions.
struct Layout {
  std::vector<int64_t> lengths{4, 1, 6, 3, 5, 2};
  int64_t pad = 3;
  int64_t tokens() const {
    int64_t n = pad;
    for (auto l : lengths) n += l;
    return n;
  }
  torch::Tensor cu() const {
    std::vector<int64_t> c{0};
    for (auto l : lengths) c.push_back(c.back() + l);
    return torch::tensor(c, torch::kLong);
  }
  int64_t longest() const { return *std::max_element(lengths.begin(), lengths.end()); }
};

// Labels aligned with the ids: a prompt token first (-100), segment 3 fully ignored, padding -100.
torch::Tensor packed_labels(const Layout& L, int64_t V) {
  auto lab = torch::randint(0, V, {L.tokens()}, torch::kLong);
  int64_t at = 0;
  for (size_t s = 0; s < L.lengths.size(); ++s) {
    lab[at] = -100;
    if (s == 3) lab.slice(0, at, at + L.lengths[s]).fill_(-100);
    at += L.lengths[s];
  }
  lab.slice(0, at).fill_(-100);
  return lab;
}

// Row r of the padded [S, Lmax] layout gathers segment r's flat positions; `index` maps each
// padded slot to its flat position (padding slots point at position 0 and are masked by labels).
struct Padded {
  torch::Tensor index, labels;
};
Padded to_padded(const Layout& L, const torch::Tensor& labels) {
  const int64_t S = static_cast<int64_t>(L.lengths.size()), T = L.longest();
  auto index = torch::zeros({S, T}, torch::kLong);
  auto lab = torch::full({S, T}, -100, torch::kLong);
  int64_t at = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = L.lengths[s];
    index[s].slice(0, 0, n).copy_(torch::arange(at, at + n));
    lab[s].slice(0, 0, n).copy_(labels.slice(0, at, at + n));
    at += n;
  }
  return {index, lab};
}

}  // namespace

TEST_CASE("packed causal log-probs equal the padded path, values and gradients", "[packed]") {
  const auto backend = GENERATE(hafrm::LogProbBackend::kFused, hafrm::LogProbBackend::kReference);
  Layout L;
  const int64_t V = 37, N = L.tokens();
  auto labels = packed_labels(L, V);
  auto seg = hafrm::packed_segments(L.cu(), N);
  hafrm::TokenLogProbOptions o;
  o.backend = backend;
  auto x = randn({N, V}, torch::kFloat, 2.0).requires_grad_();
  auto gs = randn({static_cast<int64_t>(L.lengths.size())}, torch::kFloat);

  auto packed = hafrm::packed_causal_sequence_logprobs(x.view({1, N, V}), labels, seg, o);
  (packed.sum * gs).sum().backward();
  auto g_packed = x.grad().clone();
  x.mutable_grad().zero_();

  auto p = to_padded(L, labels);
  auto xp = x.index_select(0, p.index.reshape({-1})).view({p.index.size(0), p.index.size(1), V});
  auto padded = hafrm::causal_sequence_logprobs(xp, p.labels, o);
  (padded.sum * gs).sum().backward();

  CHECK(max_abs_diff(packed.sum, padded.sum) < 1e-5);
  CHECK(torch::equal(packed.count, padded.count));
  CHECK(max_abs_diff(packed.mean, padded.mean) < 1e-5);
  CHECK(max_abs_diff(g_packed, x.grad()) < 1e-5);
  // The edge cases really are edge cases: nothing scored in segments 1 (length 1) and 3.
  CHECK(packed.count[1].item<int64_t>() == 0);
  CHECK(packed.count[3].item<int64_t>() == 0);
  CHECK(packed.sum[3].item<float>() == 0.0f);
  // A token never predicts the next segment's first token: the last position of each segment
  // and all padding carry no gradient.
  auto last = seg.cu_seqlens.slice(0, 1) - 1;
  CHECK(g_packed.index_select(0, last).abs().max().item<float>() == 0.0f);
  CHECK(g_packed.slice(0, N - L.pad).abs().max().item<float>() == 0.0f);
}

TEST_CASE("packed fused linear log-probs equal the padded linear path", "[packed]") {
  Layout L;
  const int64_t V = 41, H = 8, N = L.tokens();
  auto labels = packed_labels(L, V);
  auto seg = hafrm::packed_segments(L.cu(), N);
  auto h = randn({N, H}, torch::kFloat).requires_grad_();
  auto w = randn({V, H}, torch::kFloat, 0.5).requires_grad_();
  auto gs = randn({static_cast<int64_t>(L.lengths.size())}, torch::kFloat);

  auto packed = hafrm::packed_linear_sequence_logprobs(h, w, labels, seg);
  (packed.sum * gs).sum().backward();
  auto gh = h.grad().clone(), gw = w.grad().clone();
  h.mutable_grad().zero_(), w.mutable_grad().zero_();

  // Padded oracle: logits materialised, one sequence per row.
  auto p = to_padded(L, labels);
  auto hp = h.index_select(0, p.index.reshape({-1})).view({p.index.size(0), p.index.size(1), H});
  auto padded = hafrm::causal_sequence_logprobs(torch::matmul(hp, w.t()), p.labels);
  (padded.sum * gs).sum().backward();

  CHECK(max_abs_diff(packed.sum, padded.sum) < 1e-4);
  CHECK(torch::equal(packed.count, padded.count));
  CHECK(max_abs_diff(gh, h.grad()) < 1e-4);
  CHECK(max_abs_diff(gw, w.grad()) < 1e-4);
}

TEST_CASE("packed positions restart per segment; rewards are read at each segment's last token",
          "[packed]") {
  auto seg = hafrm::packed_segments(torch::tensor({0, 3, 4, 8}), 10, /*row_length=*/0);
  CHECK(to_vec(hafrm::packed_positions(seg)) == std::vector<double>{0, 1, 2, 0, 0, 1, 2, 3, 0, 0});
  CHECK(to_vec(seg.segment_ids) == std::vector<double>{0, 0, 0, 1, 2, 2, 2, 2, -1, -1});
  auto r = torch::arange(10, torch::kFloat).view({2, 5});  // a [R, L] grid
  CHECK(to_vec(hafrm::packed_read_rewards(r, seg)) == std::vector<double>{2, 3, 7});
  // Two rows of 5: segments [0,3) [3,5) | [5,10) stay inside their rows.
  auto rows = hafrm::packed_segments(torch::tensor({0, 3, 5, 10}), 10, 5);
  CHECK(rows.segments() == 3);
}

TEST_CASE("bad packed boundaries name cu_seqlens and what was expected", "[packed]") {
  auto bad = [](torch::Tensor cu, int64_t tokens, int64_t row = 0) {
    return [=] { hafrm::packed_segments(cu, tokens, row); };
  };
  CHECK_THROWS_WITH(bad(torch::tensor({0, 4, 2, 6}), 8)(),
                    Catch::Contains("'cu_seqlens'") && Catch::Contains("strictly increasing") &&
                        Catch::Contains("segment 1 is [4, 2)"));
  CHECK_THROWS_WITH(bad(torch::tensor({0, 3, 3}), 8)(), Catch::Contains("strictly increasing"));
  CHECK_THROWS_WITH(bad(torch::tensor({1, 3}), 8)(), Catch::Contains("start at 0, got 1"));
  CHECK_THROWS_WITH(bad(torch::tensor({0, 3, 9}), 8)(),
                    Catch::Contains("last boundary <= tokens = 8, got 9"));
  CHECK_THROWS_WITH(bad(torch::tensor({0, 3, 7}), 8, 4)(),
                    Catch::Contains("inside one row of 4 tokens; segment 1 is [3, 7)"));
  CHECK_THROWS_WITH(bad(torch::tensor({0}), 8)(), Catch::Contains("S >= 1 segments"));
  CHECK_THROWS_WITH(bad(torch::tensor({0.0, 3.0}), 8)(), Catch::Contains("'cu_seqlens'"));
  CHECK_THROWS_WITH(bad(torch::tensor({0, 3}), 8, 3)(), Catch::Contains("'row_length'"));
  auto seg = hafrm::packed_segments(torch::tensor({0, 3, 8}), 8);
  CHECK_THROWS_WITH(hafrm::packed_causal_sequence_logprobs(torch::randn({7, 5}),
                                                           torch::zeros({7}, torch::kLong), seg),
                    Catch::Contains("'labels'") && Catch::Contains("expected 8 positions"));
  CHECK_THROWS_WITH(hafrm::packed_read_rewards(torch::randn({9}), seg),
                    Catch::Contains("'token_rewards'"));
}
