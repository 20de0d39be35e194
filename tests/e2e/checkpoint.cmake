# End-to-end tests of checkpoints, resume, stop signals, and failure behaviour
# (a killed rank, a NaN, a stalled rank) with the real trainer binary.
add_executable(checkpoint_diff ${CMAKE_CURRENT_LIST_DIR}/checkpoint_diff.cpp)
target_link_libraries(checkpoint_diff PRIVATE ringflow::train ringflow::flags)

foreach(case bitwise other_ranks corrupt crash signals kill nan stall bad_flags ps ps_cnn)
  add_test(NAME checkpoint.${case}
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/checkpoint.sh $<TARGET_FILE:trainer>
                   $<TARGET_FILE:ringflow-data> $<TARGET_FILE:checkpoint_diff> ${case}
                   ${MPIEXEC_EXECUTABLE} ${RF_FASHION_MNIST_DIR})
  set_tests_properties(checkpoint.${case} PROPERTIES TIMEOUT 300 PROCESSORS 2 SKIP_RETURN_CODE 77
                                                     ENVIRONMENT "${RF_MPI_ENV}")
endforeach()
