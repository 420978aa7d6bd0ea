# hafrmTorch.cmake: finds LibTorch the way this project installs it (the PyPI `torch` wheel) and
# applies the two fixes a wheel-based build needs. Used by the project and by the installed
# package's hafrmConfig.cmake, so consumers get the same behaviour.

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

# The static library that carries hafrm's CUDA kernels into a program (see README, "CUDA").
function(hafrm_add_cuda_ops target source)
  add_library(${target} STATIC "${source}")
  set_target_properties(${target} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF
                                             POSITION_INDEPENDENT_CODE ON)
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_link_libraries(${target} PUBLIC torch)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
endfunction()
