#include "bayesagg/data/paper/utkface.h"

#include "bayesagg/data/paper/cache.h"
#include "bayesagg/data/paper/image_io.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <ostream>

namespace bayesagg {
namespace {

/// Parses a non-negative decimal integer (at most 9 digits); false otherwise.
bool parse_uint(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 9) return false;
  int64_t r = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    r = r * 10 + (c - '0');
  }
  *v = r;
  return true;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<int64_t> sorted_vector(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

at::Tensor to_tensor(const std::vector<int64_t>& v) {
  return at::tensor(v, at::kLong);
}

}  // namespace

void UTKFaceOptions::validate() const {
  TORCH_CHECK(crop_size() >= 1, "utkface: crop_size must be >= 1, got ", crop_size());
  TORCH_CHECK(image_size() >= crop_size(), "utkface: image_size (", image_size(),
              ") must be >= crop_size (", crop_size(), ")");
}

std::ostream& operator<<(std::ostream& os, const UTKFaceOptions& o) {
  return os << "UTKFaceOptions(data_dir=" << o.data_dir() << ", seed=" << o.seed()
            << ", image_size=" << o.image_size() << ", crop_size=" << o.crop_size()
            << ", cache_dir=" << o.cache_dir() << ", use_cache=" << o.use_cache() << ")";
}

bool parse_utkface_name(const std::string& name, UTKFaceItem* item) {
  const std::string stem = name.substr(0, name.find('.'));
  std::vector<std::string> fields;
  size_t start = 0;
  while (true) {
    const size_t us = stem.find('_', start);
    fields.push_back(stem.substr(start, us == std::string::npos ? std::string::npos : us - start));
    if (us == std::string::npos) break;
    start = us + 1;
  }
  if (fields.size() < 3) return false;
  UTKFaceItem it;
  it.file = name;
  if (!parse_uint(fields[0], &it.age) || !parse_uint(fields[1], &it.gender) ||
      !parse_uint(fields[2], &it.race)) {
    return false;
  }
  if (it.gender > 1 || it.race > 4) return false;
  *item = it;
  return true;
}

UTKFaceScan scan_utkface(const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TORCH_CHECK(!data_dir.empty(), "utkface: no data folder given (--data-dir: the folder UTKFace/ "
                                 "of the aligned & cropped faces, or its parent)");
  UTKFaceScan scan;
  const fs::path sub = fs::path(data_dir) / "UTKFace";
  scan.dir = fs::is_directory(sub, ec) ? sub.string() : data_dir;
  TORCH_CHECK(fs::is_directory(scan.dir, ec), "utkface: folder '", data_dir,
              "' does not exist (expected the folder UTKFace/ of the aligned & cropped faces, "
              "or its parent)");
  for (const auto& entry : fs::directory_iterator(scan.dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    if (!ends_with(name, ".jpg")) {
      ++scan.ignored;
      continue;
    }
    UTKFaceItem item;
    if (parse_utkface_name(name, &item)) {
      scan.items.push_back(item);
    } else {
      scan.skipped.push_back(name);
    }
  }
  TORCH_CHECK(!ec, "utkface: cannot list '", scan.dir, "': ", ec.message());
  std::sort(scan.items.begin(), scan.items.end(),
            [](const UTKFaceItem& a, const UTKFaceItem& b) { return a.file < b.file; });
  std::sort(scan.skipped.begin(), scan.skipped.end());
  TORCH_CHECK(!scan.items.empty(), "utkface: no file named AGE_GENDER_RACE_DATETIME.jpg(.chip.jpg)"
                                   " in '",
              scan.dir, "' (", scan.skipped.size(), " .jpg files with other names)");
  return scan;
}

std::vector<int64_t> approximate_mode(const std::vector<int64_t>& class_counts, int64_t n_draws) {
  int64_t total = 0;
  for (int64_t c : class_counts) {
    TORCH_CHECK(c >= 0, "approximate_mode: negative class count ", c);
    total += c;
  }
  TORCH_CHECK(n_draws >= 0 && n_draws <= total, "approximate_mode: ", n_draws,
              " draws from ", total, " items");
  const size_t k = class_counts.size();
  std::vector<int64_t> out(k, 0);
  if (total == 0) return out;
  // As numpy computes it: class_counts / class_counts.sum() * n_draws, in float64.
  std::vector<double> remainder(k);
  int64_t need = n_draws;
  for (size_t i = 0; i < k; ++i) {
    const double continuous =
        static_cast<double>(class_counts[i]) / static_cast<double>(total) * static_cast<double>(n_draws);
    const double floored = std::floor(continuous);
    out[i] = static_cast<int64_t>(floored);
    remainder[i] = continuous - floored;
    need -= out[i];
  }
  // The largest remainders first; among equal ones the lowest class index (sklearn draws them).
  std::vector<size_t> order(k);
  for (size_t i = 0; i < k; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return remainder[a] > remainder[b]; });
  for (size_t j = 0; j < k && need > 0; ++j, --need) ++out[order[j]];
  return out;
}

StratifiedSizes stratified_split_sizes(const std::vector<int64_t>& class_counts,
                                       double test_fraction) {
  TORCH_CHECK(test_fraction > 0.0 && test_fraction < 1.0,
              "stratified_split_sizes: test_fraction must be in (0, 1), got ", test_fraction);
  int64_t n = 0;
  for (int64_t c : class_counts) n += c;
  const int64_t n_test = static_cast<int64_t>(std::ceil(test_fraction * static_cast<double>(n)));
  StratifiedSizes s;
  s.train = approximate_mode(class_counts, n - n_test);
  for (size_t i = 0; i < class_counts.size(); ++i) {
    s.test.push_back(class_counts[i] - s.train[i]);
  }
  return s;
}

UTKFaceSplit utkface_split(const at::Tensor& ages, uint64_t seed) {
  TORCH_CHECK(ages.defined() && ages.dim() == 1 && ages.scalar_type() == at::kLong,
              "utkface_split: expected ages [N] int64");
  const at::Tensor a = ages.contiguous();
  const int64_t* p = a.data_ptr<int64_t>();
  std::map<int64_t, std::vector<int64_t>> by_age;
  for (int64_t i = 0; i < a.size(0); ++i) by_age[p[i]].push_back(i);

  std::vector<int64_t> train, val, test;
  std::vector<std::vector<int64_t>> strata;  // ages seen at least 3 times, ascending
  for (const auto& [age, items] : by_age) {
    if (items.size() < 3) {
      train.insert(train.end(), items.begin(), items.end());
    } else {
      strata.push_back(items);
    }
  }
  // Draws `taken[s]` items of every stratum (by a permutation) into `out`; the rest stay.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto draw = [&gen](std::vector<std::vector<int64_t>>& pools,
                           const std::vector<int64_t>& taken, std::vector<int64_t>& out) {
    for (size_t s = 0; s < pools.size(); ++s) {
      const int64_t n = static_cast<int64_t>(pools[s].size());
      if (n == 0) continue;
      const at::Tensor perm = at::randperm(n, gen, at::kLong);
      const int64_t* q = perm.data_ptr<int64_t>();
      std::vector<int64_t> rest;
      for (int64_t k = 0; k < n; ++k) {
        (k < taken[s] ? out : rest).push_back(pools[s][static_cast<size_t>(q[k])]);
      }
      pools[s] = std::move(rest);
    }
  };
  const auto counts = [](const std::vector<std::vector<int64_t>>& pools) {
    std::vector<int64_t> c;
    for (const auto& v : pools) c.push_back(static_cast<int64_t>(v.size()));
    return c;
  };
  draw(strata, stratified_split_sizes(counts(strata), 0.2).test, test);
  draw(strata, stratified_split_sizes(counts(strata), 0.125).test, val);
  for (const auto& rest : strata) train.insert(train.end(), rest.begin(), rest.end());
  return {to_tensor(sorted_vector(train)), to_tensor(sorted_vector(val)),
          to_tensor(sorted_vector(test))};
}

