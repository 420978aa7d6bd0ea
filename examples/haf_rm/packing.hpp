// packing.hpp: packed (padding-free) micro-batches for --packing.
//
// A packed micro-batch lays the chosen and rejected sequences of its pairs end to end in rows of
// `row_length` tokens (hafrm::pack_pairs, first-fit decreasing), so the model computes no padding
// beyond each row's unused tail; hafrm::forward_pair_packed gives the padded forward's numbers to
// float round-off. The row length is the longest sequence of the training split, so every
// sequence fits a row and a row's attention costs about what one padded sequence's does.
//
// With a token budget (--pack-tokens N) the step's pairs -- the same --batch-size x --grad-accum
// pairs, in the same order, as the padded trainer draws -- are cut into consecutive micro-batches
// of at most N tokens (both sides of every pair), so memory follows the tokens, not the longest
// pair times the batch; each micro-batch's loss is weighted by its share of the step's pairs.
// Without a budget each --batch-size micro-batch is packed as it is.
//
//   auto plan = hafrm::examples::rm::split_by_tokens(split, idx, /*budget=*/4096);
//   auto b = hafrm::examples::rm::make_packed_batch(split, plan[0], row_length, pad_id, dev);
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <hafrm/model/packed_pair.hpp>

#include "data.hpp"

namespace hafrm::examples::rm {

// Tokens of pair i, both sides.
inline int64_t pair_tokens(const Split& split, int64_t i) {
  const auto& p = split.pairs.at(static_cast<std::size_t>(i));
  return static_cast<int64_t>(p.chosen_ids.size() + p.rejected_ids.size());
}

// The longest single sequence (chosen or rejected side) and the longest pair of a split.
struct SplitLengths {
  int64_t longest_sequence = 0, longest_pair = 0;
};
inline SplitLengths split_lengths(const Split& split) {
  SplitLengths l;
  for (const auto& p : split.pairs) {
    const auto c = static_cast<int64_t>(p.chosen_ids.size());
    const auto r = static_cast<int64_t>(p.rejected_ids.size());
    l.longest_sequence = std::max({l.longest_sequence, c, r});
    l.longest_pair = std::max(l.longest_pair, c + r);
  }
  return l;
}

// Consecutive runs of `idx` whose pairs total at most `budget` tokens each (budget 0: all of idx
// in one run). Every pair must fit the budget on its own (the caller checks the split once).
inline std::vector<std::vector<int64_t>> split_by_tokens(const Split& split,
                                                         const std::vector<int64_t>& idx,
                                                         int64_t budget) {
  if (budget <= 0) return {idx};
  std::vector<std::vector<int64_t>> runs;
  int64_t used = budget;  // forces a new run at the first pair
  for (auto i : idx) {
    const int64_t n = pair_tokens(split, i);
    if (n > budget)
      throw std::invalid_argument("--pack-tokens " + std::to_string(budget) + " is below pair " +
                                  std::to_string(i) + "'s " + std::to_string(n) + " tokens");
    if (used + n > budget) runs.emplace_back(), used = 0;
    runs.back().push_back(i);
    used += n;
  }
  return runs;
}

// The pairs at `indices` packed into rows of `row_length` tokens, on `device`.
inline hafrm::PackedPreferenceBatch make_packed_batch(const Split& split,
                                                      std::span<const int64_t> indices,
                                                      int64_t row_length, int64_t pad_id,
                                                      const torch::Device& device) {
  std::vector<std::vector<int64_t>> ci, cl, ri, rl;
  for (auto i : indices) {
    const auto& p = split.pairs.at(static_cast<std::size_t>(i));
    ci.push_back(p.chosen_ids), cl.push_back(p.chosen_labels);
    ri.push_back(p.rejected_ids), rl.push_back(p.rejected_labels);
  }
  auto b = hafrm::pack_pairs(ci, cl, ri, rl, row_length, pad_id);
  for (auto* t : {&b.input_ids, &b.labels, &b.cu_seqlens, &b.chosen_segments, &b.rejected_segments})
    *t = t->to(device);
  return b;
}

}  // namespace hafrm::examples::rm
