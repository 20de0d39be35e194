# datasets_bench: Fashion-MNIST import time, shard-read MB/s at 1 and 2 ranks,
# batch copy throughput; TSV on stdout. The smoke test runs it on a small
# synthetic set; it checks that the benchmark runs, never its timings.
add_executable(datasets_bench ${CMAKE_CURRENT_LIST_DIR}/datasets_bench.cpp)
target_link_libraries(datasets_bench PRIVATE ringflow::datasets ZLIB::ZLIB ringflow::flags)
target_link_libraries(datasets_bench PRIVATE ringflow::hdf5)
add_test(NAME datasets_bench.smoke COMMAND datasets_bench --quick)
set_tests_properties(datasets_bench.smoke PROPERTIES TIMEOUT 60)