ImageTransform utkface_transform(int64_t crop_size) {
  ImageTransform t;
  t.crop = crop_size;
  t.random_crop = true;
  t.random_flip = true;
  t.channels = 3;
  return t;
}

at::Tensor utkface_augment(const at::Tensor& images, bool train, at::Generator generator,
                           int64_t crop_size) {
  return utkface_transform(crop_size).apply(images, train, generator);
}

ImageBenchmark make_utkface_benchmark(const UTKFaceOptions& options) {
  namespace fs = std::filesystem;
  options.validate();
  const UTKFaceScan scan = scan_utkface(options.data_dir());
  const int64_t n = static_cast<int64_t>(scan.items.size());

  ImageBenchmark b;
  b.name = "utkface";
  b.seed = options.seed();
  b.groups = {TaskGroup(GroupType::regression, 1, "age"), TaskGroup(GroupType::multiclass, 2, "gender"),
              TaskGroup(GroupType::multiclass, 5, "race")};
  b.task_names = {"age", "gender", "race"};
  TargetScaling age_scaling;
  age_scaling.mean = at::full({1}, kUTKFaceAgeMean, at::kDouble);
  age_scaling.std = at::full({1}, kUTKFaceAgeStd, at::kDouble);
  b.target_scaling = {age_scaling, TargetScaling{}, TargetScaling{}};

  if (!scan.skipped.empty()) {
    std::string list;
    for (size_t i = 0; i < scan.skipped.size() && i < 10; ++i) {
      list += (i ? ", " : "") + scan.skipped[i];
    }
    if (scan.skipped.size() > 10) list += ", ...";
    b.notes.push_back("utkface: skipped " + std::to_string(scan.skipped.size()) +
                      " .jpg file(s) whose names lack the three labels AGE_GENDER_RACE: " + list);
  }
  if (scan.ignored > 0) {
    b.notes.push_back("utkface: ignored " + std::to_string(scan.ignored) +
                      " file(s) not ending in .jpg");
  }

  std::vector<int64_t> ages, genders, races;
  std::vector<std::string> paths, names;
  for (const auto& it : scan.items) {
    ages.push_back(it.age);
    genders.push_back(it.gender);
    races.push_back(it.race);
    paths.push_back((fs::path(scan.dir) / it.file).string());
    names.push_back(it.file);
  }
  const at::Tensor age_t = to_tensor(ages), gender_t = to_tensor(genders), race_t = to_tensor(races);

  ImageStoreOptions store;
  store.stem = "utkface";
  store.what = "utkface";
  store.cache_dir = options.cache_dir();
  store.use_cache = options.use_cache();
  store.shape = {3, options.image_size(), options.image_size()};
  store.settings_key = cache::KeyHasher()
                           .str("utkface jpeg rgb resize_center v1")
                           .i64(options.image_size())
                           .digest();
  const int64_t size = options.image_size();
  const at::Tensor images = load_image_store(
      paths, names, [size](const std::string& path) { return resize_center(read_jpeg(path, 3), size); },
      store, &b.notes);

  const UTKFaceSplit split = utkface_split(age_t, options.seed());
  const at::Tensor standardised =
      ((age_t.to(at::kDouble) - kUTKFaceAgeMean) / kUTKFaceAgeStd).to(at::kFloat).unsqueeze(1);
  const auto make = [&](const at::Tensor& idx) {
    ImageSplit s;
    s.images = images;
    s.index = idx;
    s.labels = {standardised.index_select(0, idx), gender_t.index_select(0, idx),
                race_t.index_select(0, idx)};
    const int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < idx.size(0); ++i) s.files.push_back(names[static_cast<size_t>(p[i])]);
    s.transform = utkface_transform(options.crop_size());
    return s;
  };
  b.train = make(split.train);
  b.val = make(split.val);
  b.test = make(split.test);
  TORCH_CHECK(b.train.size() > 0 && n > 0, "utkface: empty training split");
  b.validate();
  return b;
}

}  // namespace bayesagg
