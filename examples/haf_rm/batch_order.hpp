// batch_order.hpp: which training pairs each global batch takes. Every epoch is a fresh
// permutation of the pairs; batches are consecutive slices of it, and an epoch's last partial
// batch is dropped (every batch has the same size). The whole state (permutation, cursor, epoch,
// generator) is public because a checkpoint stores it field by field: a resumed run must draw
// exactly the batches an uninterrupted one would.
//
//   hafrm::examples::rm::BatchOrder order;
//   order.seed(cfg.seed);
//   order.new_epoch(train.pairs.size());
//   std::vector<int64_t> batch = order.next(/*global_batch=*/32, train.pairs.size());
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include <hafrm_examples/synthetic_task.hpp>

namespace hafrm::examples::rm {

struct BatchOrder {
  std::vector<int64_t> order;  // this epoch's permutation of [0, pairs)
  int64_t cursor = 0;          // first unused position in `order`
  int64_t epoch = 0;           // epochs started so far
  std::mt19937_64 rng;

  // The shuffle stream is derived from the run's seed but differs from the one torch's
  // generator gets, so the data order and the initial weights are not correlated.
  void seed(uint64_t seed) { rng.seed(seed * 0x9E3779B97F4A7C15ull + 0x5EEDull); }

  // Fisher-Yates with the portable bounded draw of the synthetic task: the same permutation on
  // every platform for a given seed.
  void new_epoch(int64_t pairs) {
    order.resize(static_cast<std::size_t>(pairs));
    for (int64_t i = 0; i < pairs; ++i) order[static_cast<std::size_t>(i)] = i;
    for (int64_t i = pairs - 1; i > 0; --i) {
      const auto j =
          static_cast<int64_t>(synthetic::uniform_below(rng, static_cast<uint64_t>(i + 1)));
      std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
    }
    cursor = 0;
    ++epoch;
  }

  // The next `global_batch` indices, starting a new epoch over `pairs` pairs when the current
  // one has fewer left. The order is global (the same on every rank, for any world size), so a
  // data-parallel rank takes its slice of what this returns.
  std::vector<int64_t> next(int64_t global_batch, int64_t pairs) {
    if (cursor + global_batch > static_cast<int64_t>(order.size())) new_epoch(pairs);
    std::vector<int64_t> idx(order.begin() + cursor, order.begin() + cursor + global_batch);
    cursor += global_batch;
    return idx;
  }
};

}  // namespace hafrm::examples::rm
