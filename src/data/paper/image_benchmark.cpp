#include "bayesagg/data/paper/image_benchmark.h"

#include "bayesagg/data/paper/cache.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <ostream>
#include <cerrno>
#include <cstring>

#include <sys/stat.h>

namespace bayesagg {

std::vector<int64_t> ImageTransform::output_shape(int64_t c, int64_t h, int64_t w) const {
  const int64_t oc = channels > 0 ? channels : c;
  return crop > 0 ? std::vector<int64_t>{oc, crop, crop} : std::vector<int64_t>{oc, h, w};
}

at::Tensor ImageTransform::apply(const at::Tensor& images, bool train,
                                 at::Generator generator) const {
  TORCH_CHECK(images.defined() && images.dim() == 4 && images.scalar_type() == at::kByte,
              "ImageTransform: expected uint8 images [B, C, H, W]");
  const int64_t b = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t oc = channels > 0 ? channels : c;
  TORCH_CHECK(oc == c || (c == 1 && oc == 3), "ImageTransform: cannot make ", oc,
              " channels from ", c);
  TORCH_CHECK(crop <= h && crop <= w, "ImageTransform: crop ", crop, " larger than the images (",
              h, "×", w, ")");
  TORCH_CHECK(mean.size() == std.size() && (mean.empty() || static_cast<int64_t>(mean.size()) == oc),
              "ImageTransform: mean and std need one value per output channel");
  const int64_t ch = crop > 0 ? crop : h, cw = crop > 0 ? crop : w;

  at::Tensor tops, lefts, flips;
  if (train && crop > 0 && random_crop) {
    TORCH_CHECK(generator.defined(), "ImageTransform: training batches need a generator");
    tops = at::randint(0, h - crop + 1, {b}, generator, at::kLong);
    lefts = at::randint(0, w - crop + 1, {b}, generator, at::kLong);
  } else {
    tops = at::full({b}, static_cast<int64_t>(std::nearbyint((h - ch) / 2.0)), at::kLong);
    lefts = at::full({b}, static_cast<int64_t>(std::nearbyint((w - cw) / 2.0)), at::kLong);
  }
  if (train && random_flip) {
    TORCH_CHECK(generator.defined(), "ImageTransform: training batches need a generator");
    flips = at::randint(0, 2, {b}, generator, at::kLong);
  } else {
    flips = at::zeros({b}, at::kLong);
  }

  at::Tensor out = at::empty({b, c, ch, cw}, at::kByte);
  const auto t = tops.accessor<int64_t, 1>(), l = lefts.accessor<int64_t, 1>(),
             f = flips.accessor<int64_t, 1>();
  at::parallel_for(0, b, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      at::Tensor win = images[i].narrow(1, t[i], ch).narrow(2, l[i], cw);
      if (f[i]) win = win.flip({2});
      out[i].copy_(win);
    }
  });
  at::Tensor x = out.to(at::kFloat).div_(255.0f);
  if (oc != c) x = x.expand({b, oc, ch, cw}).contiguous();
  if (!mean.empty()) {
    const at::Tensor m = at::tensor(mean, at::kDouble).to(at::kFloat).view({1, oc, 1, 1});
    const at::Tensor s = at::tensor(std, at::kDouble).to(at::kFloat).view({1, oc, 1, 1});
    x.sub_(m).div_(s);
  }
  return x;
}

at::Tensor ImageSplit::stored(const at::Tensor& indices) const {
  TORCH_CHECK(indices.defined() && indices.dim() == 1 && indices.scalar_type() == at::kLong,
              "ImageSplit: expected indices [B] int64");
  return images.index_select(0, index.defined() ? index.index_select(0, indices) : indices);
}

MultiTaskBatch ImageSplit::batch(const at::Tensor& indices, bool train,
                                 at::Generator generator) const {
  MultiTaskBatch out;
  out.inputs = transform.apply(stored(indices), train, generator);
  for (const auto& y : labels) out.labels.push_back(y.index_select(0, indices));
  return out;
}

