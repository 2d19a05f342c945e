#include "bayesagg/data/paper/chestx14.h"

#include "bayesagg/core/files.h"
#include "bayesagg/core/text.h"
#include "bayesagg/data/paper/cache.h"
#include "bayesagg/data/paper/image_io.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <ostream>
#include <unordered_map>

#ifndef BAYESAGG_DATA_DIR
#define BAYESAGG_DATA_DIR "data"
#endif

namespace bayesagg {
namespace {

constexpr int64_t kFindings = 14;

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    fields.push_back(line.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return fields;
}

std::string expected_header() {
  std::string h = "Image Index";
  for (const auto& t : chestx14_task_names()) h += "," + t;
  return h;
}

}  // namespace

void ChestX14Options::validate() const {
  TORCH_CHECK(crop_size() >= 1, "chestx14: crop_size must be >= 1, got ", crop_size());
  TORCH_CHECK(image_size() >= crop_size(), "chestx14: image_size (", image_size(),
              ") must be >= crop_size (", crop_size(), ")");
}

std::ostream& operator<<(std::ostream& os, const ChestX14Options& o) {
  return os << "ChestX14Options(data_dir=" << o.data_dir() << ", split_dir=" << o.split_dir()
            << ", image_size=" << o.image_size() << ", crop_size=" << o.crop_size()
            << ", cache_dir=" << o.cache_dir() << ", use_cache=" << o.use_cache() << ")";
}

const std::vector<std::string>& chestx14_task_names() {
  static const std::vector<std::string> names = {
      "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
      "Effusion",    "Emphysema",    "Fibrosis",      "Hernia",
      "Infiltration", "Mass",        "Nodule",        "Pleural_Thickening",
      "Pneumonia",   "Pneumothorax"};
  return names;
}

std::string default_chestx14_split_dir() {
  if (const char* v = std::getenv("BAYESAGG_DATA_DIR"); v && *v) {
    return (std::filesystem::path(v) / "chestx14").string();
  }
  return (std::filesystem::path(BAYESAGG_DATA_DIR) / "chestx14").string();
}

ChestX14Csv read_chestx14_csv(const std::string& path) {
  std::error_code ec;
  TORCH_CHECK(std::filesystem::is_regular_file(path, ec), "chestx14: split file '", path,
              "' does not exist (pass --split-dir, a folder of train.csv, validation.csv and "
              "test.csv)");
  const std::string text = read_file(path);
  ChestX14Csv csv;
  csv.path = path;
  std::vector<float> labels;
  size_t pos = 0;
  int64_t line_no = 0;
  bool header_seen = false;
  const std::string header = expected_header();
  // Lines; a blank line is accepted only at the end of the file.
  int64_t blank_line = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {
      if (blank_line == 0) blank_line = line_no;
      continue;
    }
    TORCH_CHECK(blank_line == 0, "chestx14: '", path, "', line ", blank_line,
                ": empty line inside the file");
    if (!header_seen) {
      TORCH_CHECK(line == header, "chestx14: '", path, "', line ", line_no,
                  ": expected the header '", header, "', found '", excerpt(line), "'");
      header_seen = true;
      continue;
    }
    const std::vector<std::string> fields = split_fields(line);
    TORCH_CHECK(static_cast<int64_t>(fields.size()) == kFindings + 1, "chestx14: '", path,
                "', line ", line_no, ": ", fields.size(), " columns, expected ", kFindings + 1,
                " (image name and 14 labels)");
    TORCH_CHECK(!fields[0].empty(), "chestx14: '", path, "', line ", line_no,
                ": empty image name");
    for (int64_t k = 1; k <= kFindings; ++k) {
      const std::string& f = fields[static_cast<size_t>(k)];
      TORCH_CHECK(f == "0" || f == "1", "chestx14: '", path, "', line ", line_no, ": label '",
                  excerpt(f), "' of ", chestx14_task_names()[static_cast<size_t>(k - 1)],
                  " is not 0 or 1");
      labels.push_back(f == "1" ? 1.0f : 0.0f);
    }
    csv.images.push_back(fields[0]);
    csv.lines.push_back(line_no);
  }
  TORCH_CHECK(header_seen, "chestx14: '", path, "' is empty (expected the header '", header, "')");
  const int64_t n = static_cast<int64_t>(csv.images.size());
  csv.labels = at::tensor(labels, at::kFloat).reshape({n, kFindings});
  return csv;
}

ImageTransform chestx14_transform(int64_t crop_size) {
  ImageTransform t;
  t.crop = crop_size;
  t.random_crop = true;
  t.random_flip = true;
  t.channels = 3;
  t.mean = {0.485, 0.456, 0.406};
  t.std = {0.229, 0.224, 0.225};
  return t;
}

