# hafrmData.cmake: the data layer (include/hafrm/data: JSONL records, tokenizers, prompt
# templates, assembly) and its two dependencies, nlohmann_json (>= 3.10, header-only) and
# SentencePiece (Debian: libsentencepiece-dev). The data layer does not use LibTorch.
#
#   hafrm_find_data_dependencies(<mode> <found_var>)
#     Finds nlohmann_json and SentencePiece and defines the INTERFACE IMPORTED target
#     hafrm::sentencepiece (processor + trainer libraries). SentencePiece is found through
#     pkg-config (module "sentencepiece") and, failing that, by find_path/find_library; set
#     SentencePiece_INCLUDE_DIR / SentencePiece_LIBRARY / SentencePiece_TRAIN_LIBRARY to override.
#     mode AUTO: <found_var> OFF when something is missing (a status line says what).
#     mode ON:   stop at configure, naming what is missing.
#     mode OFF:  never; <found_var> OFF.
#   hafrm_setup_data(<mode> <found_var> <include_dir>)
#     The above, then the INTERFACE target hafrm_data (alias hafrm::data): <include_dir>, C++20,
#     nlohmann_json::nlohmann_json and hafrm::sentencepiece. For this project's own build (and
#     for examples/common built on its own).
#
# Used by this project's CMakeLists.txt (HAFRM_WITH_DATA) and by the installed hafrmConfig.cmake
# for `find_package(hafrm COMPONENTS data)`, which finds the dependencies on the consumer's
# machine and then imports the exported hafrm::data. A consumer that does not ask for the
# component never looks for either dependency.

function(hafrm_find_data_dependencies mode found_var)
  set(${found_var} OFF PARENT_SCOPE)
  string(TOUPPER "${mode}" _mode)
  if(_mode STREQUAL "OFF")
    message(STATUS "hafrm: data layer off (HAFRM_WITH_DATA=OFF)")
    return()
  endif()
  if(NOT _mode MATCHES "^(AUTO|ON)$")
    message(FATAL_ERROR "HAFRM_WITH_DATA must be AUTO, ON or OFF, got '${mode}'")
  endif()

  set(_missing "")
  if(NOT TARGET nlohmann_json::nlohmann_json)
    find_package(nlohmann_json 3.10 QUIET)
    if(NOT nlohmann_json_FOUND)
      list(APPEND _missing
           "nlohmann_json >= 3.10 (Debian: nlohmann-json3-dev, or set nlohmann_json_DIR)")
    endif()
  endif()

  if(NOT TARGET hafrm::sentencepiece)
    find_package(PkgConfig QUIET)
    if(PkgConfig_FOUND)
      pkg_check_modules(HAFRM_SPM QUIET IMPORTED_TARGET sentencepiece)
    endif()
    if(HAFRM_SPM_FOUND)
      add_library(hafrm::sentencepiece INTERFACE IMPORTED)
      # Debian's .pc lists both libsentencepiece and libsentencepiece_train.
      target_link_libraries(hafrm::sentencepiece INTERFACE PkgConfig::HAFRM_SPM)
    else()
      find_path(SentencePiece_INCLUDE_DIR sentencepiece_processor.h)
      find_library(SentencePiece_LIBRARY sentencepiece)
      find_library(SentencePiece_TRAIN_LIBRARY sentencepiece_train)
      if(SentencePiece_INCLUDE_DIR AND SentencePiece_LIBRARY AND SentencePiece_TRAIN_LIBRARY)
        add_library(hafrm::sentencepiece INTERFACE IMPORTED)
        target_include_directories(hafrm::sentencepiece INTERFACE "${SentencePiece_INCLUDE_DIR}")
        target_link_libraries(hafrm::sentencepiece
                              INTERFACE "${SentencePiece_TRAIN_LIBRARY}" "${SentencePiece_LIBRARY}")
      else()
        string(CONCAT _spm "SentencePiece (Debian: libsentencepiece-dev, or set "
                           "SentencePiece_INCLUDE_DIR, SentencePiece_LIBRARY and "
                           "SentencePiece_TRAIN_LIBRARY)")
        list(APPEND _missing "${_spm}")
      endif()
    endif()
  endif()

  if(_missing)
    list(JOIN _missing " and " _why)
    if(_mode STREQUAL "ON")
      message(FATAL_ERROR "hafrm: the data layer was required but hafrm cannot find ${_why}")
    endif()
    message(STATUS "hafrm: data layer skipped (AUTO): missing ${_why}")
    return()
  endif()
  set(${found_var} ON PARENT_SCOPE)
endfunction()

function(hafrm_setup_data mode found_var include_dir)
  set(${found_var} OFF PARENT_SCOPE)
  if(TARGET hafrm::data)
    set(${found_var} ON PARENT_SCOPE)
    return()
  endif()
  hafrm_find_data_dependencies("${mode}" _found)
  if(NOT _found)
    return()
  endif()
  add_library(hafrm_data INTERFACE)
  add_library(hafrm::data ALIAS hafrm_data)
  set_target_properties(hafrm_data PROPERTIES EXPORT_NAME data)
  target_include_directories(hafrm_data INTERFACE $<BUILD_INTERFACE:${include_dir}>
                                                  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_compile_features(hafrm_data INTERFACE cxx_std_20)
  target_link_libraries(hafrm_data INTERFACE nlohmann_json::nlohmann_json hafrm::sentencepiece)
  message(STATUS "hafrm: data layer on (hafrm::data)")
  set(${found_var} ON PARENT_SCOPE)
endfunction()
