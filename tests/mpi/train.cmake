# Data-parallel training on real ranks (equivalence, replicas, determinism, overlap).
rf_add_mpi_test(train_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/train_test.cpp
  LIBS ringflow::train
  TIMEOUT 300)
# The overlap test needs the cores to itself.
foreach(np IN LISTS RF_MPI_NPS)
  set_tests_properties(train_test.np${np} PROPERTIES RUN_SERIAL TRUE)
endforeach()
