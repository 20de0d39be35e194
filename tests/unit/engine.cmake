# The engine's unit tests: tensor, graph, ops, autodiff, runtime, optimizers.
set(RF_ENGINE_TEST_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/tensor_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/graph_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/ops_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/gradient_check_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/executor_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/optimizer_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/conv2d_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/max_pool_test.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/mlp_learns_test.cpp)
rf_add_unit_test(engine_tests SOURCES ${RF_ENGINE_TEST_SOURCES} LIBS ringflow::runtime)
