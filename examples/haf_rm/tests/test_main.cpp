// Catch2 v2 runner of the example trainers' tests.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
