// Stand-in for the CUDA runtime header when hafrm's kernels are compiled as host C++ by the
// emulator (tests/cuda_emu); see hafrm_cuda_emu.hpp.
#pragma once
#include "hafrm_cuda_emu.hpp"
