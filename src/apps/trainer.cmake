# trainer: the data-parallel training CLI (see src/apps/trainer_main.cpp).
find_package(CLI11 CONFIG REQUIRED)
add_executable(trainer ${CMAKE_CURRENT_LIST_DIR}/trainer_main.cpp ${CMAKE_CURRENT_LIST_DIR}/trainer_ps.cpp
                       ${CMAKE_CURRENT_LIST_DIR}/metrics_writer.cpp)
target_link_libraries(trainer PRIVATE ringflow::train CLI11::CLI11 ringflow::flags)
