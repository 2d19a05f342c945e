#include "bayesagg/data/paper/image_io.h"

#include "bayesagg/core/files.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#if BAYESAGG_WITH_IMAGES
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#endif

namespace bayesagg {

bool image_size_allowed(uint64_t width, uint64_t height) {
  return width >= 1 && height >= 1 && width <= static_cast<uint64_t>(kMaxImageSide) &&
         height <= static_cast<uint64_t>(kMaxImageSide) &&
         width * height <= static_cast<uint64_t>(kMaxImagePixels);
}

#if BAYESAGG_WITH_IMAGES
namespace {

/// The message of a header whose size `image_size_allowed` refuses (checked before allocating).
void size_message(char* message, size_t capacity, uint64_t width, uint64_t height) {
  std::snprintf(message, capacity,
                "its header declares %llu x %llu pixels, outside the limit of %lld pixels per side "
                "and %lld pixels in all (a damaged or hostile file?)",
                static_cast<unsigned long long>(width), static_cast<unsigned long long>(height),
                static_cast<long long>(kMaxImageSide), static_cast<long long>(kMaxImagePixels));
}

// ------------------------------------------------------------------ JPEG

struct JpegError {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_message(j_common_ptr cinfo, int level) {
  // level -1: a warning about corrupt data. A premature end of the file is fatal (libjpeg would
  // fill the missing rows with grey); other warnings are tolerated, as PIL does.
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}

/// C-style decoder: no C++ object is created between setjmp and a possible longjmp; results go
/// through pointers set up by the caller. Returns false with `message` set on failure.
bool jpeg_decode_raw(const unsigned char* data, size_t size, int channels,
                     std::vector<unsigned char>* pixels, int* width, int* height,
                     char* message) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_fail;
  err.pub.emit_message = jpeg_message;
  err.message[0] = '\0';
  if (setjmp(err.jump)) {
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", err.message);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (!image_size_allowed(cinfo.image_width, cinfo.image_height)) {
    size_message(message, JMSG_LENGTH_MAX, cinfo.image_width, cinfo.image_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    std::snprintf(message, JMSG_LENGTH_MAX, "CMYK JPEGs are not supported");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  *width = static_cast<int>(cinfo.output_width);
  *height = static_cast<int>(cinfo.output_height);
  const size_t row = static_cast<size_t>(cinfo.output_width) * cinfo.output_components;
  pixels->resize(row * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rowp = pixels->data() + row * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &rowp, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

struct JpegWriteError {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_write_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegWriteError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

bool jpeg_encode_raw(const unsigned char* pixels, int width, int height, int channels, int quality,
                     unsigned char** out, unsigned long* out_size, char* message) {
  jpeg_compress_struct cinfo;
  JpegWriteError err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_write_fail;
  if (setjmp(err.jump)) {
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", err.message);
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, out, out_size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t row = static_cast<size_t>(width) * channels;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW rowp = const_cast<unsigned char*>(pixels) + row * cinfo.next_scanline;
    jpeg_write_scanlines(&cinfo, &rowp, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

// ------------------------------------------------------------------ PNG

struct PngSource {
  const unsigned char* data;
  size_t size;
  size_t pos;
};

struct PngContext {
  char message[256];
};

void png_fail(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngContext*>(png_get_error_ptr(png));
  std::snprintf(ctx->message, sizeof ctx->message, "%s", msg);
  png_longjmp(png, 1);
}

void png_warn(png_structp, png_const_charp) {}

void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (src->size - src->pos < n) png_error(png, "the file ends before its image data do");
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

/// C-style PNG decoder to 8-bit grey (channels 1, PIL's L conversion) or RGB (channels 3).
bool png_decode_raw(const unsigned char* data, size_t size, int channels,
                    std::vector<unsigned char>* pixels, std::vector<unsigned char>* scratch,
                    int* width, int* height, char* message) {
  if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
    std::snprintf(message, 256, "not a PNG file (bad signature)");
    return false;
  }
  PngContext ctx;
  ctx.message[0] = '\0';
  PngSource src{data, size, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_fail, png_warn);
  if (!png) {
    std::snprintf(message, 256, "libpng could not be initialised");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(message, 256, "libpng could not be initialised");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    std::snprintf(message, 256, "%s", ctx.message);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &src, png_read_memory);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info);
  const png_uint_32 h = png_get_image_height(png, info);
  if (!image_size_allowed(w, h)) {
    size_message(message, 256, w, h);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  if (depth == 16) png_set_scale_16(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  png_set_strip_alpha(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int out_channels = png_get_channels(png, info);  // 1 (grey) or 3 (RGB)
  const size_t rowbytes = png_get_rowbytes(png, info);
  if ((out_channels != 1 && out_channels != 3) || rowbytes != static_cast<size_t>(w) * out_channels) {
    std::snprintf(message, 256, "unsupported PNG layout (%d channels after conversion)",
                  out_channels);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  scratch->resize(rowbytes * h);
  // Row by row; an interlaced image needs every pass over every row.
  for (int pass = 0; pass < passes; ++pass) {
    for (png_uint_32 y = 0; y < h; ++y) png_read_row(png, scratch->data() + rowbytes * y, nullptr);
  }
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);

  *width = static_cast<int>(w);
  *height = static_cast<int>(h);
  const size_t n = static_cast<size_t>(w) * h;
  pixels->resize(n * channels);
  const unsigned char* s = scratch->data();
  unsigned char* d = pixels->data();
  if (out_channels == 1 && channels == 1) {
    std::memcpy(d, s, n);
  } else if (out_channels == 1 && channels == 3) {
    for (size_t i = 0; i < n; ++i) d[i] = d[n + i] = d[2 * n + i] = s[i];
  } else if (out_channels == 3 && channels == 1) {
    for (size_t i = 0; i < n; ++i) {
      const uint32_t l = 19595u * s[3 * i] + 38470u * s[3 * i + 1] + 7471u * s[3 * i + 2] + 0x8000u;
      d[i] = static_cast<unsigned char>(l >> 16);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      d[i] = s[3 * i];
      d[n + i] = s[3 * i + 1];
      d[2 * n + i] = s[3 * i + 2];
    }
  }
  return true;
}

void png_write_memory(png_structp png, png_bytep data, png_size_t n) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), n);
}

void png_flush_memory(png_structp) {}

bool png_encode_raw(const unsigned char* interleaved, int width, int height, int channels,
                    int depth, std::string* out, char* message) {
  PngContext ctx;
  ctx.message[0] = '\0';
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_fail, png_warn);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    std::snprintf(message, 256, "%s", ctx.message);
    png_destroy_write_struct(&png, &info);
    return false;
  }
  static const int kTypes[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  png_set_write_fn(png, out, png_write_memory, png_flush_memory);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), depth,
               kTypes[channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const size_t row = static_cast<size_t>(width) * channels * (depth / 8);
  for (int y = 0; y < height; ++y) {
    png_write_row(png, const_cast<unsigned char*>(interleaved) + row * y);
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

/// [C, H, W] -> contiguous [H, W, C].
at::Tensor interleave(const at::Tensor& image) { return image.permute({1, 2, 0}).contiguous(); }

}  // namespace

at::Tensor decode_jpeg(const std::string& bytes, const std::string& name, int channels) {
  TORCH_CHECK(channels == 1 || channels == 3, "decode_jpeg: channels must be 1 or 3");
  std::vector<unsigned char> pixels;
  int w = 0, h = 0;
  char message[JMSG_LENGTH_MAX] = {0};
  const bool ok = jpeg_decode_raw(reinterpret_cast<const unsigned char*>(bytes.data()),
                                  bytes.size(), channels, &pixels, &w, &h, message);
  TORCH_CHECK(ok, "'", name, "' is not a readable JPEG: ", message);
  // libjpeg gives [H, W, C]
  return at::from_blob(pixels.data(), {h, w, channels}, at::kByte).permute({2, 0, 1}).contiguous();
}

at::Tensor read_jpeg(const std::string& path, int channels) {
  return decode_jpeg(read_file(path), path, channels);
}

at::Tensor decode_png(const std::string& bytes, const std::string& name, int channels) {
  TORCH_CHECK(channels == 1 || channels == 3, "decode_png: channels must be 1 or 3");
  std::vector<unsigned char> pixels, scratch;
  int w = 0, h = 0;
  char message[256] = {0};
  const bool ok = png_decode_raw(reinterpret_cast<const unsigned char*>(bytes.data()),
                                 bytes.size(), channels, &pixels, &scratch, &w, &h, message);
  TORCH_CHECK(ok, "'", name, "' is not a readable PNG: ", message);
  return at::from_blob(pixels.data(), {channels, h, w}, at::kByte).clone();
}

at::Tensor read_png(const std::string& path, int channels) {
  return decode_png(read_file(path), path, channels);
}

void write_png(const std::string& path, const at::Tensor& image) {
  TORCH_CHECK(image.defined() && image.dim() == 3 && image.size(0) >= 1 && image.size(0) <= 4,
              "write_png('", path, "'): expected [C, H, W] with C in 1..4");
  TORCH_CHECK(image.scalar_type() == at::kByte || image.scalar_type() == at::kInt, "write_png('",
              path, "'): expected uint8 (8-bit) or int32 (16-bit) samples");
  const bool sixteen = image.scalar_type() == at::kInt;
  at::Tensor hwc = interleave(image);
  if (sixteen) {
    TORCH_CHECK(image.min().item<int>() >= 0 && image.max().item<int>() <= 65535, "write_png('",
                path, "'): 16-bit samples must be in [0, 65535]");
    // PNG stores 16-bit samples big-endian
    const at::Tensor v = hwc.to(at::kLong);
    hwc = at::stack({v.div(256, "floor"), v.remainder(256)}, -1).to(at::kByte).contiguous();
  }
  std::string out;
  char message[256] = {0};
  const bool ok = png_encode_raw(hwc.data_ptr<uint8_t>(), static_cast<int>(image.size(2)),
                                 static_cast<int>(image.size(1)), static_cast<int>(image.size(0)),
                                 sixteen ? 16 : 8, &out, message);
  TORCH_CHECK(ok, "write_png('", path, "'): ", message);
  write_file_atomic(path, out);
}

void write_jpeg(const std::string& path, const at::Tensor& image, int quality) {
  TORCH_CHECK(image.defined() && image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3) &&
                  image.scalar_type() == at::kByte,
              "write_jpeg('", path, "'): expected uint8 [C, H, W] with C = 1 or 3");
  TORCH_CHECK(quality >= 1 && quality <= 100, "write_jpeg: quality must be in 1..100");
  const at::Tensor hwc = interleave(image);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  char message[JMSG_LENGTH_MAX] = {0};
  const bool ok = jpeg_encode_raw(hwc.data_ptr<uint8_t>(), static_cast<int>(image.size(2)),
                                  static_cast<int>(image.size(1)), static_cast<int>(image.size(0)),
                                  quality, &buffer, &size, message);
  std::string out;
  if (buffer) {
    out.assign(reinterpret_cast<const char*>(buffer), size);
    std::free(buffer);
  }
  TORCH_CHECK(ok, "write_jpeg('", path, "'): ", message);
  write_file_atomic(path, out);
}

#else  // without libpng and libjpeg: every codec says how to get them

namespace {
[[noreturn]] void no_codecs(const std::string& file) {
  TORCH_CHECK(false, "cannot read or write '", file, "': this bayesagg was built without libpng "
              "and libjpeg; install libpng-dev libjpeg-dev (apt-get install, or scripts/setup.sh) "
              "and rebuild (cmake -S . -B build -DBAYESAGG_WITH_IMAGES=ON && cmake --build build)");
}
}  // namespace

at::Tensor decode_jpeg(const std::string&, const std::string& name, int) { no_codecs(name); }
at::Tensor read_jpeg(const std::string& path, int) { no_codecs(path); }
at::Tensor decode_png(const std::string&, const std::string& name, int) { no_codecs(name); }
at::Tensor read_png(const std::string& path, int) { no_codecs(path); }
void write_png(const std::string& path, const at::Tensor&) { no_codecs(path); }
void write_jpeg(const std::string& path, const at::Tensor&, int) { no_codecs(path); }

#endif  // BAYESAGG_WITH_IMAGES

at::Tensor resize_center(const at::Tensor& image, int64_t size) {
  TORCH_CHECK(image.defined() && image.dim() == 3 && image.scalar_type() == at::kByte,
              "resize_center: expected uint8 [C, H, W]");
  TORCH_CHECK(size >= 1, "resize_center: size must be >= 1");
  const int64_t h = image.size(1), w = image.size(2);
  TORCH_CHECK(h >= 1 && w >= 1, "resize_center: empty image");
  if (h == size && w == size) return image;
  int64_t nh, nw;
  if (h <= w) {
    nh = size;
    nw = size * w / h;
  } else {
    nw = size;
    nh = size * h / w;
  }
  at::Tensor out = image;
  if (nh != h || nw != w) {
    const at::Tensor f = image.to(at::kFloat).unsqueeze(0);
    out = at::_upsample_bilinear2d_aa(f, {nh, nw}, /*align_corners=*/false)
              .squeeze(0)
              .round()
              .clamp(0, 255)
              .to(at::kByte);
  }
  const int64_t top = static_cast<int64_t>(std::nearbyint((nh - size) / 2.0));
  const int64_t left = static_cast<int64_t>(std::nearbyint((nw - size) / 2.0));
  return out.narrow(1, top, size).narrow(2, left, size).contiguous();
}

}  // namespace bayesagg
