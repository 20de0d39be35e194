# End-to-end tests of the jobs/ launch scripts. The slurm.* tests bring up a
# private single-node Slurm (munged, slurmctld, slurmd from Debian packages)
# for each case and submit jobs/train.sbatch and jobs/scaling.sbatch to it; they
# skip (77) where Slurm cannot run (not root, packages missing) unless CI is
# set. jobs.local runs jobs/local.sh. A lock keeps the private clusters from
# running side by side, and each takes both CI cores while it runs.
foreach(case train reject preempt scaling local)
  if(case STREQUAL "local")
    set(name jobs.local)
  else()
    set(name slurm.${case})
  endif()
  add_test(NAME ${name}
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/slurm_jobs.sh $<TARGET_FILE:trainer>
                   $<TARGET_FILE:ringflow-data> ${PROJECT_SOURCE_DIR}/jobs ${case})
  set_tests_properties(${name} PROPERTIES TIMEOUT 240 PROCESSORS 2 SKIP_RETURN_CODE 77
                                          RESOURCE_LOCK rf_slurm ENVIRONMENT "${RF_MPI_ENV}"
                                          LABELS jobs)
endforeach()
