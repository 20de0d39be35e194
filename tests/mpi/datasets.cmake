# Shards and batches of ringflow::datasets on real MPI ranks.
rf_add_mpi_test(datasets_shard_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/datasets_shard_test.cpp
  LIBS ringflow::datasets ZLIB::ZLIB
  NPS 1 2 3 4
  TIMEOUT 120)
# The C API only: keep Open MPI's deprecated C++ bindings out of the build.
target_compile_definitions(datasets_shard_test PRIVATE OMPI_SKIP_MPICXX MPICH_SKIP_MPICXX)
target_link_libraries(datasets_shard_test PRIVATE ringflow::hdf5)
