#pragma once
/// Forward declarations of LibTorch's archives, so that headers can declare save/load without
/// including the (heavy) serialization headers.

namespace torch {
namespace serialize {
class OutputArchive;
class InputArchive;
}  // namespace serialize
}  // namespace torch
