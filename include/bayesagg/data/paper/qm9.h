#pragma once
/// QM9 (spec: benchmarks.md, "Paper benchmarks"): 130 831 small molecules (133 885 minus the
/// 3 054 of uncharacterized.txt) with 11 regression targets, as graphs for an MPNN.
///
/// Files (`data_dir`, or `data_dir/raw` as PyTorch Geometric lays them out, or `data_dir/qm9`):
/// - `gdb9.sdf`: V2000 mol blocks `gdb_1` ... `gdb_133885` separated by `$$$$`, explicit
///   hydrogens, 3-D coordinates (Å);
/// - `gdb9.sdf.csv`: header `mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,
///   u0_atom,u298_atom,h298_atom,g298_atom`, one row per molecule in the SDF's order;
/// - `uncharacterized.txt`: 9 header lines, one line per excluded molecule starting with its
///   1-based index, closing line(s).
///
/// Chemistry: the atom and bond blocks are read and checked by bayesagg (every error names the
/// file and line); RDKit (Debian's librdkit-dev) perceives aromaticity and hybridisation on the
/// molecule as written, without the valence check that makes full sanitisation fail on about
/// 1 400 QM9 molecules: property cache computed non-strictly, then RDKit's sanitisation steps
/// SYMMRINGS | KEKULIZE | SETAROMATICITY | SETCONJUGATION | SETHYBRIDIZATION.
///
/// Node features (11, in this order): one-hot H, C, N, O, F; atomic number; aromatic (0/1);
/// sp, sp2, sp3 (0/1, RDKit's hybridisation; H atoms have none); number of hydrogen neighbours.
/// Edges: the complete directed graph without self-loops, edge (i -> j) for every ordered pair
/// i != j, ordered by i then j within a molecule; edge features (5): bond-type one-hot single,
/// double, triple, aromatic (RDKit's bond types after aromaticity perception; zeros for unbonded
/// pairs), then the distance |pos_i - pos_j| in Å.
///
/// Targets (11, in this order, spec units): μ (D), α (a0³), ε_HOMO, ε_LUMO (eV = Hartree ×
/// 27.211386), ⟨R²⟩ (a0²), ZPVE (eV), U0, U, H, G (atomisation energies: the `*_atom` columns,
/// kcal/mol × 0.0433641 = eV), c_v (cal/(mol K)). MAE is reported in meV for ε_HOMO, ε_LUMO,
/// ZPVE, U0, U, H, G (`qm9_report_scale()`).

#include "bayesagg/core/task_group.h"
#include "bayesagg/data/dataset.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace bayesagg {

constexpr double kHartreeToEv = 27.211386;
constexpr double kKcalPerMolToEv = 0.0433641;
constexpr int64_t kQM9NodeFeatures = 11;
constexpr int64_t kQM9EdgeFeatures = 5;
constexpr int64_t kQM9Targets = 11;

struct QM9Options {
  /// Folder of gdb9.sdf, gdb9.sdf.csv and uncharacterized.txt (or its `raw/` or `qm9/`).
  TORCH_ARG(std::string, data_dir) = "";
  /// Split seed.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Validation molecules (after the test ones in the shuffled order).
  TORCH_ARG(int64_t, val_size) = 10000;
  /// Test molecules (the first of the shuffled order).
  TORCH_ARG(int64_t, test_size) = 10000;
  /// Folder of the parsed-molecule cache; empty = `cache::default_cache_dir()`.
  TORCH_ARG(std::string, cache_dir) = "";
  /// false: parse the files every time, no cache file.
  TORCH_ARG(bool, use_cache) = true;

 public:
  void validate() const;
};

std::ostream& operator<<(std::ostream& os, const QM9Options& o);

/// mu, alpha, homo, lumo, r2, zpve, u0, u298, h298, g298, cv.
const std::vector<std::string>& qm9_task_names();
/// Units of the targets as stored: D, a0^3, eV, eV, a0^2, eV, eV, eV, eV, eV, cal/(mol K).
const std::vector<std::string>& qm9_units();
/// Factor from the stored units to the reported ones ([11] float64: 1000 for the eV targets,
/// 1 otherwise).
at::Tensor qm9_report_scale();
/// Reported units: D, a0^3, meV, meV, a0^2, meV, meV, meV, meV, meV, cal/(mol K).
const std::vector<std::string>& qm9_report_units();

/// The three files.
struct QM9Files {
  std::string sdf, csv, uncharacterized;
};
/// Finds the files in `data_dir`, `data_dir/raw` or `data_dir/qm9` (the first folder holding
/// gdb9.sdf); throws saying what is missing.
QM9Files find_qm9_files(const std::string& data_dir);

/// The 1-based indices listed in an uncharacterized.txt (`text` its content, `path` for
/// messages): the first 9 lines are a header; then each line's first field is an index, until
/// the closing line(s), which do not start with a number. Throws naming the file and line for a
/// number line after the closing lines, an index <= 0, or a repeated index.
std::vector<int64_t> parse_qm9_uncharacterized(const std::string& text, const std::string& path);

