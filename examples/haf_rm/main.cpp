// haf_rm: the example HaF-RM reward-model trainer. Everything lives in the headers beside this
// file (model.hpp, trainer.hpp, cli.hpp, ...) so the tests run the same code; see README.md.
//
//   haf_rm                                  # hybrid model on data/synthetic, ~1 min on 2 cores
//   haf_rm --objective bt --seed 1 --out runs/bt-s1
//   haf_rm --help
#include "cli.hpp"

int main(int argc, char** argv) { return hafrm::examples::rm::run_cli(argc, argv); }
