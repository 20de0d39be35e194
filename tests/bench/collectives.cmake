# allreduce_bench: ring vs MPI_Allreduce vs auto, TSV (see the opening comment).
add_executable(allreduce_bench ${CMAKE_CURRENT_LIST_DIR}/allreduce_bench.cpp)
target_link_libraries(allreduce_bench PRIVATE ringflow::collectives ringflow::flags)

# Smoke run at tiny sizes with 2 ranks so the benchmark cannot rot. It checks the
# results, never the times.
add_test(NAME collectives_allreduce_bench.smoke
         COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 --oversubscribe
                 $<TARGET_FILE:allreduce_bench> --min-bytes 4K --max-bytes 256K --iters 2
                 --warmup 1 --segment-bytes 16K)
set_tests_properties(collectives_allreduce_bench.smoke PROPERTIES
  TIMEOUT 60 PROCESSORS 2 ENVIRONMENT "${RF_MPI_ENV}" LABELS collectives)

# pingpong_bench: latency (alpha) and bandwidth (beta) of point-to-point MPI, the
# parameters of the alpha-beta projection in jobs/compare_modes.sh. Smoke run only.
add_executable(pingpong_bench ${CMAKE_CURRENT_LIST_DIR}/pingpong_bench.cpp)
target_link_libraries(pingpong_bench PRIVATE ringflow::collectives ringflow::flags)
add_test(NAME collectives_pingpong_bench.smoke
         COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 --oversubscribe
                 $<TARGET_FILE:pingpong_bench> --max-bytes 64K --iters 2)
set_tests_properties(collectives_pingpong_bench.smoke PROPERTIES
  TIMEOUT 60 PROCESSORS 2 ENVIRONMENT "${RF_MPI_ENV}" LABELS collectives
  PASS_REGULAR_EXPRESSION "# alpha_us=")