ImageBenchmark make_chestx14_benchmark(const ChestX14Options& options) {
  namespace fs = std::filesystem;
  options.validate();
  TORCH_CHECK(!options.data_dir().empty(),
              "chestx14: no data folder given (--data-dir: the folder holding images/)");
  std::error_code ec;
  TORCH_CHECK(fs::is_directory(options.data_dir(), ec), "chestx14: folder '", options.data_dir(),
              "' does not exist");
  const std::string split_dir =
      options.split_dir().empty() ? default_chestx14_split_dir() : options.split_dir();
  const ChestX14Csv csvs[3] = {read_chestx14_csv((fs::path(split_dir) / "train.csv").string()),
                               read_chestx14_csv((fs::path(split_dir) / "validation.csv").string()),
                               read_chestx14_csv((fs::path(split_dir) / "test.csv").string())};

  // Where the PNGs are: data_dir/images, data_dir itself, Kaggle's data_dir/images_NNN/images.
  std::vector<fs::path> folders;
  const fs::path root(options.data_dir());
  if (fs::is_directory(root / "images", ec)) folders.push_back(root / "images");
  folders.push_back(root);
  std::vector<fs::path> kaggle;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory(ec) && name.rfind("images_", 0) == 0) {
      kaggle.push_back(fs::is_directory(e.path() / "images", ec) ? e.path() / "images" : e.path());
    }
  }
  std::sort(kaggle.begin(), kaggle.end());
  folders.insert(folders.end(), kaggle.begin(), kaggle.end());
  std::unordered_map<std::string, std::string> found;
  for (const auto& folder : folders) {
    for (const auto& e : fs::directory_iterator(folder, ec)) {
      if (!e.is_regular_file(ec)) continue;
      found.emplace(e.path().filename().string(), e.path().string());
    }
  }

  std::vector<std::string> paths, names;
  std::unordered_map<std::string, std::pair<const ChestX14Csv*, int64_t>> listed;
  int64_t missing = 0;
  std::string first_missing;
  for (const auto& csv : csvs) {
    for (size_t i = 0; i < csv.images.size(); ++i) {
      const std::string& name = csv.images[i];
      const auto [it, fresh] = listed.emplace(name, std::make_pair(&csv, csv.lines[i]));
      TORCH_CHECK(fresh, "chestx14: image '", name, "' is listed twice: '", it->second.first->path,
                  "' line ", it->second.second, " and '", csv.path, "' line ", csv.lines[i]);
      const auto f = found.find(name);
      if (f == found.end()) {
        if (missing++ == 0) {
          first_missing = "'" + name + "' (listed in '" + csv.path + "' line " +
                          std::to_string(csv.lines[i]) + ")";
        }
        continue;
      }
      paths.push_back(f->second);
      names.push_back(name);
    }
  }
  if (missing > 0) {
    std::string where;
    for (const auto& f : folders) where += (where.empty() ? "'" : ", '") + f.string() + "'";
    TORCH_CHECK(false, "chestx14: image ", first_missing, " not found in ", where, "; ",
                missing, " of the ", listed.size(), " images of the split are missing");
  }

  ImageBenchmark b;
  b.name = "chestx14";
  b.groups = {TaskGroup(GroupType::binary, kFindings, "findings")};
  b.task_names = chestx14_task_names();
  b.target_scaling = {TargetScaling{}};

  ImageStoreOptions store;
  store.stem = "chestx14";
  store.what = "chestx14";
  store.cache_dir = options.cache_dir();
  store.use_cache = options.use_cache();
  store.shape = {1, options.image_size(), options.image_size()};
  store.settings_key = cache::KeyHasher()
                           .str("chestx14 png grey resize_center v1")
                           .i64(options.image_size())
                           .digest();
  const int64_t size = options.image_size();
  const at::Tensor images = load_image_store(
      paths, names,
      [size](const std::string& path) { return resize_center(read_png(path, 1), size); }, store,
      &b.notes);

  int64_t start = 0;
  ImageSplit* splits[3] = {&b.train, &b.val, &b.test};
  for (int k = 0; k < 3; ++k) {
    const int64_t n = static_cast<int64_t>(csvs[k].images.size());
    ImageSplit& s = *splits[k];
    s.images = images;
    s.index = at::arange(start, start + n, at::kLong);
    s.labels = {csvs[k].labels};
    s.files = csvs[k].images;
    s.transform = chestx14_transform(options.crop_size());
    start += n;
  }
  TORCH_CHECK(b.train.size() > 0, "chestx14: '", csvs[0].path, "' lists no image");
  b.validate();
  return b;
}

}  // namespace bayesagg
