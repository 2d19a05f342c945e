#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "bayesagg/core/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  bayesagg::retain_freed_memory();
  at::set_num_threads(2);
  return RUN_ALL_TESTS();
}
