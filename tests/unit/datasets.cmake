# Unit tests of ringflow::datasets (small files generated in a temp dir).
rf_add_unit_test(datasets_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/datasets_format_test.cpp ${CMAKE_CURRENT_LIST_DIR}/datasets_batch_test.cpp
  LIBS ringflow::datasets ZLIB::ZLIB
  TIMEOUT 120)
target_include_directories(datasets_test PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(datasets_test PRIVATE ringflow::hdf5)
