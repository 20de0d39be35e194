# Engine benchmarks: executor overhead per node, MatMul GFLOP/s.
add_executable(executor_bench ${CMAKE_CURRENT_SOURCE_DIR}/executor_bench.cpp)
target_link_libraries(executor_bench PRIVATE ringflow::runtime ringflow::flags)
add_executable(matmul_bench ${CMAKE_CURRENT_SOURCE_DIR}/matmul_bench.cpp)
target_link_libraries(matmul_bench PRIVATE ringflow::runtime ringflow::flags)
# Smoke runs at tiny sizes so the benchmarks can't rot; they never judge time.
add_test(NAME bench_smoke.executor COMMAND executor_bench --nodes 200 --reps 2)
add_test(NAME bench_smoke.matmul COMMAND matmul_bench --reps 1 --quick)