/// The parsed molecules, kept compact (graphs are built per batch).
struct QM9Molecules {
  /// [M] int64: each molecule's 1-based index in gdb9.sdf (its `gdb_K` number).
  at::Tensor gdb_index;
  /// [M + 1] int64: molecule m's atoms are rows atom_offsets[m] .. atom_offsets[m+1]-1.
  at::Tensor atom_offsets;
  /// [ΣN, 11] float32 node features (see the file comment).
  at::Tensor node_features;
  /// [ΣN, 3] float32 coordinates, Å.
  at::Tensor positions;
  /// [M + 1] int64: molecule m's bonds are rows bond_offsets[m] .. bond_offsets[m+1]-1.
  at::Tensor bond_offsets;
  /// [ΣB, 2] int64: the two atoms of each bond, 0-based within the molecule, in file order.
  at::Tensor bonds;
  /// [ΣB] int64: 0 single, 1 double, 2 triple, 3 aromatic (after aromaticity perception).
  at::Tensor bond_types;
  /// [M, 11] float64 targets in the stored units (see `qm9_units`).
  at::Tensor targets;

  int64_t size() const { return gdb_index.defined() ? gdb_index.size(0) : 0; }
};

/// Parses the three files' contents (`files` gives the paths used in messages). Molecules listed
/// in uncharacterized.txt are dropped. Every SDF block is checked (title, counts line, atom and
/// bond lines, `M  END`); included ones go through RDKit (in parallel). Throws naming the file
/// and line for: a counts line that is not V2000 or whose atom count disagrees with the atom
/// lines (or bond count with the bond lines), an element other than H, C, N, O, F, a bond to a
/// missing atom or of an unknown type, a block without `M  END`; a CSV header other than the
/// expected one, a row with the wrong column count, a field that is not a number (or, in the 11
/// columns the targets come from, not a finite one: A, B, C, gap, u0, ... may be inf or nan), a
/// row whose mol_id is not the SDF block's title; and for SDF and CSV disagreeing on the number of
/// molecules, or an excluded index beyond them. `notes` (optional) get a summary line.
QM9Molecules parse_qm9(const std::string& sdf_text, const std::string& csv_text,
                       const std::string& uncharacterized_text, const QM9Files& files,
                       std::vector<std::string>* notes = nullptr);

/// Reads the files of `options.data_dir()` and parses them, through a cache of the parsed
/// molecules (key: checksums of the three files' contents and the parser version) unless
/// `options.use_cache()` is false.
QM9Molecules load_qm9(const QM9Options& options, std::vector<std::string>* notes = nullptr);

/// A batch of molecular graphs (B graphs, ΣN nodes, ΣE = Σ N(N-1) edges).
struct GraphBatch {
  /// [ΣN, 11] float32.
  at::Tensor node_features;
  /// [2, ΣE] int64: row 0 the source node i, row 1 the target node j of edge (i -> j), indices
  /// into the batch's nodes (messages flow source -> target, aggregated at the target).
  at::Tensor edge_index;
  /// [ΣE, 5] float32.
  at::Tensor edge_features;
  /// [ΣN] int64: the graph (0..B-1) each node belongs to, non-decreasing.
  at::Tensor graph_index;
  /// [B] int64: nodes per graph.
  at::Tensor num_nodes;
  /// [ΣN, 3] float32 coordinates (Å), for models that want them.
  at::Tensor positions;
  /// B.
  int64_t num_graphs = 0;
  /// One tensor (group regression:11): [B, 11] float32 standardised targets.
  Labels labels;
};

/// The graphs of molecules `rows` ([B] int64 positions in `molecules`), without labels.
GraphBatch build_graph_batch(const QM9Molecules& molecules, const at::Tensor& rows);

/// One split: shared molecules, which of them, and their (standardised) labels.
class QM9Dataset {
 public:
  QM9Dataset() = default;
  /// `index` [N] int64 rows of `molecules`; `labels` [N, 11] float32.
  QM9Dataset(std::shared_ptr<const QM9Molecules> molecules, at::Tensor index, at::Tensor labels);

  int64_t size() const { return index_.defined() ? index_.size(0) : 0; }
  /// The items at `indices` ([B] int64 in [0, N)) as a graph batch with labels.
  GraphBatch batch(const at::Tensor& indices) const;
  /// [N] int64 rows of `molecules()`.
  const at::Tensor& index() const { return index_; }
  const QM9Molecules& molecules() const { return *molecules_; }
  /// One tensor, [N, 11] float32 standardised targets.
  Labels labels;

 private:
  std::shared_ptr<const QM9Molecules> molecules_;
  at::Tensor index_;
};

/// qm9: one group regression:11 ("targets"), three splits, the targets' standardisation.
struct QM9Benchmark {
  std::string name = "qm9";
  std::vector<TaskGroup> groups;
  std::vector<std::string> task_names;
  QM9Dataset train, val, test;
  /// One entry: mean and std [11] float64 of the training targets (stored units).
  std::vector<TargetScaling> target_scaling;
  uint64_t seed = 0;
  std::vector<std::string> notes;

  int64_t num_tasks() const { return total_tasks(groups); }
  /// Predictions or labels [B, 11] back in the stored units.
  at::Tensor to_original(size_t group, const at::Tensor& values) const;
  /// Checks groups, names, scaling and the splits' labels; throws naming the bad part.
  void validate() const;
};

std::ostream& operator<<(std::ostream& os, const QM9Benchmark& b);

/// The split and standardisation of parsed molecules: p = randperm(M, generator seeded with
/// `seed`); test = p[0, test_size), validation = p[test_size, test_size + val_size), train = the
/// rest, each sorted ascending. Labels = (targets - mean) / std with the mean and population std
/// (unbiased = false) of the training targets; a target constant over train gets std 1 (noted).
QM9Benchmark build_qm9_benchmark(std::shared_ptr<const QM9Molecules> molecules,
                                 const QM9Options& options);

/// `load_qm9` then `build_qm9_benchmark`.
QM9Benchmark make_qm9_benchmark(const QM9Options& options);

}  // namespace bayesagg
