# ringflow-data: import-idx, synth, info (see src/apps/ringflow_data.cpp).
find_package(CLI11 CONFIG REQUIRED)
add_executable(ringflow-data ${CMAKE_CURRENT_LIST_DIR}/ringflow_data.cpp)
target_link_libraries(ringflow-data PRIVATE ringflow::datasets CLI11::CLI11 ringflow::flags)
