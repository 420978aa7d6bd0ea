# hafrmTorch.cmake: finds LibTorch the way this project installs it (the PyPI `torch` wheel),
# applies what a wheel-based build needs (its CUDA arch list, link directories, OpenMP runtime),
# and builds hafrm's CUDA kernels. Used by the project and by the installed package's
# hafrmConfig.cmake, so consumers get the same behaviour.
set(_HAFRM_CMAKE_DIR "${CMAKE_CURRENT_LIST_DIR}")

# 1. Locate the wheel when the caller gave no Torch_DIR / CMAKE_PREFIX_PATH: ask Python.
function(hafrm_locate_torch)
  if(Torch_DIR OR TARGET torch)
    return()
  endif()
  find_package(Torch QUIET CONFIG)
  if(Torch_FOUND)
    return()
  endif()
  set(_candidates "${HAFRM_PYTHON}" "${PROJECT_SOURCE_DIR}/.venv/bin/python" "python3")
  foreach(_py IN LISTS _candidates)
    if(NOT _py)
      continue()
    endif()
    execute_process(COMMAND "${_py}" -c "import torch; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE _rc ERROR_QUIET)
    if(_rc EQUAL 0 AND EXISTS "${_prefix}/Torch")
      set(Torch_DIR "${_prefix}/Torch" CACHE PATH "LibTorch CMake package (from ${_py})" FORCE)
      message(STATUS "hafrm: using LibTorch from ${_prefix} (via ${_py})")
      return()
    endif()
  endforeach()
endfunction()

# 2. torch's CMake autodetects a CUDA arch list that includes sm_50, which nvcc 13 rejects; pick
#    Ampere + Hopper unless the caller chose.
macro(hafrm_default_cuda_arch_list)
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(ENV{TORCH_CUDA_ARCH_LIST} "8.0;9.0")
  endif()
endmacro()

# 3. The wheel's libtorch_cuda.so needs the wheel's own libnccl etc., newer than a CUDA
#    toolkit's; show the linker <site-packages>/nvidia/*/lib so it does not pick the toolkit's
#    (symptom: undefined reference to `ncclCommSuspend').
function(hafrm_torch_link_dirs out_var)
  set(_dirs "")
  if(Torch_DIR)
    get_filename_component(_site "${Torch_DIR}/../../../.." ABSOLUTE)
    file(GLOB _libdirs LIST_DIRECTORIES true "${_site}/nvidia/*/lib" "${_site}/nvidia/cu*/lib")
    foreach(_d IN LISTS _libdirs)
      if(IS_DIRECTORY "${_d}")
        list(APPEND _dirs "${_d}")
      endif()
    endforeach()
    list(APPEND _dirs "${_site}/torch/lib")
  endif()
  list(REMOVE_DUPLICATES _dirs)
  set(${out_var} "${_dirs}" PARENT_SCOPE)
endfunction()

function(hafrm_apply_link_fixups target)
  hafrm_torch_link_dirs(_dirs)
  foreach(_d IN LISTS _dirs)
    set_property(TARGET ${target} APPEND PROPERTY INTERFACE_LINK_OPTIONS "LINKER:-rpath-link,${_d}")
  endforeach()
endfunction()

# 4. OpenMP: link the OpenMP runtime the program will run with. The wheel bundles GCC's runtime as
#    torch/lib/libgomp.so.1, which libtorch_cpu.so needs; torch/lib is in the run path of every
#    program that links LibTorch, so that copy is the one loaded at run time, whichever libgomp
#    the program was linked against (one OpenMP runtime in the process). Linked against the
#    compiler's libgomp.so instead, CMake warns for every executable that it "may be hidden" by
#    files in torch/lib: true, and harmless. Pointing FindOpenMP's OpenMP_gomp_LIBRARY at torch's
#    copy makes link time and run time agree and the warning moot. Call after Torch is found and
#    before find_package(OpenMP); a value the caller set for OpenMP_gomp_LIBRARY is kept.
function(hafrm_prefer_torch_openmp_runtime)
  if(DEFINED OpenMP_gomp_LIBRARY OR NOT CMAKE_CXX_COMPILER_ID STREQUAL "GNU" OR NOT TORCH_LIBRARY)
    return()
  endif()
  get_filename_component(_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
  if(EXISTS "${_torch_lib_dir}/libgomp.so.1")
    set(OpenMP_gomp_LIBRARY "${_torch_lib_dir}/libgomp.so.1" CACHE FILEPATH
        "Path to the gomp library for OpenMP (LibTorch's own copy, the one loaded at run time)")
  endif()
endfunction()

# 5. The CUDA architectures hafrm's own kernels are compiled for, as a CMake CUDA_ARCHITECTURES
#    list. Independent of the list torch's CMake chose (it may already have been found, by the
#    consumer, with its autodetected list that nvcc 13 rejects). First of:
#      HAFRM_CUDA_ARCHITECTURES (CMake style, e.g. "80-real;90"),
#      TORCH_CUDA_ARCH_LIST (variable, else environment; torch style "8.0;9.0+PTX"),
#      80-real;90-real (Ampere + Hopper, as hafrm_default_cuda_arch_list gives torch).
function(hafrm_cuda_architectures out_var)
  set(_how "")
  if(HAFRM_CUDA_ARCHITECTURES)
    set(_archs "${HAFRM_CUDA_ARCHITECTURES}")
    set(_how "HAFRM_CUDA_ARCHITECTURES")
  else()
    if(DEFINED TORCH_CUDA_ARCH_LIST AND NOT TORCH_CUDA_ARCH_LIST STREQUAL "")
      set(_torch_list "${TORCH_CUDA_ARCH_LIST}")
      set(_how "TORCH_CUDA_ARCH_LIST")
    elseif(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
      set(_torch_list "$ENV{TORCH_CUDA_ARCH_LIST}")
      set(_how "the environment's TORCH_CUDA_ARCH_LIST")
    else()
      set(_torch_list "8.0;9.0")
      set(_how "hafrm's default")
    endif()
    string(REGEX REPLACE "[ \t]+" ";" _torch_list "${_torch_list}")
    set(_archs "")
    foreach(_a IN LISTS _torch_list)
      if(_a STREQUAL "")
        continue()
      endif()
      # "8.6" -> 86-real (machine code only, as torch does); "9.0+PTX" -> 90 (plus PTX);
      # "9.0a" -> 90a-real. Names (Ampere, Auto, All, ...) have no fixed meaning here.
      if(NOT _a MATCHES "^([0-9]+)\\.([0-9]+)([af]?)(\\+PTX)?$")
        message(FATAL_ERROR
          "hafrm: cannot turn '${_a}' (from ${_how} = '${_torch_list}') into a CUDA architecture "
          "for hafrm's kernels. Set -DHAFRM_CUDA_ARCHITECTURES=\"80-real;90-real\" (CMake "
          "CUDA_ARCHITECTURES syntax), or TORCH_CUDA_ARCH_LIST to numbers such as \"8.0;9.0\", "
          "or -DHAFRM_WITH_CUDA=OFF for a CPU-only build.")
      endif()
      if(CMAKE_MATCH_4)
        list(APPEND _archs "${CMAKE_MATCH_1}${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
      else()
        list(APPEND _archs "${CMAKE_MATCH_1}${CMAKE_MATCH_2}${CMAKE_MATCH_3}-real")
      endif()
    endforeach()
  endif()
  # nvcc 13 compiles for sm_75 and newer only, nvcc 12 for sm_50 and newer: say what to set
  # rather than let nvcc stop the build with "Unsupported gpu architecture".
  set(_min 0)
  if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 13)
    set(_min 75)
  elseif(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12)
    set(_min 50)
  endif()
  foreach(_a IN LISTS _archs)
    string(REGEX MATCH "^[0-9]+" _n "${_a}")
    if(NOT _n OR _n LESS _min)
      message(FATAL_ERROR
        "hafrm: CUDA architecture '${_a}' (from ${_how}) is not supported by nvcc "
        "${CMAKE_CUDA_COMPILER_VERSION} (oldest: sm_${_min}). Set "
        "-DHAFRM_CUDA_ARCHITECTURES=\"80-real;90-real\" (or your GPUs, >= ${_min}), or "
        "-DHAFRM_WITH_CUDA=OFF for a CPU-only build.")
    endif()
  endforeach()
  if(NOT _archs)
    message(FATAL_ERROR "hafrm: empty CUDA architecture list (from ${_how}); set "
                        "-DHAFRM_CUDA_ARCHITECTURES=\"80-real;90-real\" or -DHAFRM_WITH_CUDA=OFF")
  endif()
  set(${out_var} "${_archs}" PARENT_SCOPE)
endfunction()

# The static library that carries hafrm's CUDA kernels into a program (see README, "CUDA"). It is
# defined in a directory of its own (cuda_ops/CMakeLists.txt, next to this file) so that it can
# drop the -gencode flags torch's CMake appended to the caller's CMAKE_CUDA_FLAGS without
# changing them for the caller's own targets. The caller must have enabled CUDA.
function(hafrm_add_cuda_ops target source include_dir binary_dir)
  if(TARGET ${target})
    return()
  endif()
  hafrm_cuda_architectures(HAFRM_CUDA_OPS_ARCHITECTURES)
  set(HAFRM_CUDA_OPS_TARGET "${target}")
  set(HAFRM_CUDA_OPS_SOURCE "${source}")
  set(HAFRM_CUDA_OPS_INCLUDE_DIR "${include_dir}")
  add_subdirectory("${_HAFRM_CMAKE_DIR}/cuda_ops" "${binary_dir}")
  message(STATUS "hafrm: CUDA kernels (${target}) for architectures ${HAFRM_CUDA_OPS_ARCHITECTURES}")
endfunction()
