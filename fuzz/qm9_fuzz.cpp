// libFuzzer target (BAYESAGG_WITH_QM9): the QM9 readers on arbitrary contents of gdb9.sdf,
// gdb9.sdf.csv and uncharacterized.txt. The input is the three files separated by the line
// "@@@@" (missing parts are empty). Errors must be c10::Error with a bounded message; accepted
// molecules must be consistent (offsets, bond atoms in range, finite targets).
#include "bayesagg/data/paper/qm9.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

void check_molecules(const bayesagg::QM9Molecules& m) {
  const int64_t n = m.size();
  if (n == 0) return;
  if (m.atom_offsets.size(0) != n + 1 || m.bond_offsets.size(0) != n + 1) std::abort();
  if (m.targets.size(0) != n || m.targets.size(1) != bayesagg::kQM9Targets) std::abort();
  if (!at::isfinite(m.targets).all().item<bool>()) std::abort();
  const at::Tensor ao_t = m.atom_offsets.contiguous(), bo_t = m.bond_offsets.contiguous(),
                   b_t = m.bonds.contiguous();
  const auto* ao = ao_t.data_ptr<int64_t>();
  const auto* bo = bo_t.data_ptr<int64_t>();
  const auto* b = b_t.data_ptr<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t atoms = ao[k + 1] - ao[k];
    if (atoms < 1 || bo[k + 1] < bo[k]) std::abort();
    for (int64_t r = bo[k]; r < bo[k + 1]; ++r) {
      if (b[2 * r] < 0 || b[2 * r] >= atoms || b[2 * r + 1] < 0 || b[2 * r + 1] >= atoms) {
        std::abort();
      }
    }
  }
  // The graphs of the first few molecules build (what training does with them).
  bayesagg::build_graph_batch(m, at::arange(std::min<int64_t>(n, 4), at::kLong));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  at::set_num_threads(1);
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string parts[3];
  size_t start = 0;
  for (int k = 0; k < 3; ++k) {
    const size_t sep = k < 2 ? input.find("\n@@@@\n", start) : std::string::npos;
    parts[k] = input.substr(start, sep == std::string::npos ? std::string::npos : sep - start);
    if (sep == std::string::npos) break;
    start = sep + 6;
  }
  const bayesagg::QM9Files files{"gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt"};
  try {
    check_molecules(bayesagg::parse_qm9(parts[0], parts[1], parts[2], files));
  } catch (const c10::Error& e) {
    if (std::strlen(e.what_without_backtrace()) > 4096) std::abort();
  }
  return 0;
}
