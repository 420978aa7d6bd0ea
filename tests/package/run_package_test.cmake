# Packaging test, run by ctest (hafrm.package.*), as `cmake -P` with:
#   MODE=install   install hafrm from its build tree into WORK_DIR/prefix (fixture of the rest);
#   MODE=consumer  configure, build and run the outside project consumers/CONSUMER against it.
# Every consumer but two compiles the same source, examples/gpt_integration/main.cpp (a torch::nn
# GPT with a reward head and haf_forward, trained a few steps with the hybrid loss; it fails unless
# the fused linear path and the logits path agree at step 0 and the loss decreases). They differ
# only in how they bring hafrm in: see consumers/*/CMakeLists.txt and the checks below. The
# components' consumers, distributed (hafrm::distributed) and data (hafrm::data), have their own
# small main.cpp.
# Inputs: HAFRM_SOURCE_DIR, HAFRM_BINARY_DIR, WORK_DIR, TORCH_DIR, CMAKE_CXX_COMPILER,
# CXX_LAUNCHER (e.g. ccache, used for C++ and CUDA), EXPECT_CUDA (the main build compiled CUDA:
# nvcc and a CUDA LibTorch exist here).
set(prefix "${WORK_DIR}/prefix")

function(fail what)
  message(FATAL_ERROR "consumer '${CONSUMER}': ${what}")
endfunction()

