# hafrmDistributed.cmake: the c10d layer (include/hafrm/distributed) on top of the LibTorch the
# project uses. The torch wheel ships the c10d headers and exports ProcessGroupGloo from
# libtorch_cpu.so, but not the Gloo headers ProcessGroupGloo.hpp includes: Debian's libgloo-dev
# supplies them (docs/building.md). NCCL's header comes with the wheel's nvidia-nccl package.
#
#   hafrm_setup_distributed(<mode> <found_var>)
#     mode AUTO: define the target when both are found, else skip it (a status line says why).
#     mode ON:   stop at configure, naming what is missing.
#     mode OFF:  never.
# Defines the INTERFACE target hafrm::distributed (hafrm::hafrm + USE_C10D_GLOO, and
# USE_C10D_NCCL for a CUDA build with nccl.h) and sets <found_var> in the caller.
#
# Used twice: by this project's CMakeLists.txt (HAFRM_WITH_DISTRIBUTED) and by the installed
# hafrmConfig.cmake for `find_package(hafrm COMPONENTS distributed)`. The target is defined in the
# consumer's build rather than exported because the Gloo include directory and NCCL are found
# where the consumer builds, not where hafrm was installed.
function(hafrm_setup_distributed mode found_var)
  set(${found_var} OFF PARENT_SCOPE)
  string(TOUPPER "${mode}" _mode)
  if(_mode STREQUAL "OFF")
    message(STATUS "hafrm: distributed layer off (HAFRM_WITH_DISTRIBUTED=OFF)")
    return()
  endif()
  if(NOT _mode MATCHES "^(AUTO|ON)$")
    message(FATAL_ERROR "HAFRM_WITH_DISTRIBUTED must be AUTO, ON or OFF, got '${mode}'")
  endif()
  if(TARGET hafrm::distributed)  # a second find_package(hafrm COMPONENTS distributed)
    set(${found_var} ON PARENT_SCOPE)
    return()
  endif()

  find_path(HAFRM_C10D_INCLUDE_DIR torch/csrc/distributed/c10d/ProcessGroupGloo.hpp
            HINTS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH)
  find_path(HAFRM_GLOO_INCLUDE_DIR gloo/rendezvous/store.h)
  set(_missing "")
  if(NOT HAFRM_C10D_INCLUDE_DIR)
    list(APPEND _missing "the c10d headers (torch/csrc/distributed/c10d/ProcessGroupGloo.hpp) in "
                         "LibTorch's include directories '${TORCH_INCLUDE_DIRS}'")
  endif()
  if(NOT HAFRM_GLOO_INCLUDE_DIR)
    list(APPEND _missing "the Gloo headers (gloo/rendezvous/store.h): install libgloo-dev "
                         "(scripts/setup.sh does) or set HAFRM_GLOO_INCLUDE_DIR")
  endif()
  if(_missing)
    list(JOIN _missing "; " _why)
    if(_mode STREQUAL "ON")
      message(FATAL_ERROR "hafrm: the distributed layer was required but hafrm cannot find ${_why}")
    endif()
    message(STATUS "hafrm: distributed layer skipped (AUTO): missing ${_why}")
    return()
  endif()

  add_library(hafrm_distributed INTERFACE)
  add_library(hafrm::distributed ALIAS hafrm_distributed)
  target_link_libraries(hafrm_distributed INTERFACE hafrm::hafrm)
  target_include_directories(hafrm_distributed SYSTEM INTERFACE "${HAFRM_GLOO_INCLUDE_DIR}")
  # ProcessGroupGloo.hpp is empty unless USE_C10D_GLOO is defined (as torch's own build does).
  target_compile_definitions(hafrm_distributed INTERFACE USE_C10D_GLOO HAFRM_WITH_DISTRIBUTED=1)

  # NCCL: the wheel's nccl.h, for a CUDA build of hafrm against a CUDA LibTorch (the process
  # group class lives in libtorch_cuda.so).
  set(_nccl OFF)
  if(HAFRM_WITH_CUDA AND TARGET torch_cuda AND Torch_DIR)
    get_filename_component(_site "${Torch_DIR}/../../../.." ABSOLUTE)
    find_path(HAFRM_NCCL_INCLUDE_DIR nccl.h HINTS "${_site}/nvidia/nccl/include" NO_DEFAULT_PATH)
    if(HAFRM_NCCL_INCLUDE_DIR)
      target_include_directories(hafrm_distributed SYSTEM INTERFACE "${HAFRM_NCCL_INCLUDE_DIR}")
      target_compile_definitions(hafrm_distributed INTERFACE USE_C10D_NCCL)
      set(_nccl ON)
    endif()
  endif()
  message(STATUS "hafrm: distributed layer on (Gloo headers ${HAFRM_GLOO_INCLUDE_DIR}, NCCL ${_nccl})")
  set(${found_var} ON PARENT_SCOPE)
endfunction()
