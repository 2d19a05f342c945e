// bayesagg._C: the Python bindings of the library (the only translation unit that sees Python).
//
// The public API is the pure-Python layer in python/bayesagg/__init__.py; this module exposes the
// building blocks it wraps. Conventions:
// - every call that computes runs with the GIL released and under a torch::PyWarningHandler, so
//   that TORCH_WARN of the calling thread arrives as a Python `UserWarning` (warnings raised on
//   the library's own worker threads go to stderr, as in C++);
// - options arrive as (keyword, text) pairs and go through the training-settings registry
//   (train/options.h `apply_setting`), so a new registry setting is a new keyword argument
//   without code here; a bad value raises ValueError naming the keyword, an unknown keyword
//   TypeError;
// - every other library error (c10::Error) is a RuntimeError carrying the library's message.
// A BayesAggOptions field without a registry setting needs a line in `apply_direct` (and its
// keyword in `accepted_keywords`); a registry setting whose help starts with `BayesAgg-MTL:`
// needs nothing.

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/core/losses.h"
#include "bayesagg/core/runtime.h"
#include "bayesagg/data/embedded.h"
#include "bayesagg/io/problem.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/models/model.h"
#include "bayesagg/train/checkpoint.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/records.h"
#include "bayesagg/train/trainer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace bayesagg::python {
namespace {

// ------------------------------------------------------------------ errors and warnings

/// Raised (as a C++ exception) for a bad argument; becomes ValueError.
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The message of a library error without LibTorch's C++ backtrace.
std::string message_of(const c10::Error& e) { return e.msg(); }

/// Runs `f` with TORCH_WARN routed to Python warnings (the handler flushes them when it goes out
/// of scope, with the GIL held) and c10::Error translated: ArgumentError -> ValueError,
/// c10::Error -> RuntimeError. The GIL is released around `f` when `release_gil`.
template <typename F>
auto guarded(F&& f, bool release_gil = true) -> decltype(f()) {
  try {
    torch::PyWarningHandler warnings;
    try {
      if (release_gil) {
        py::gil_scoped_release no_gil;
        return f();
      }
      return f();
    } catch (const ArgumentError& e) {
      warnings.set_in_exception();
      throw py::value_error(e.what());
    } catch (const c10::Error& e) {
      warnings.set_in_exception();
      throw std::runtime_error(message_of(e));
    } catch (...) {
      warnings.set_in_exception();
      throw;
    }
  } catch (python_error& e) {
    // A warning turned into an error (warnings.simplefilter("error")): re-raise it as is.
    e.restore();
    throw py::error_already_set();
  }
}

/// `--gamma-reg` -> `gamma_reg` in a library message, so that it names the keyword argument.
std::string pythonize(std::string text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 2, "--") == 0 && i + 2 < text.size() &&
        std::islower(static_cast<unsigned char>(text[i + 2]))) {
      i += 2;
      while (i < text.size() &&
             (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '-')) {
        out += text[i] == '-' ? '_' : text[i];
        ++i;
      }
    } else {
      out += text[i++];
    }
  }
  return out;
}

