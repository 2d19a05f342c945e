#pragma once
/// Reader (and writer, for tests and fixtures) of IDX files, the format of MNIST and
/// Fashion-MNIST: a big-endian header `0x00 0x00 TYPE NDIMS`, NDIMS big-endian uint32 sizes, then
/// the data in row-major order. Files may be gzip'd or plain; both are read transparently.
///
/// Only the unsigned-byte type (0x08) is supported, which is what (Fashion-)MNIST uses.
/// Bytes after the data are an error (the file is not what its header says), as is a file with
/// fewer data bytes than its header announces.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace bayesagg {

/// Magic number of an IDX image file: unsigned bytes, 3 dimensions [N, rows, cols].
constexpr uint32_t kIdxImagesMagic = 0x00000803;
/// Magic number of an IDX label file: unsigned bytes, 1 dimension [N].
constexpr uint32_t kIdxLabelsMagic = 0x00000801;

/// Reads any unsigned-byte IDX file (gzip'd or plain) as a uint8 tensor with the header's
/// sizes. Throws (naming the file) when it is missing or unreadable, its magic number is not
/// `0x000008NN` with 1 <= NN <= 8, or its data are truncated or followed by trailing bytes.
at::Tensor read_idx(const std::string& path);

/// Reads an IDX image file (magic 0x00000803) as uint8 [N, rows, cols].
at::Tensor read_idx_images(const std::string& path);

/// Reads an IDX label file (magic 0x00000801) as int64 [N].
at::Tensor read_idx_labels(const std::string& path);

/// Writes a uint8 tensor (1 to 8 dimensions) as an IDX file; gzip'd when `gzip` is true.
/// Atomic, as `write_file_atomic`. Throws naming the file on failure.
void write_idx(const std::string& path, const at::Tensor& data, bool gzip = true);

}  // namespace bayesagg
