# hafrmDistributed.cmake: the c10d layer (include/hafrm/distributed) on top of the LibTorch the
# project uses. The torch wheel ships the c10d headers and exports ProcessGroupGloo from
# libtorch_cpu.so, but not the Gloo headers ProcessGroupGloo.hpp includes: Debian's libgloo-dev
# supplies them (../shared/LIBTORCH.md). NCCL's header comes with the wheel's nvidia-nccl package.
#
#   HAFRM_WITH_DISTRIBUTED=AUTO (default): build the layer when both are found, else skip it.
#   HAFRM_WITH_DISTRIBUTED=ON: stop at configure, naming what is missing.
#   HAFRM_WITH_DISTRIBUTED=OFF: never.
# Defines the INTERFACE target hafrm::distributed (hafrm::hafrm + USE_C10D_GLOO, and
# USE_C10D_NCCL for a CUDA build with nccl.h) and sets HAFRM_DISTRIBUTED_FOUND.
set(HAFRM_WITH_DISTRIBUTED AUTO CACHE STRING
    "Build hafrm's c10d layer (data parallel, vocab parallel): AUTO, ON or OFF")
set_property(CACHE HAFRM_WITH_DISTRIBUTED PROPERTY STRINGS AUTO ON OFF)

function(hafrm_setup_distributed)
  set(HAFRM_DISTRIBUTED_FOUND OFF PARENT_SCOPE)
  string(TOUPPER "${HAFRM_WITH_DISTRIBUTED}" _mode)
  if(_mode STREQUAL "OFF")
    message(STATUS "hafrm: distributed layer off (HAFRM_WITH_DISTRIBUTED=OFF)")
    return()
  endif()
  if(NOT _mode MATCHES "^(AUTO|ON)$")
    message(FATAL_ERROR "HAFRM_WITH_DISTRIBUTED must be AUTO, ON or OFF, got '${HAFRM_WITH_DISTRIBUTED}'")
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
      message(FATAL_ERROR "HAFRM_WITH_DISTRIBUTED=ON but hafrm cannot find ${_why}")
    endif()
    message(STATUS "hafrm: distributed layer skipped (AUTO): missing ${_why}")
    return()
  endif()

  add_library(hafrm_distributed INTERFACE)
  add_library(hafrm::distributed ALIAS hafrm_distributed)
  target_link_libraries(hafrm_distributed INTERFACE hafrm)
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
  set(HAFRM_DISTRIBUTED_FOUND ON PARENT_SCOPE)
endfunction()
