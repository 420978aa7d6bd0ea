// haf_torchscript: trains a TorchScript reward model (written by make_model.py) with the HaF-RM
// hybrid loss on the shipped synthetic data. The model reaches hafrm only through
// hafrm::model_traits<torch::jit::Module> (hafrm/model/torchscript.hpp).
//
//   haf_torchscript [--model FILE.pt] [--steps 400] [--objective haf] [--seed 0] [--threads N]
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <hafrm/data/tokenizer.hpp>
#include <hafrm_examples/synthetic_task.hpp>

#include "data.hpp"  // examples/haf_rm: splits and batches
#include "jit_train.hpp"

#ifndef HAFRM_TORCHSCRIPT_MODEL
#define HAFRM_TORCHSCRIPT_MODEL "tiny_haf_rm.pt"
#endif
#ifndef HAFRM_EXAMPLES_DATA_DIR
#define HAFRM_EXAMPLES_DATA_DIR "data"
#endif

namespace rm = hafrm::examples::rm;

int main(int argc, char** argv) try {
  std::string model_path = HAFRM_TORCHSCRIPT_MODEL, objective = "haf";
  std::string data = HAFRM_EXAMPLES_DATA_DIR "/synthetic";
  int64_t steps = 400, batch_size = 32;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--model")
      model_path = value();
    else if (a == "--steps")
      steps = std::stoll(value());
    else if (a == "--objective")
      objective = value();
    else if (a == "--seed")
      seed = std::stoull(value());
    else if (a == "--data")
      data = value();
    else if (a == "--threads")
      torch::set_num_threads(std::stoi(value()));
    else
      throw std::invalid_argument("unknown argument " + a +
                                  " (--model --steps --objective --seed --data --threads)");
  }

  torch::manual_seed(seed);
  torch::jit::Module module = torch::jit::load(model_path);
  hafrm::examples::jit::JitTrainer trainer(module, {.objective = objective});
  hafrm::data::ByteTokenizer tok;
  hafrm::data::AssemblyOptions ao;  // Phi template
  auto train = rm::load_split("train", data + "/train.jsonl", tok, ao, false);
  auto eval = rm::load_split("eval", data + "/eval.jsonl", tok, ao, false);
  std::printf("loaded %s (%zu parameter tensors); training %s for %lld steps on %zu pairs\n",
              model_path.c_str(), trainer.parameters().size(), objective.c_str(),
              static_cast<long long>(steps), train.pairs.size());

  std::mt19937_64 rng(seed);
  std::vector<int64_t> idx(static_cast<std::size_t>(batch_size));
  for (int64_t step = 1; step <= steps; ++step) {
    for (auto& i : idx)
      i = static_cast<int64_t>(hafrm::examples::synthetic::uniform_below(rng, train.pairs.size()));
    auto s = trainer.step(rm::make_batch(train, idx, tok.pad_id(), torch::kCPU));
    if (step % 50 == 0 || step == 1 || step == steps)
      std::printf("step %4lld  loss %.4f  reward_loss %.4f  policy_loss %.4f  acc %.3f\n",
                  static_cast<long long>(step), s.loss, s.reward_loss, s.policy_loss, s.reward_acc);
  }
  std::vector<int64_t> all(eval.pairs.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  auto [reward_acc, implicit_acc] =
      trainer.accuracy(rm::make_batch(eval, all, tok.pad_id(), torch::kCPU));
  std::printf("eval (%zu pairs): reward head acc %.3f, implicit reward acc %.3f\n", all.size(),
              reward_acc, implicit_acc);
  return 0;
} catch (const c10::Error& e) {
  std::fprintf(stderr, "haf_torchscript: error: %s\n", e.what_without_backtrace());
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "haf_torchscript: error: %s\n", e.what());
  return 1;
}
