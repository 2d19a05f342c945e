#pragma once
/// Image files of the paper benchmarks: JPEG (UTKFace) through libjpeg, PNG (ChestX-ray14)
/// through libpng, and the resize used before caching. Decoded images are uint8 [C, H, W].
///
/// Decoding is strict where a silent fallback would train on damaged data: a file that is not a
/// JPEG/PNG, a corrupt header or stream, and a JPEG or PNG that ends before its image data do
/// (libjpeg would fill the rest with grey) are errors naming the file. libjpeg's other warnings
/// about recoverable corrupt data are tolerated, as PIL and torchvision tolerate them.
///
/// The writers exist for tests and fixtures. In a build without libpng and libjpeg
/// (BAYESAGG_WITH_IMAGES=OFF) every reader and writer throws, naming the packages to install.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace bayesagg {

/// The largest image side the decoders accept, in pixels (ChestX-ray14's are 1024, UTKFace's 200).
constexpr int64_t kMaxImageSide = 16384;
/// The most pixels the decoders accept in one image (2^26, e.g. 8192 x 8192: 192 MiB as RGB).
/// Checked on the header, before any pixel buffer is allocated.
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;
/// Whether a header's `width` x `height` is within `kMaxImageSide` and `kMaxImagePixels`.
bool image_size_allowed(uint64_t width, uint64_t height);

/// Decodes a JPEG held in memory to uint8 [channels, H, W]: `channels` = 3 gives RGB (a
/// greyscale JPEG is replicated to three channels), 1 gives libjpeg's greyscale output (the Y of
/// YCbCr). `name` is used in error messages. Default libjpeg settings (islow DCT, fancy
/// upsampling), as PIL uses.
at::Tensor decode_jpeg(const std::string& bytes, const std::string& name, int channels = 3);
/// Reads and decodes a JPEG file; errors name the file.
at::Tensor read_jpeg(const std::string& path, int channels = 3);

/// Decodes a PNG held in memory to uint8 [channels, H, W]. Palette and 1/2/4-bit images are
/// expanded, 16-bit samples scaled to 8 bits (round(v * 255 / 65535), libpng's
/// `png_set_scale_16`), alpha dropped. `channels` = 1: greyscale, RGB converted as PIL's
/// `convert("L")`: (19595 R + 38470 G + 7471 B + 32768) >> 16; `channels` = 3: RGB, greyscale
/// replicated.
at::Tensor decode_png(const std::string& bytes, const std::string& name, int channels = 1);
/// Reads and decodes a PNG file; errors name the file.
at::Tensor read_png(const std::string& path, int channels = 1);

/// Writes `image` as a PNG (atomically). `image`: uint8 [C, H, W] with C = 1 (grey), 2 (grey +
/// alpha), 3 (RGB) or 4 (RGBA), written with 8-bit samples; or int32 [C, H, W] with values in
/// [0, 65535], written with 16-bit samples.
void write_png(const std::string& path, const at::Tensor& image);
/// Writes `image` (uint8 [C, H, W], C = 1 or 3) as a baseline JPEG of `quality` (1..100),
/// atomically.
void write_jpeg(const std::string& path, const at::Tensor& image, int quality = 95);

/// torchvision's `Resize(size)` then `CenterCrop(size)` on one uint8 [C, H, W] image: the shorter
/// side is resized to `size` and the longer to floor(size * long / short) with antialiased
/// bilinear interpolation (ATen's `_upsample_bilinear2d_aa`, the kernel of torchvision's
/// antialiased resize, which matches PIL's BILINEAR), rounded and clamped to uint8; then the
/// centre `size` × `size` window is kept (offset round((long - size) / 2), halves to even as
/// Python's `round`). An image already `size` × `size` is returned unchanged.
at::Tensor resize_center(const at::Tensor& image, int64_t size);

}  // namespace bayesagg
