# Data-parallel training on real ranks (equivalence, replicas, determinism, overlap).
rf_add_mpi_test(train_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/train_test.cpp
  LIBS ringflow::train
  TIMEOUT 300)
