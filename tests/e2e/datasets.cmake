# End-to-end tests of ringflow-data: bad inputs (exit code 1, message naming the
# file and the problem), usage errors (exit code 2), shard plans, synthetic
# sets, and the real Fashion-MNIST import with pinned checksums.
add_executable(datasets_make_bad_inputs ${CMAKE_CURRENT_LIST_DIR}/datasets_make_bad_inputs.cpp)
target_include_directories(datasets_make_bad_inputs PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../unit)
target_link_libraries(datasets_make_bad_inputs PRIVATE ringflow::datasets ZLIB::ZLIB ringflow::flags)
target_link_libraries(datasets_make_bad_inputs PRIVATE ringflow::hdf5)

set(RF_FASHION_MNIST_DIR /usr/share/datasets/fashion-mnist
    CACHE PATH "Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)")
foreach(case bad_inputs usage ranks synth fashion_mnist)
  add_test(NAME datasets_cli.${case}
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/datasets_cli.sh $<TARGET_FILE:ringflow-data>
                   $<TARGET_FILE:datasets_make_bad_inputs> ${case} ${RF_FASHION_MNIST_DIR})
  set_tests_properties(datasets_cli.${case} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77)
endforeach()
