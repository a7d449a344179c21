# OpenCV and LibTorch for the library and its programs.
#
# OpenCV: Debian's small packages (libopencv-{core,imgproc,imgcodecs}-dev) ship headers and
# libraries without the CMake config of the full libopencv-dev; both are handled. The result
# is one target per module, mrcnn_opencv_<module>.
find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
set(MRCNN_OPENCV_FROM_CONFIG ${OpenCV_FOUND})
foreach(component core imgproc imgcodecs)
  if(NOT TARGET mrcnn_opencv_${component})
    add_library(mrcnn_opencv_${component} INTERFACE)
    if(OpenCV_FOUND)
      target_link_libraries(mrcnn_opencv_${component} INTERFACE opencv_${component})
    else()
      find_path(MRCNN_OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
      find_library(MRCNN_OPENCV_${component}_LIB opencv_${component} REQUIRED)
      target_include_directories(mrcnn_opencv_${component} SYSTEM INTERFACE ${MRCNN_OPENCV_INCLUDE_DIR})
      target_link_libraries(mrcnn_opencv_${component} INTERFACE ${MRCNN_OPENCV_${component}_LIB})
    endif()
  endif()
endforeach()

# LibTorch. A CUDA build of the torch wheel only configures through find_package(Torch) with a
# CUDA toolkit; without one (a CPU-only machine), set MRCNN_TORCH_DIR to the torch package
# folder and its libraries are linked directly. libtorch_cuda is linked when present so that
# the cuda device works where a GPU exists.
set(MRCNN_TORCH_DIR "" CACHE PATH "torch package folder (site-packages/torch): link without find_package(Torch)")
if(NOT TARGET mrcnn_torch)
  add_library(mrcnn_torch INTERFACE)
  if(MRCNN_TORCH_DIR)
    target_include_directories(mrcnn_torch SYSTEM INTERFACE "${MRCNN_TORCH_DIR}/include"
                               "${MRCNN_TORCH_DIR}/include/torch/csrc/api/include")
    target_link_libraries(mrcnn_torch INTERFACE "${MRCNN_TORCH_DIR}/lib/libtorch.so"
                          "${MRCNN_TORCH_DIR}/lib/libtorch_cpu.so" "${MRCNN_TORCH_DIR}/lib/libc10.so")
    if(EXISTS "${MRCNN_TORCH_DIR}/lib/libtorch_cuda.so")
      target_link_libraries(mrcnn_torch INTERFACE "-Wl,--no-as-needed" "${MRCNN_TORCH_DIR}/lib/libtorch_cuda.so"
                            "${MRCNN_TORCH_DIR}/lib/libc10_cuda.so" "-Wl,--as-needed")
    endif()
    target_compile_definitions(mrcnn_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
    set(MRCNN_TORCH_RPATH "${MRCNN_TORCH_DIR}/lib")
  else()
    find_package(Torch REQUIRED)
    target_link_libraries(mrcnn_torch INTERFACE ${TORCH_LIBRARIES})
    target_include_directories(mrcnn_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
    set(MRCNN_TORCH_RPATH "")
  endif()
endif()

find_package(nlohmann_json 3 REQUIRED)