MultiTaskSplit ImageSplit::materialize() const {
  MultiTaskSplit s;
  const int64_t n = size();
  TORCH_CHECK(images.defined() && images.dim() == 4, "ImageSplit::materialize: no images");
  const auto shape = transform.output_shape(images.size(1), images.size(2), images.size(3));
  std::vector<int64_t> full{n};
  full.insert(full.end(), shape.begin(), shape.end());
  s.inputs = at::empty(full, at::kFloat);
  constexpr int64_t kChunk = 256;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t len = std::min(kChunk, n - start);
    s.inputs.narrow(0, start, len)
        .copy_(transform.apply(stored(at::arange(start, start + len, at::kLong)), false));
  }
  for (const auto& y : labels) s.labels.push_back(y.contiguous());
  return s;
}

std::vector<int64_t> ImageBenchmark::input_shape() const {
  TORCH_CHECK(train.images.defined() && train.images.dim() == 4, "benchmark '", name,
              "' has no training images");
  return train.transform.output_shape(train.images.size(1), train.images.size(2),
                                      train.images.size(3));
}

at::Tensor ImageBenchmark::to_original(size_t group, const at::Tensor& values) const {
  TORCH_CHECK(group < groups.size(), "benchmark '", name, "': no group ", group);
  if (group >= target_scaling.size()) return values;
  return target_scaling[group].to_original(values);
}

void ImageBenchmark::validate() const {
  const std::string prefix = "benchmark '" + name + "' ";
  TORCH_CHECK(!groups.empty(), prefix, "has no task groups");
  TORCH_CHECK(static_cast<int64_t>(task_names.size()) == num_tasks(), prefix, task_names.size(),
              " task names for ", num_tasks(), " tasks");
  TORCH_CHECK(target_scaling.empty() || target_scaling.size() == groups.size(), prefix,
              target_scaling.size(), " target scalings for ", groups.size(), " groups");
  std::vector<int64_t> stored;
  for (const auto& [split, what] : {std::pair<const ImageSplit*, const char*>{&train, "train"},
                                    {&val, "val"},
                                    {&test, "test"}}) {
    const std::string w = prefix + what;
    TORCH_CHECK(split->images.defined() && split->images.dim() == 4 &&
                    split->images.scalar_type() == at::kByte,
                w, ": images must be uint8 [N, C, H, W]");
    const auto sz = split->images.sizes();
    const std::vector<int64_t> chw(sz.begin() + 1, sz.end());
    if (stored.empty()) stored = chw;
    TORCH_CHECK(chw == stored, w, ": images are ", c10::IntArrayRef(chw), ", other splits ",
                c10::IntArrayRef(stored));
    if (split->index.defined()) {
      TORCH_CHECK(split->index.dim() == 1 && split->index.scalar_type() == at::kLong, w,
                  ": index must be [N] int64");
      if (split->index.numel() > 0) {
        TORCH_CHECK(split->index.min().item<int64_t>() >= 0 &&
                        split->index.max().item<int64_t>() < split->images.size(0),
                    w, ": index out of range of the ", split->images.size(0), " stored images");
      }
    }
    TORCH_CHECK(split->labels.size() == groups.size(), w, ": ", split->labels.size(),
                " label tensors for ", groups.size(), " groups");
    for (size_t g = 0; g < groups.size(); ++g) {
      check_labels(groups[g], split->labels[g], split->size(),
                   w + " labels of group " + std::to_string(g) + " (" + groups[g].str() + ")");
    }
    TORCH_CHECK(split->files.empty() || static_cast<int64_t>(split->files.size()) == split->size(),
                w, ": ", split->files.size(), " file names for ", split->size(), " images");
  }
}

Benchmark ImageBenchmark::to_benchmark() const {
  Benchmark b;
  b.name = name;
  b.groups = groups;
  b.task_names = task_names;
  b.target_scaling = target_scaling;
  b.seed = seed;
  b.train = train.materialize();
  b.val = val.materialize();
  b.test = test.materialize();
  return b;
}

namespace {

/// Decodes items [begin, begin + n) of `paths` into `out` ([n, C, H, W] uint8), in parallel;
/// throws for the first (lowest index) image that fails.
void decode_chunk(const std::vector<std::string>& paths, int64_t begin, int64_t n,
                  const std::function<at::Tensor(const std::string&)>& decode,
                  const ImageStoreOptions& options, at::Tensor& out) {
  std::vector<std::string> errors(static_cast<size_t>(n));
  const c10::IntArrayRef shape(options.shape);
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const std::string& path = paths[static_cast<size_t>(begin + i)];
      try {
        const at::Tensor img = decode(path);
        if (!img.defined() || img.scalar_type() != at::kByte || img.sizes() != shape) {
          errors[static_cast<size_t>(i)] =
              "'" + path + "': decoded to an unexpected shape (expected uint8 " +
              c10::str(shape) + ")";
          continue;
        }
        out[i].copy_(img);
      } catch (const std::exception& ex) {
        errors[static_cast<size_t>(i)] = ex.what();
        const c10::Error* ce = dynamic_cast<const c10::Error*>(&ex);
        if (ce) errors[static_cast<size_t>(i)] = ce->msg();
      }
    }
  });
  for (const auto& e : errors) {
    TORCH_CHECK(e.empty(), options.what, ": ", e);
  }
}

}  // namespace

