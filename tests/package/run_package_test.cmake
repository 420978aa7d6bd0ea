# Installs hafrm from the build tree into a temporary prefix, then configures, builds and runs an
# outside consumer project that finds it with find_package(hafrm). Run by ctest (hafrm.package).
set(prefix "${WORK_DIR}/prefix")
set(cbuild "${WORK_DIR}/consumer-build")
file(REMOVE_RECURSE "${prefix}" "${cbuild}")

execute_process(COMMAND ${CMAKE_COMMAND} --install "${HAFRM_BINARY_DIR}" --prefix "${prefix}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "install failed (${rc})")
endif()
if(NOT EXISTS "${prefix}/share/hafrm/cmake/hafrmConfig.cmake")
  message(FATAL_ERROR "install did not produce hafrmConfig.cmake")
endif()

set(launcher "")
if(CXX_LAUNCHER)
  set(launcher "-DCMAKE_CXX_COMPILER_LAUNCHER=${CXX_LAUNCHER}")
endif()
# The consumer gets only the install prefix and LibTorch; Eigen comes from the system.
# HAFRM_WITH_CUDA=OFF keeps this test a CPU build (the CUDA path is exercised by the main build).
execute_process(COMMAND ${CMAKE_COMMAND} -S "${CMAKE_CURRENT_LIST_DIR}/consumer" -B "${cbuild}"
                  -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${prefix}" "-DTorch_DIR=${TORCH_DIR}"
                  -DHAFRM_WITH_CUDA=OFF "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}" ${launcher}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "consumer configure failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${cbuild}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "consumer build failed (${rc})")
endif()
execute_process(COMMAND "${cbuild}/consumer" RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "consumer printed: ${out}")
if(NOT rc EQUAL 0 OR NOT out MATCHES "hybrid loss [0-9.]+")
  message(FATAL_ERROR "consumer run failed (${rc})")
endif()
