// sampler.hpp: which examples a rank trains on, for data-parallel training.
//
// The order of an epoch is decided globally (one permutation, the same for every world size
// given the seed); a global batch of per_rank_batch x world_size consecutive entries of it is
// cut into world_size contiguous slices and rank r takes slice r. So the ranks never overlap, a
// global batch is the same examples whatever the world size, and a checkpoint's position in the
// order (counted in examples) means the same thing to any number of processes. The last partial
// global batch of an epoch is dropped, as the single-process trainer does (the next epoch's
// reshuffle makes the dropped examples different every time).
//
//   hafrm::distributed::DistributedSampler s(/*size=*/1000, /*per_rank_batch=*/8, rank, world,
//                                            /*seed=*/0);
//   auto order = s.epoch_order(epoch);                 // identical on every rank
//   for (int64_t b = 0; b < s.batches_per_epoch(); ++b) train(s.rank_batch(order, b));
//
// Needs no c10d (usable and tested without a process group); a bad argument is a c10::Error
// naming it (hafrm/torch/checks.hpp).
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "hafrm/torch/checks.hpp"

namespace hafrm::distributed {

// Rank `rank`'s share of one global batch: the contiguous slice [rank * B, (rank + 1) * B) of a
// global batch of B * world_size entries.
inline std::vector<int64_t> rank_slice(std::span<const int64_t> global_batch, int rank,
                                       int world_size) {
  constexpr const char* fn = "distributed::rank_slice";
  HAFRM_CHECK_ARG(world_size >= 1, fn, "world_size", "expected >= 1, got ", world_size);
  HAFRM_CHECK_ARG(rank >= 0 && rank < world_size, fn, "rank", "expected in [0, ", world_size,
                  ") (world_size), got ", rank);
  const auto n = static_cast<int64_t>(global_batch.size());
  HAFRM_CHECK_ARG(n % world_size == 0, fn, "global_batch",
                  "expected a number of entries divisible by world_size ", world_size, ", got ", n);
  const int64_t b = n / world_size;
  const auto first = global_batch.begin() + rank * b;
  return std::vector<int64_t>(first, first + b);
}

class DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, int64_t per_rank_batch, int rank, int world_size,
                     uint64_t seed)
      : n_(dataset_size), b_(per_rank_batch), rank_(rank), world_(world_size), seed_(seed) {
    constexpr const char* fn = "distributed::DistributedSampler";
    HAFRM_CHECK_ARG(world_size >= 1, fn, "world_size", "expected >= 1, got ", world_size);
    HAFRM_CHECK_ARG(rank >= 0 && rank < world_size, fn, "rank", "expected in [0, ", world_size,
                    ") (world_size), got ", rank);
    HAFRM_CHECK_ARG(per_rank_batch >= 1, fn, "per_rank_batch", "expected >= 1, got ",
                    per_rank_batch);
    HAFRM_CHECK_ARG(dataset_size >= per_rank_batch * world_size, fn, "dataset_size",
                    "expected at least one global batch (per_rank_batch ", per_rank_batch,
                    " x world_size ", world_size, " = ", per_rank_batch * world_size,
                    " examples), got ", dataset_size);
  }

  int64_t global_batch() const { return b_ * world_; }
  int64_t batches_per_epoch() const { return n_ / global_batch(); }

  // The epoch's permutation of [0, dataset_size): Fisher-Yates driven by splitmix64 of
  // (seed, epoch), so it depends on neither the world size nor the platform's <random>.
  std::vector<int64_t> epoch_order(int64_t epoch) const {
    std::vector<int64_t> order(static_cast<std::size_t>(n_));
    for (int64_t i = 0; i < n_; ++i) order[static_cast<std::size_t>(i)] = i;
    uint64_t state = seed_ ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch + 1));
    for (int64_t i = n_ - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(below(state, static_cast<uint64_t>(i + 1)));
      std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
    }
    return order;
  }

  // This rank's examples of global batch `index` (0-based) of an epoch's order.
  std::vector<int64_t> rank_batch(const std::vector<int64_t>& order, int64_t index) const {
    constexpr const char* fn = "distributed::DistributedSampler::rank_batch";
    HAFRM_CHECK_ARG(static_cast<int64_t>(order.size()) == n_, fn, "order",
                    "expected the epoch's order of dataset_size ", n_, " entries, got ",
                    order.size());
    HAFRM_CHECK_ARG(index >= 0 && index < batches_per_epoch(), fn, "index", "expected in [0, ",
                    batches_per_epoch(), ") (batches_per_epoch), got ", index);
    const std::span<const int64_t> all(order);
    return rank_slice(all.subspan(static_cast<std::size_t>(index * global_batch()),
                                  static_cast<std::size_t>(global_batch())),
                      rank_, world_);
  }

 private:
  static uint64_t splitmix64(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Unbiased draw in [0, bound) by rejection (Lemire's threshold), portable across platforms.
  static uint64_t below(uint64_t& s, uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const uint64_t r = splitmix64(s);
      if (r >= threshold) return r % bound;
    }
  }

  int64_t n_, b_;
  int rank_, world_;
  uint64_t seed_;
};

}  // namespace hafrm::distributed