at::Tensor load_image_store(const std::vector<std::string>& paths,
                            const std::vector<std::string>& names,
                            const std::function<at::Tensor(const std::string&)>& decode,
                            const ImageStoreOptions& options, std::vector<std::string>* notes) {
  TORCH_CHECK(paths.size() == names.size(), "load_image_store: ", paths.size(), " paths for ",
              names.size(), " names");
  TORCH_CHECK(options.shape.size() == 3, "load_image_store: shape must be [C, H, W]");
  const int64_t n = static_cast<int64_t>(paths.size());
  std::vector<int64_t> full{n};
  full.insert(full.end(), options.shape.begin(), options.shape.end());
  constexpr int64_t kChunk = 512;

  if (!options.use_cache) {
    at::Tensor store = at::empty(full, at::kByte);
    for (int64_t start = 0; start < n; start += kChunk) {
      const int64_t len = std::min(kChunk, n - start);
      at::Tensor part = store.narrow(0, start, len);
      decode_chunk(paths, start, len, decode, options, part);
    }
    return store;
  }

  cache::KeyHasher key;
  key.str("bayesagg image store v1").i64(static_cast<int64_t>(options.settings_key));
  for (int64_t d : options.shape) key.i64(d);
  key.i64(n);
  for (int64_t i = 0; i < n; ++i) {
    const std::string& path = paths[static_cast<size_t>(i)];
    struct stat st {};
    TORCH_CHECK(::stat(path.c_str(), &st) == 0, options.what, ": cannot read '", path, "': ",
                std::strerror(errno));
    key.str(names[static_cast<size_t>(i)])
        .i64(static_cast<int64_t>(st.st_size))
        .i64(static_cast<int64_t>(st.st_mtim.tv_sec))
        .i64(static_cast<int64_t>(st.st_mtim.tv_nsec));
  }
  const std::string path = cache::cache_path(options.cache_dir, options.stem, key.digest());
  const std::vector<cache::TensorSpec> specs = {{"images", at::kByte, full}};
  std::vector<at::Tensor> tensors;
  std::string reason;
  if (cache::open_cache(path, key.digest(), specs, &tensors, &reason, /*map=*/true)) {
    if (notes) notes->push_back(options.what + ": reused the image cache '" + path + "'");
    return tensors[0];
  }
  {
    cache::CacheWriter writer(path, key.digest(), specs);
    std::vector<int64_t> chunk_shape = full;
    for (int64_t start = 0; start < n; start += kChunk) {
      const int64_t len = std::min(kChunk, n - start);
      chunk_shape[0] = len;
      at::Tensor part = at::empty(chunk_shape, at::kByte);
      decode_chunk(paths, start, len, decode, options, part);
      writer.write(part);
    }
    writer.commit();
  }
  if (notes) {
    notes->push_back(options.what + ": built the image cache '" + path + "' (" + reason + ")");
  }
  TORCH_CHECK(cache::open_cache(path, key.digest(), specs, &tensors, &reason, /*map=*/true),
              options.what, ": the new image cache '", path, "' does not validate: ", reason);
  return tensors[0];
}

std::ostream& operator<<(std::ostream& os, const ImageBenchmark& b) {
  os << b.name << ": ";
  for (size_t g = 0; g < b.groups.size(); ++g) os << (g ? "," : "") << b.groups[g].str();
  const std::vector<int64_t> shape =
      b.train.images.defined() ? b.input_shape() : std::vector<int64_t>{};
  os << "; inputs " << c10::IntArrayRef(shape) << "; train " << b.train.size() << ", val "
     << b.val.size() << ", test " << b.test.size() << "; seed " << b.seed;
  return os;
}

}  // namespace bayesagg
