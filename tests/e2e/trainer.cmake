# End-to-end tests of the trainer CLI: bad input on every rank, singleton =
# mpirun -np 1, config-file reproducibility, the timeline, and learning on a
# Fashion-MNIST subset with 2 ranks; parameter-server mode: bad flags, sync PS
# equal to allreduce, async staleness within its bound; jobs/compare_modes.sh at a
# tiny size.
foreach(case bad_inputs singleton config timeline fashion_mnist ps_bad_inputs ps compare_modes)
  add_test(NAME trainer_cli.${case}
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/trainer_cli.sh $<TARGET_FILE:trainer>
                   $<TARGET_FILE:ringflow-data> ${case} ${MPIEXEC_EXECUTABLE} ${RF_FASHION_MNIST_DIR})
  set_tests_properties(trainer_cli.${case} PROPERTIES TIMEOUT 300 PROCESSORS 2 SKIP_RETURN_CODE 77
                                                      ENVIRONMENT "${RF_MPI_ENV}")
endforeach()
