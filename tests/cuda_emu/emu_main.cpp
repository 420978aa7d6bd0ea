// Catch2's runner for the CUDA emulator tests, in its own TU so test edits rebuild faster.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
