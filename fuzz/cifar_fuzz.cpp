// libFuzzer target: the CIFAR-100 binary reader (cifar-mtl's train.bin / test.bin) on arbitrary
// bytes, then the benchmark built from what it accepted. Errors must be c10::Error; a file it
// accepts must hold labels in range.
#include "bayesagg/data/paper/cifar_mtl.h"

#include "fuzz_file.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  at::set_num_threads(1);
  const std::string path = bayesagg::fuzz::write_input("cifar", data, size);
  if (path.empty()) return 0;
  try {
    const bayesagg::Cifar100File f = bayesagg::read_cifar100_file(path);
    if (!(f.coarse.ge(0).all().item<bool>() && f.coarse.lt(20).all().item<bool>() &&
          f.fine.ge(0).all().item<bool>() && f.fine.lt(100).all().item<bool>())) {
      std::abort();
    }
    bayesagg::build_cifar_mtl_benchmark(f, f, bayesagg::CifarMtlOptions().val_fraction(0.5))
        .validate();
  } catch (const c10::Error&) {
  }
  return 0;
}