if(MODE STREQUAL "install")
  file(REMOVE_RECURSE "${prefix}")
  execute_process(COMMAND ${CMAKE_COMMAND} --install "${HAFRM_BINARY_DIR}" --prefix "${prefix}"
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install failed (${rc})")
  endif()
  foreach(f hafrmConfig.cmake hafrmTorch.cmake hafrmDistributed.cmake hafrmData.cmake
            cuda_ops/CMakeLists.txt src/hafrm_cuda_ops.cu)
    if(NOT EXISTS "${prefix}/share/hafrm/cmake/${f}")
      message(FATAL_ERROR "install did not produce share/hafrm/cmake/${f}")
    endif()
  endforeach()
  return()
endif()

if(NOT MODE STREQUAL "consumer" OR NOT CONSUMER)
  message(FATAL_ERROR "usage: -DMODE=install | -DMODE=consumer -DCONSUMER=<name>")
endif()
set(cbuild "${WORK_DIR}/${CONSUMER}")
file(REMOVE_RECURSE "${cbuild}")

# Torch's CMake picks its own arch list here, as it does in a user's shell where the variable is
# unset (a list with sm_50, which nvcc 13 rejects, on a machine without a GPU).
unset(ENV{TORCH_CUDA_ARCH_LIST})
set(args -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${prefix}" "-DTorch_DIR=${TORCH_DIR}"
         "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}" "-DHAFRM_SOURCE_DIR=${HAFRM_SOURCE_DIR}"
         "-DHAFRM_CONSUMER_MAIN=${HAFRM_SOURCE_DIR}/examples/gpt_integration/main.cpp")
if(CXX_LAUNCHER)
  list(APPEND args "-DCMAKE_CXX_COMPILER_LAUNCHER=${CXX_LAUNCHER}"
                   "-DCMAKE_CUDA_COMPILER_LAUNCHER=${CXX_LAUNCHER}")
endif()
set(expect_cuda OFF)
if(CONSUMER STREQUAL "cpu_only")
  list(APPEND args -DHAFRM_WITH_CUDA=OFF)
elseif(CONSUMER MATCHES "^(cxx17|distributed|data)$")
  # What these test is the C++ standard / the c10d layer / the data layer, not the kernels.
  list(APPEND args -DHAFRM_WITH_CUDA=OFF)
elseif(NOT CONSUMER STREQUAL "fetchcontent")  # fetchcontent sets HAFRM_WITH_CUDA OFF itself
  set(expect_cuda ${EXPECT_CUDA})
endif()
if(CONSUMER STREQUAL "subdir_after_torch")
  # hafrm's own variable for its kernels' architectures (one, to keep the test short); the two
  # find_package consumers use the default list and share one compile through the launcher.
  list(APPEND args -DHAFRM_CUDA_ARCHITECTURES=90-real)
endif()

execute_process(COMMAND ${CMAKE_COMMAND} -S "${CMAKE_CURRENT_LIST_DIR}/consumers/${CONSUMER}"
                        -B "${cbuild}" ${args}
                RESULT_VARIABLE rc OUTPUT_VARIABLE conf_out ERROR_VARIABLE conf_err)
file(WRITE "${cbuild}/configure.log" "${conf_out}\n${conf_err}")
if(NOT rc EQUAL 0)
  message("${conf_out}\n${conf_err}")
  fail("configure failed (${rc})")
endif()
if(conf_out MATCHES "consumer: CUDA flags torch chose: [^\n]*compute_50")
  message(STATUS "torch's own CUDA arch list (with sm_50) was in effect before hafrm")
endif()
# hafrm links the OpenMP runtime LibTorch loads (hafrmTorch.cmake): CMake has no runtime-path
# conflict to warn about.
if(conf_err MATCHES "may be hidden by files in")
  message("${conf_err}")
  fail("configure warned about a runtime library hidden by another directory")
endif()
if(conf_out MATCHES "consumer: CMAKE_CUDA_STANDARD after Torch: '17'")
  message(STATUS "torch's CMake set CMAKE_CUDA_STANDARD to the consumer's 17 before hafrm")
endif()

execute_process(COMMAND ${CMAKE_COMMAND} --build "${cbuild}" --verbose --parallel 2
                RESULT_VARIABLE rc OUTPUT_VARIABLE build_out ERROR_VARIABLE build_err)
file(WRITE "${cbuild}/build.log" "${build_out}\n${build_err}")
if(NOT rc EQUAL 0)
  message("${build_out}\n${build_err}")
  fail("build failed (${rc}); log: ${cbuild}/build.log")
endif()

# Where hafrm's CUDA kernels were (or were not) compiled.
file(GLOB_RECURSE cuda_artifacts "${cbuild}/*hafrm_cuda_ops*.o" "${cbuild}/*libhafrm_cuda_ops*")
string(REGEX MATCHALL "[^\n]*nvcc[^\n]*hafrm_cuda_ops\\.cu[^\n]*" nvcc_lines "${build_out}")
if(expect_cuda)
  if(NOT cuda_artifacts OR NOT nvcc_lines)
    fail("expected hafrm's CUDA kernels to be compiled (HAFRM_WITH_CUDA auto, nvcc present)")
  endif()
  if(nvcc_lines MATCHES "compute_50|sm_50")
    fail("hafrm_cuda_ops was compiled with torch's sm_50 flags")
  endif()
  message(STATUS "hafrm_cuda_ops compiled with hafrm's own architectures")
  # ATen 2.15 needs C++20 in .cu files too, whatever CMAKE_CUDA_STANDARD the consumer (or torch's
  # CMake, from its CMAKE_CXX_STANDARD) set.
  if(NOT nvcc_lines MATCHES "-std=(gnu|c)\\+\\+20")
    fail("expected hafrm_cuda_ops.cu to be compiled as C++20: ${nvcc_lines}")
  endif()
  message(STATUS "hafrm_cuda_ops compiled as C++20")
else()
  if(cuda_artifacts OR nvcc_lines OR build_out MATCHES "\\.cu\\.o")
    fail("a CPU-only build compiled CUDA: ${cuda_artifacts}")
  endif()
  if(NOT conf_out MATCHES "hafrm: HAFRM_WITH_CUDA=OFF")
    fail("configure did not report HAFRM_WITH_CUDA=OFF")
  endif()
  if(EXPECT_CUDA AND CONSUMER STREQUAL "cpu_only")
    # The point of this consumer: nvcc is there (torch's CMake enabled CUDA), yet nothing used it.
    file(STRINGS "${cbuild}/CMakeCache.txt" nvcc REGEX "^CMAKE_CUDA_COMPILER:[A-Z]+=.+")
    if(NOT nvcc)
      fail("expected CMake to have found nvcc in this CPU-only configuration")
    endif()
  endif()
  message(STATUS "no CUDA source compiled")
endif()

if(CONSUMER MATCHES "^cxx17")
  string(REGEX MATCH "[^\n]*-o [^\n]*consumer\\.dir[^\n]*main\\.cpp\\.o[^\n]*" cxx_line
               "${build_out}")
  if(NOT cxx_line MATCHES "-std=(gnu|c)\\+\\+(20|2a)")
    fail("asked for C++17, expected CMake to raise it to C++20: ${cxx_line}")
  endif()
  message(STATUS "C++17 requested, compiled as C++20")
endif()

set(run_args 40 16)
set(expect_out "gpt_integration OK")
if(CONSUMER STREQUAL "distributed")  # its own small main (see consumers/distributed)
  set(run_args "")
  set(expect_out "distributed OK")
elseif(CONSUMER STREQUAL "data")  # its own small main and JSONL file (see consumers/data)
  set(run_args "${CMAKE_CURRENT_LIST_DIR}/consumers/data/preferences.jsonl")
  set(expect_out "data OK")
endif()
execute_process(COMMAND "${cbuild}/consumer" ${run_args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
message(STATUS "consumer printed:\n${out}${err}")
if(NOT rc EQUAL 0 OR NOT out MATCHES "${expect_out}")
  fail("run failed (${rc})")
endif()
