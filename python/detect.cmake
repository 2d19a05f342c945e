# Finds what the Python package needs and sets BAYESAGG_PYTHON_FOUND (the default of
# BAYESAGG_BUILD_PYTHON): an interpreter whose `torch` is this LibTorch's version (Debian's
# python3-torch loads the very libtorch*.so of libtorch-dev), pybind11 and libtorch_python next to
# libtorch. `BAYESAGG_PYTHON_EXECUTABLE` defaults to /usr/bin/python3 (a python3 on PATH, e.g.
# pyenv's, may lack torch); a second libtorch (pip/conda) must never be loaded with this one.

set(BAYESAGG_PYTHON_FOUND OFF)
if(EXISTS /usr/bin/python3)
  set(_bayesagg_default_python /usr/bin/python3)
else()
  find_program(_bayesagg_default_python python3)
endif()
set(BAYESAGG_PYTHON_EXECUTABLE "${_bayesagg_default_python}" CACHE FILEPATH
  "Interpreter of the Python package (its torch must be this LibTorch)")

set(_why "")
if(NOT BAYESAGG_PYTHON_EXECUTABLE)
  set(_why "no python3")
else()
  execute_process(
    COMMAND ${BAYESAGG_PYTHON_EXECUTABLE} -c "import torch; print(torch.__version__.split('+')[0])"
    OUTPUT_VARIABLE _bayesagg_py_torch OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _rc ERROR_QUIET)
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _py_torch_mm "${_bayesagg_py_torch}")
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _torch_mm "${Torch_VERSION}")
  if(NOT _rc EQUAL 0)
    set(_why "${BAYESAGG_PYTHON_EXECUTABLE} cannot import torch (apt-get install python3-torch)")
  elseif(_torch_mm AND NOT _py_torch_mm STREQUAL _torch_mm)
    set(_why "${BAYESAGG_PYTHON_EXECUTABLE}'s torch is ${_bayesagg_py_torch}, LibTorch is ${Torch_VERSION}")
  endif()
endif()
if(NOT _why)
  # pybind11's classic tools read PYTHON_EXECUTABLE.
  set(PYTHON_EXECUTABLE ${BAYESAGG_PYTHON_EXECUTABLE} CACHE FILEPATH "" FORCE)
  find_package(pybind11 CONFIG QUIET)
  if(NOT pybind11_FOUND)
    set(_why "no pybind11 (apt-get install pybind11-dev)")
  endif()
endif()
if(NOT _why)
  get_filename_component(_torch_lib_dir "${TORCH_LIBRARY}" DIRECTORY)
  find_library(BAYESAGG_TORCH_PYTHON_LIBRARY torch_python HINTS ${_torch_lib_dir} NO_DEFAULT_PATH)
  find_library(BAYESAGG_TORCH_PYTHON_LIBRARY torch_python)
  if(NOT BAYESAGG_TORCH_PYTHON_LIBRARY)
    set(_why "no libtorch_python next to ${TORCH_LIBRARY}")
  endif()
endif()
if(_why)
  message(STATUS "bayesagg Python package: off (${_why})")
else()
  set(BAYESAGG_PYTHON_FOUND ON)
  message(STATUS "bayesagg Python package: ${BAYESAGG_PYTHON_EXECUTABLE} (torch ${_bayesagg_py_torch}), pybind11 ${pybind11_VERSION}")
endif()
