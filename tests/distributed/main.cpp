// The distributed tests' runner: Catch2, except that "--child SCENARIO" runs one rank of a
// multi-process scenario (child.cpp) with the variables the parent test set (spawn.hpp).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int run_child(const char* scenario);

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--child") == 0) {
    // A rank dies with the test that started it (ctest's timeout kills only the test process),
    // and one whose parent is already gone does not start.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const char* parent = std::getenv("HAFRM_TEST_PARENT_PID");
    if (parent && std::to_string(::getppid()) != parent) {
      std::fprintf(stderr, "child: the test process %s is gone\n", parent);
      return 1;
    }
    return run_child(argv[2]);
  }
  return Catch::Session().run(argc, argv);
}
