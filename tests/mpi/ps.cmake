# Parameter-server training on real ranks (sync equivalence, async, staleness,
# shutdown with uneven workers). One rank has no server and worker; 5 ranks
# oversubscribe the 2 cores on purpose.
rf_add_mpi_test(ps_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/ps_test.cpp
  LIBS ringflow::train
  NPS 2 3 4 5
  TIMEOUT 300)
