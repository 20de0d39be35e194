# ringflow::collectives under mpiexec -n 1, 2, 3, 4 and an oversubscribed 8.
rf_add_mpi_test(collectives_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/collectives_test.cpp
          ${CMAKE_CURRENT_LIST_DIR}/ring_allreduce_test.cpp
  LIBS ringflow::collectives
  TIMEOUT 120)

# Started without mpiexec: MPI as a one-rank "singleton" job.
rf_add_unit_test(collectives_singleton_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/collectives_singleton_test.cpp
  LIBS ringflow::collectives
  TIMEOUT 60)

# abort_job: "rank r: <what> — <hint>" on stderr and a non-zero exit of the whole
# job, with the other rank stuck in a barrier (a hang would hit the timeout).
add_executable(collectives_abort_probe ${CMAKE_CURRENT_LIST_DIR}/collectives_abort_probe.cpp)
target_link_libraries(collectives_abort_probe PRIVATE ringflow::collectives ringflow::flags)
set(rf_abort_check [=[
out=$("$0" "$1" 2 --oversubscribe "$2" 2>&1); rc=$?
printf '%s\n' "$out"
printf '%s\n' "$out" | grep -q 'rank 1: probe failure — this abort is expected by the test' &&
  [ "$rc" -ne 0 ] && echo "abort_job: message and non-zero exit ok (exit code $rc)"
]=])
add_test(NAME collectives_abort.np2
         COMMAND sh -c "${rf_abort_check}" ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG}
                 $<TARGET_FILE:collectives_abort_probe>)
set_tests_properties(collectives_abort.np2 PROPERTIES
  TIMEOUT 60 PROCESSORS 2 ENVIRONMENT "${RF_MPI_ENV}"
  PASS_REGULAR_EXPRESSION "abort_job: message and non-zero exit ok"
  FAIL_REGULAR_EXPRESSION "barrier completed")
