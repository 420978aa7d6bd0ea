// haf_rm: the example HaF-RM reward-model trainer. Everything lives in the headers beside this
// file (model.hpp, trainer.hpp, cli.hpp, ...) so the tests run the same code; see README.md.
//
//   haf_rm                                  # hybrid model on data/synthetic, ~1 min on 2 cores
//   haf_rm --objective bt --seed 1 --out runs/bt-s1
//   haf_rm eval | score | export ...        # after training (README.md)
//   haf_rm --help
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cli.hpp"

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // glibc serves every block above its mmap threshold (128 KiB, raised only once a larger mapped
  // block has been freed) with a fresh mmap, so each training or scoring step would page-fault
  // its activations in and unmap them again (bench/README.md has the cost). Fix the threshold
  // where glibc's own adjustment tops out, unless the user tunes malloc through its environment.
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_") && !std::getenv("MALLOC_TRIM_THRESHOLD_")) {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
  }
#endif
  return hafrm::examples::rm::run_cli(argc, argv);
}