std::string dashed(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

std::string underscored(std::string key) {
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// ------------------------------------------------------------------ settings

/// (keyword, value as text) pairs from the Python layer.
using Settings = std::vector<std::pair<std::string, std::string>>;

/// Registry settings the trainer reads and a method does not (the rest configure methods).
const std::set<std::string>& trainer_only_keys() {
  static const std::set<std::string> keys = {"benchmark",
                                             "method",
                                             "stl-task",
                                             "epochs",
                                             "batch-size",
                                             "data-seed",
                                             "threads",
                                             "device",
                                             "train-subset",
                                             "data-dir",
                                             "split-dir",
                                             "val-size",
                                             "test-size",
                                             "image-size",
                                             "crop-size",
                                             "pretrained",
                                             "prefetch",
                                             "out",
                                             "stl-baseline",
                                             "lr",
                                             "lr-schedule",
                                             "head-clip",
                                             "trunk-clip",
                                             "eval-regression",
                                             "trunk-clip-after-warmup",
                                             "trunk",
                                             "representation-dim",
                                             "progress",
                                             "overwrite",
                                             "seed"};
  return keys;
}

/// Whether a registry setting configures BayesAgg-MTL itself (its help starts with
/// `BayesAgg-MTL:`; the LS warm-up is the trainer's protocol, not the aggregator's).
bool is_bayesagg_key(const SettingInfo& s) {
  return s.help.rfind("BayesAgg-MTL:", 0) == 0 && s.key != "ls-epochs";
}

/// BayesAggOptions fields without a registry setting (library-only knobs).
bool apply_direct(BayesAggOptions& b, const std::string& key, const std::string& v) {
  const auto as_int = [&]() {
    size_t used = 0;
    int64_t x = 0;
    try {
      x = std::stoll(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    TORCH_CHECK(!v.empty() && used == v.size(), "--", key, ": expected an integer, got '", v, "'");
    return x;
  };
  if (key == "antithetic") {
    TORCH_CHECK(v == "true" || v == "false", "--antithetic: expected true or false, got '", v, "'");
    b.antithetic(v == "true");
  } else if (key == "mc-chunk") {
    b.mc_chunk(as_int());
  } else if (key == "chunk-rows") {
    b.chunk_rows(as_int());
  } else {
    return false;
  }
  return true;
}

/// Which keywords a caller accepts.
enum class Scope { bayesagg, method, train };

/// The keyword arguments a scope accepts (underscored), in registry order.
std::vector<std::string> accepted_keywords(Scope scope) {
  std::vector<std::string> out;
  for (const auto& s : train_settings()) {
    const bool ok =
        scope == Scope::train ||
        (scope == Scope::bayesagg ? is_bayesagg_key(s) : trainer_only_keys().count(s.key) == 0);
    if (ok) out.push_back(underscored(s.key));
  }
  if (scope != Scope::train) {
    for (const char* k : {"antithetic", "mc_chunk", "chunk_rows", "seed"}) out.push_back(k);
  }
  return out;
}

/// Applies `settings` to `o` in registry order (so `gamma` comes before `gamma_reg`), checking
/// each value as it is applied: a bad one raises ArgumentError naming its keyword. `seed` is
/// returned, not applied (its meaning depends on the caller). `what` names the caller.
std::optional<uint64_t> apply_settings(TrainOptions& o, const Settings& settings, Scope scope,
                                       const std::string& what) {
  std::map<std::string, std::string> given;
  const std::vector<std::string> accepted = accepted_keywords(scope);
  for (const auto& [kw, value] : settings) {
    if (std::find(accepted.begin(), accepted.end(), kw) == accepted.end()) {
      throw py::type_error(what + " got an unexpected keyword argument '" + kw +
                           "' (accepted: " + join(accepted) + ")");
    }
    given[dashed(kw)] = value;
  }
  std::optional<uint64_t> seed;
  const auto check = [&](const std::string& key, const std::function<void()>& apply) {
    try {
      apply();
      if (scope == Scope::train) return;  // the trainer validates everything at once
      o.bayesagg().validate();
      if (scope == Scope::method) o.validate();
    } catch (const c10::Error& e) {
      throw ArgumentError(what + ": invalid " + underscored(key) + "=" + given.at(key) + ": " +
                          pythonize(message_of(e)));
    }
  };
  if (scope != Scope::train) {
    if (const auto it = given.find("seed"); it != given.end()) {
      check("seed", [&]() {
        TrainOptions scratch;
        apply_setting(scratch, "seed", it->second);
        seed = scratch.seed();
      });
    }
  }
  for (const auto& s : train_settings()) {
    const auto it = given.find(s.key);
    if (it == given.end() || (scope != Scope::train && s.key == "seed")) continue;
    check(s.key, [&]() { apply_setting(o, s.key, it->second); });
  }
  for (const char* key : {"antithetic", "mc-chunk", "chunk-rows"}) {
    const auto it = given.find(key);
    if (it != given.end()) check(key, [&]() { apply_direct(o.bayesagg(), key, it->second); });
  }
  if (scope == Scope::train) {
    try {
      o.validate();
    } catch (const c10::Error& e) {
      throw ArgumentError(what + ": " + pythonize(message_of(e)));
    }
  }
  return seed;
}

// ------------------------------------------------------------------ tensors and archives

std::vector<Head> to_heads(const std::vector<std::pair<at::Tensor, at::Tensor>>& pairs) {
  std::vector<Head> heads;
  heads.reserve(pairs.size());
  for (const auto& [w, b] : pairs) heads.push_back(Head{w, b});
  return heads;
}

template <typename T>
std::string save_string(const T& object) {
  torch::serialize::OutputArchive archive;
  object.save(archive);
  std::ostringstream os;
  archive.save_to(os);
  return os.str();
}

template <typename T>
void load_bytes(T& object, const std::string& data) {
  std::istringstream is(data);
  torch::serialize::InputArchive archive;
  archive.load_from(is);
  object.load(archive);
}

py::dict stats_dict(const BayesAggStats& s) {
  py::dict d;
  d["steps"] = s.steps;
  d["full_posteriors"] = s.full_posteriors;
  d["jitter_events"] = s.jitter_events;
  d["max_jitter"] = s.max_jitter;
  d["full_data_shift"] = s.full_data_shift;
  d["head_norm"] = s.head_norm;
  d["batch_shift"] = s.batch_shift;
  d["dL_dh_norm"] = s.dL_dh_norm;
  d["ls_cosine"] = s.ls_cosine;
  return d;
}

std::string need_name(Need n) {
  switch (n) {
    case Need::losses:
      return "losses";
    case Need::shared_grads:
      return "shared_grads";
    case Need::representation_grads:
      return "representation_grads";
    case Need::features_and_labels:
      return "features_and_labels";
    case Need::losses_after_step:
      return "losses_after_step";
  }
  return "?";
}

// ------------------------------------------------------------------ bound objects

/// A method of `make_method` with the epoch/step counters the trainer would keep.
struct PyMethod {
  std::unique_ptr<Method> method;
  int64_t epoch = 0;
  int64_t step = 0;
  bool started = false;

  void start() {
    if (!started) method->on_epoch_start(epoch);
    started = true;
  }
};

BayesAggOptions bayesagg_options(const Settings& settings) {
  TrainOptions o;
  const auto seed = apply_settings(o, settings, Scope::bayesagg, "BayesAgg()");
  // The `bayesagg` preset (the project's variant) for every option not given explicitly.
  BayesAggOptions b = o.method("bayesagg").with_method_preset().bayesagg();
  if (seed) b.seed(*seed);
  return b;
}

}  // namespace
}  // namespace bayesagg::python

PYBIND11_MODULE(_C, m) {
  using namespace bayesagg;
  using namespace bayesagg::python;
  m.doc() = "bayesagg's C++ core (use the `bayesagg` package, not this module).";

  // ---------------------------------------------------------------- task groups
  py::class_<TaskGroup>(m, "TaskGroup", R"(One group of tasks sharing one linear head.

Args:
    type: ``"regression"`` (o real outputs, squared error), ``"binary"`` (o binary tasks,
        BCE with logits) or ``"multiclass"`` (one task with K classes, cross-entropy).
    outputs: outputs, binary tasks or classes; the head is ``nn.Linear(dim, outputs)``.
    name: optional name used in messages.)")
      .def(py::init([](const std::string& type, int64_t outputs, const std::string& name) {
             return guarded(
                 [&]() {
                   GroupType t;
                   try {
                     t = parse_group_type(type);
                   } catch (const c10::Error& e) {
                     throw ArgumentError("TaskGroup(): type: " + message_of(e));
                   }
                   try {
                     return TaskGroup(t, outputs, name);
                   } catch (const c10::Error& e) {
                     throw ArgumentError("TaskGroup(): outputs: " + message_of(e));
                   }
                 },
                 false);
           }),
           py::arg("type"), py::arg("outputs"), py::arg("name") = "")
      .def_property_readonly("type", [](const TaskGroup& g) { return to_string(g.type); })
      .def_readonly("outputs", &TaskGroup::outputs)
      .def_readonly("name", &TaskGroup::name)
      .def_property_readonly("num_tasks", &TaskGroup::num_tasks,
                             "Tasks the group contributes: outputs, or 1 for multiclass.")
      .def_property_readonly("head_rows", &TaskGroup::head_rows,
                             "Rows of the group's head (its nn.Linear's out_features).")
      .def_property_readonly("is_classification", &TaskGroup::is_classification)
      .def("__str__", &TaskGroup::str)
      .def("__repr__",
           [](const TaskGroup& g) {
             return "TaskGroup('" + to_string(g.type) + "', " + std::to_string(g.outputs) +
                    (g.name.empty() ? "" : ", name='" + g.name + "'") + ")";
           })
      .def("__eq__",
           [](const TaskGroup& a, const TaskGroup& b) {
             return a.type == b.type && a.outputs == b.outputs && a.name == b.name;
           })
      .def(py::pickle(
          [](const TaskGroup& g) { return py::make_tuple(to_string(g.type), g.outputs, g.name); },
          [](const py::tuple& t) {
            return TaskGroup(parse_group_type(t[0].cast<std::string>()), t[1].cast<int64_t>(),
                             t[2].cast<std::string>());
          }));

  m.def(
      "parse_groups",
      [](const std::string& spec) {
        return guarded(
            [&]() {
              try {
                return parse_groups(spec);
              } catch (const c10::Error& e) {
                throw ArgumentError("parse_groups(): groups: " + message_of(e));
              }
            },
            false);
      },
      py::arg("spec"));

  m.def(
      "task_losses",
      [](const TaskGroup& group, const at::Tensor& output, const at::Tensor& labels) {
        return guarded([&]() { return task_losses(group, output, labels); });
      },
      py::arg("group"), py::arg("output"), py::arg("labels"));

  // ---------------------------------------------------------------- settings registry
  m.def("settings", []() {
    std::vector<std::tuple<std::string, std::string, std::string>> out;
    for (const auto& s : train_settings())
      out.emplace_back(underscored(s.key), s.value_name, s.help);
    return out;
  });
  m.def("accepted_keywords", [](const std::string& scope) {
    if (scope == "bayesagg") return accepted_keywords(Scope::bayesagg);
    if (scope == "method") return accepted_keywords(Scope::method);
    return accepted_keywords(Scope::train);
  });
  m.def("bayesagg_options_repr", [](const Settings& settings) {
    return guarded(
        [&]() {
          std::ostringstream os;
          os << bayesagg_options(settings);
          return os.str();
        },
        false);
  });

  // ---------------------------------------------------------------- BayesAgg
  py::class_<BayesAgg>(m, "_BayesAgg")
      .def(
          py::init([](const std::vector<TaskGroup>& groups, int64_t dim, const Settings& settings) {
            return guarded(
                [&]() {
                  if (groups.empty()) throw ArgumentError("BayesAgg(): groups: no task groups");
                  if (dim < 1) {
                    throw ArgumentError("BayesAgg(): dim must be >= 1, got " + std::to_string(dim));
                  }
                  return std::make_unique<BayesAgg>(groups, dim, bayesagg_options(settings));
                },
                false);
          }),
          py::arg("groups"), py::arg("dim"), py::arg("settings"))
      .def_property_readonly("groups", &BayesAgg::groups)
      .def_property_readonly("dim", &BayesAgg::dim)
      .def("options_repr",
           [](const BayesAgg& a) {
             std::ostringstream os;
             os << a.options();
             return os.str();
           })
      .def_property_readonly("stats", [](const BayesAgg& a) { return stats_dict(a.stats()); })
      .def(
          "reserve", [](BayesAgg& a, int64_t n) { guarded([&]() { a.reserve(n); }); }, py::arg("n"))
      .def(
          "observe",
          [](BayesAgg& a, const at::Tensor& features, const Labels& labels) {
            guarded([&]() { a.observe(features, labels); });
          },
          py::arg("features"), py::arg("labels"))
      .def("end_epoch", [](BayesAgg& a) { guarded([&]() { a.end_epoch(); }); })
      .def(
          "backward",
          [](BayesAgg& a, const at::Tensor& losses,
             const std::vector<std::pair<at::Tensor, at::Tensor>>& heads,
             const at::Tensor& representation, const Labels& labels) {
            return guarded(
                [&]() { return a.backward(losses, to_heads(heads), representation, labels); });
          },
          py::arg("losses"), py::arg("heads"), py::arg("representation"), py::arg("labels"))
      .def("full_data_posterior_means",
           [](const BayesAgg& a) {
             std::vector<at::Tensor> out;
             for (const auto& p : a.current_full_data_posteriors()) out.push_back(p.mean);
             return out;
           })
      .def("save",
           [](const BayesAgg& a) { return py::bytes(guarded([&]() { return save_string(a); })); })
      .def(
          "load",
          [](BayesAgg& a, const std::string& data) { guarded([&]() { load_bytes(a, data); }); },
          py::arg("data"));

  // ---------------------------------------------------------------- methods
  m.def("method_names", &method_names);
  py::class_<PyMethod>(m, "_Method")
      .def(py::init([](const std::string& name, const std::vector<TaskGroup>& groups, int64_t dim,
                       const Settings& settings) {
             return guarded(
                 [&]() {
                   const auto names = method_names();
                   if (std::find(names.begin(), names.end(), name) == names.end()) {
                     throw ArgumentError("method(): name: unknown method '" + name +
                                         "' (known: " + join(names) + ")");
                   }
                   if (groups.empty()) throw ArgumentError("method(): groups: no task groups");
                   if (dim < 1) {
                     throw ArgumentError("method(): dim must be >= 1, got " + std::to_string(dim));
                   }
                   TrainOptions o;
                   o.method(name);
                   const auto seed = apply_settings(o, settings, Scope::method, "method()");
                   o = o.with_method_preset();  // `bayesagg` is the project's variant, as in train
                   // As `bayesagg train --seed S` derives its streams (trainer.h derive_seed).
                   const uint64_t s = seed.value_or(0);
                   MethodConfig mc;
                   mc.bayesagg = o.bayesagg();
                   mc.bayesagg.seed(derive_seed(s, 3));
                   mc.ls_epochs = o.ls_epochs();
                   mc.weighting = o.weighting();
                   mc.gradient = o.gradient();
                   mc.seed = derive_seed(s, 4);
                   auto pm = std::make_unique<PyMethod>();
                   pm->method = make_method(name, groups, dim, mc);
                   return pm;
                 },
                 false);
           }),
           py::arg("name"), py::arg("groups"), py::arg("dim"), py::arg("settings"))
      .def_property_readonly("name", [](const PyMethod& p) { return p.method->name(); })
      .def("describe", [](const PyMethod& p) { return p.method->describe(); })
      .def_property_readonly("needs",
                             [](const PyMethod& p) {
                               std::vector<std::string> out;
                               for (Need n : p.method->needs()) out.push_back(need_name(n));
                               return out;
                             })
      .def_readonly("epoch", &PyMethod::epoch)
      .def_readonly("step", &PyMethod::step)
      .def(
          "reserve", [](PyMethod& p, int64_t n) { guarded([&]() { p.method->reserve(n); }); },
          py::arg("n"))
      .def(
          "backward",
          [](PyMethod& p, const at::Tensor& losses, const std::optional<at::Tensor>& representation,
             const std::vector<std::pair<at::Tensor, at::Tensor>>& heads, const Labels& labels,
             const std::vector<at::Tensor>& shared_parameters) {
            guarded([&]() {
              p.start();
              Step step;
              step.losses = losses;
              step.representation = representation.value_or(at::Tensor());
              step.heads = to_heads(heads);
              step.labels = labels;
              step.shared_parameters = shared_parameters;
              step.epoch = p.epoch;
              step.step = p.step;
              p.method->backward(step);
              ++p.step;
            });
          },
          py::arg("losses"), py::arg("representation").none(true), py::arg("heads"),
          py::arg("labels"), py::arg("shared_parameters"))
      .def(
          "after_step",
          [](PyMethod& p, const at::Tensor& losses) {
            guarded([&]() { p.method->after_step(losses); });
          },
          py::arg("losses"))
      .def("end_epoch",
           [](PyMethod& p) {
             guarded([&]() {
               p.start();
               p.method->on_epoch_end(p.epoch);
               ++p.epoch;
               p.step = 0;
               p.started = false;
             });
           })
      .def("diagnostics", [](const PyMethod& p) { return p.method->diagnostics(); })
      .def("save",
           [](const PyMethod& p) {
             struct Saver {
               const PyMethod& p;
               void save(torch::serialize::OutputArchive& a) const {
                 p.method->save(a);
                 a.write("_py_epoch", at::tensor({p.epoch}, at::kLong));
                 a.write("_py_step", at::tensor({p.step}, at::kLong));
               }
             };
             return py::bytes(guarded([&]() { return save_string(Saver{p}); }));
           })
      .def(
          "load",
          [](PyMethod& p, const std::string& data) {
            guarded([&]() {
              struct Loader {
                PyMethod& p;
                void load(torch::serialize::InputArchive& a) {
                  p.method->load(a);
                  at::Tensor e, s;
                  a.read("_py_epoch", e);
                  a.read("_py_step", s);
                  p.epoch = e.item<int64_t>();
                  p.step = s.item<int64_t>();
                  p.started = false;
                }
              } loader{p};
              load_bytes(loader, data);
            });
          },
          py::arg("data"));

  // ---------------------------------------------------------------- aggregate, train
  m.def(
      "aggregate",
      [](const std::string& problem_json, int64_t mc_samples, const std::string& moments,
         const std::string& multiclass_moments, int64_t rb_samples, uint64_t seed) {
        return guarded([&]() {
          const auto estimator = [](const std::string& arg, const std::string& v,
                                    std::initializer_list<const char*> ok) {
            for (const char* k : ok) {
              if (v == k) return parse_moment_estimator(v);
            }
            throw ArgumentError("aggregate(): " + arg + " must be " +
                                join(std::vector<std::string>(ok.begin(), ok.end())) + ", got '" +
                                v + "'");
          };
          if (mc_samples < 0) {
            throw ArgumentError(
                "aggregate(): mc_samples must be >= 2 (or None for the "
                "problem's), got " +
                std::to_string(mc_samples));
          }
          if (rb_samples < 0) {
            throw ArgumentError(
                "aggregate(): rb_samples must be >= 2 (or None for the "
                "library's), got " +
                std::to_string(rb_samples));
          }
          const MomentEstimator binary = estimator("moments", moments, {"mc", "exact"});
          const MomentEstimator multiclass =
              estimator("multiclass_moments", multiclass_moments, {"mc", "rb"});
          Problem problem;
          try {
            problem = parse_problem(problem_json);
          } catch (const c10::Error& e) {
            throw ArgumentError("aggregate(): problem: " + message_of(e));
          }
          BayesAggOptions options = options_for(problem);
          if (mc_samples > 0) options.mc_samples(mc_samples);
          options.binary_moments(binary).multiclass_moments(multiclass).seed(seed);
          if (rb_samples > 0) options.rb_samples(rb_samples);
          try {
            options.validate();
          } catch (const c10::Error& e) {
            throw ArgumentError("aggregate(): " + message_of(e));
          }
          return solution_json(problem, solve_problem(problem, options));
        });
      },
      py::arg("problem_json"), py::arg("mc_samples"), py::arg("moments"),
      py::arg("multiclass_moments"), py::arg("rb_samples"), py::arg("seed"));

  m.def(
      "train",
      [](const Settings& settings, bool verbose) {
        return guarded([&]() {
          TrainOptions o;
          apply_settings(o, settings, Scope::train, "train()");
          Trainer trainer(o);
          if (verbose) trainer.set_log(&std::cout);
          const TrainSummary s = trainer.run();
          std::cout.flush();
          return summary_to_json(s);
        });
      },
      py::arg("settings"), py::arg("verbose"));

  m.def("retain_freed_memory", &retain_freed_memory);
  m.def("derive_seed", &derive_seed, py::arg("seed"), py::arg("stream"));

  // ---------------------------------------------------------------- the trainer's parts (tests)
  // The CLI's model and embedded data, so that a step driven from Python can be compared with
  // the trainer's (tests/python/test_trainer_step.py). Not part of the public API.
  py::class_<MultiTaskModel>(m, "_Model")
      .def(
          py::init([](const std::vector<int64_t>& input_shape, const std::vector<TaskGroup>& groups,
                      const std::string& trunk, int64_t representation_dim, uint64_t seed) {
            return guarded(
                [&]() {
                  return std::make_unique<MultiTaskModel>(
                      input_shape, groups,
                      ModelOptions()
                          .trunk(trunk)
                          .representation_dim(representation_dim)
                          .seed(seed));
                },
                false);
          }),
          py::arg("input_shape"), py::arg("groups"), py::arg("trunk"),
          py::arg("representation_dim"), py::arg("seed"))
      .def("representation",
           [](const MultiTaskModel& model, const at::Tensor& x) {
             return guarded([&]() { return model.representation(x); });
           })
      .def("head_outputs",
           [](const MultiTaskModel& model, const at::Tensor& h) {
             return guarded([&]() { return model.head_outputs(h); });
           })
      .def("heads",
           [](const MultiTaskModel& model) {
             std::vector<std::pair<at::Tensor, at::Tensor>> out;
             for (const auto& h : model.heads()) out.emplace_back(h.weight, h.bias);
             return out;
           })
      .def("trunk_parameters", &MultiTaskModel::trunk_parameters)
      .def("head_parameters", &MultiTaskModel::head_parameters)
      .def("load", [](MultiTaskModel& model, const std::string& path) {
        guarded([&]() { load_model(path, model); });
      });
  m.def(
      "_embedded_train_split",
      [](const std::string& name, uint64_t data_seed, int64_t train_subset) {
        return guarded([&]() {
          const Benchmark b =
              make_benchmark(name, EmbeddedOptions().seed(data_seed).train_subset(train_subset));
          return std::make_tuple(b.train.inputs, b.train.labels, b.groups, b.input_shape());
        });
      },
      py::arg("name"), py::arg("data_seed"), py::arg("train_subset"));
}
