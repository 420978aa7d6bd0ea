// Catch2's main; torch runs single-threaded per test unless a test asks otherwise, so results do
// not depend on the machine's core count.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
