// The distributed tests' runner: Catch2, except that "--child SCENARIO" runs one rank of a
// multi-process scenario (child.cpp) with the variables the parent test set.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstring>

int run_child(const char* scenario);

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--child") == 0) return run_child(argv[2]);
  return Catch::Session().run(argc, argv);
}
