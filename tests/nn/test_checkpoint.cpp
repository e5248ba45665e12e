#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nn/checkpoint.h"
#include "util.h"

namespace test_checkpoint {

using namespace tg;

namespace {
std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("tilegrad_test_" + name)).string();
}

struct Small : nn::Module {
  std::shared_ptr<nn::Linear> a, b;
  explicit Small(std::uint64_t seed, std::int64_t hidden = 5) : Module("Small") {
    a = register_module("a", std::make_shared<nn::Linear>(3, hidden, true, TensorOptions{}, seed));
    b = register_module("b", std::make_shared<nn::Linear>(hidden, 2, false, TensorOptions{.dtype = DType::bf16}, seed + 1));
  }
};
}  // namespace

TEST_CASE("safetensors round trip of every dtype", "[nn][checkpoint]") {
  std::string path = temp_path("all.safetensors");
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"f32", from_vector<float>({1.5f, -2.0f, 3.25f}, {3})},
      {"f64", from_vector<double>({1e-300, 2.0}, {2, 1})},
      {"bf16", from_vector<float>({0.5f, 7.0f}, {2}, {.dtype = DType::bf16})},
      {"f16", from_vector<float>({-0.25f}, {1}, {.dtype = DType::f16})},
      {"i32", from_vector<std::int32_t>({-7, 8}, {2})},
      {"i64", from_vector<std::int64_t>({1ll << 40}, {1})},
      {"bool", from_vector<bool>({true, false, true}, {3})},
      {"empty", zeros({0, 4})},
      {"scalar", from_vector<float>({42.0f}, {})}};
  nn::save_tensors(ts, path, {{"format", "pt"}, {"note", "quote \" and backslash \\"}});
  std::map<std::string, std::string> meta;
  auto back = nn::load_tensors(path, &meta);
  REQUIRE(meta["note"] == "quote \" and backslash \\");
  REQUIRE(back.size() == ts.size());
  for (std::size_t i = 0; i < ts.size(); ++i) {
    INFO(ts[i].first);
    REQUIRE(back[i].first == ts[i].first);
    REQUIRE(back[i].second.dtype() == ts[i].second.dtype());
    REQUIRE(back[i].second.shape() == ts[i].second.shape());
    REQUIRE(tgt::values(back[i].second) == tgt::values(ts[i].second));
  }
  std::remove(path.c_str());
}

TEST_CASE("module save/load restores parameters and reports mismatches", "[nn][checkpoint]") {
  std::string path = temp_path("module.safetensors");
  Small m1(1), m2(2);
  nn::save(m1, path);
  REQUIRE(tgt::max_abs_diff(m1.a->weight, m2.a->weight) > 0);
  nn::load(m2, path);
  for (std::size_t i = 0; i < m1.parameters().size(); ++i) {
    REQUIRE(tgt::values(m1.parameters()[i]) == tgt::values(m2.parameters()[i]));
    REQUIRE(m2.parameters()[i].dtype() == m1.parameters()[i].dtype());
  }
  Small wrong_shape(3, 6);
  tgt::require_throws<ShapeError>([&] { nn::load(wrong_shape, path); }, {"load", "a.weight", "[5, 3]", "[6, 3]"});
  nn::save_tensors({{"a.weight", m1.a->weight}, {"extra", zeros({1})}}, path);
  tgt::require_throws<ValueError>([&] { nn::load(m2, path); }, {"missing from the file: a.bias b.weight", "extra"});
  nn::load(m2, path, /*strict=*/false);  // loads what matches
  tgt::require_throws<Error>([] { nn::load_tensors("/nonexistent/x.safetensors"); }, {"cannot open"});
  std::ofstream(path, std::ios::binary) << std::string("\x10\0\0\0\0\0\0\0{bad json}xxxxxx", 24);
  tgt::require_throws<Error>([&] { nn::load_tensors(path); }, {"malformed header"});
  std::remove(path.c_str());
}

TEST_CASE("Python's safetensors reads our file with identical values", "[nn][checkpoint][python]") {
  const char* py = std::getenv("TG_PYTHON");
  std::string python = py ? py : "python3";
  if (std::system((python + " -c 'import numpy, safetensors.numpy' >/dev/null 2>&1").c_str()) != 0) {
    TG_SKIP("Python with numpy and safetensors is not available (set TG_PYTHON): interop test skipped");
  }
  std::string path = temp_path("py.safetensors");
  Tensor a = rand_seeded({3, 4}, 5);
  Tensor b = from_vector<std::int64_t>({1, -2, 3}, {3});
  Tensor c = rand_seeded({2, 2}, 6, {.dtype = DType::f16});
  nn::save_tensors({{"a", a}, {"b", b}, {"c", c}}, path);
  // Python prints the values as exact decimal text; we compare with ours.
  std::string out = path + ".txt";
  std::string cmd = python + " -c \"import safetensors.numpy as s; d = s.load_file('" + path +
                    "'); f = open('" + out +
                    "', 'w'); [f.write(' '.join(repr(float(x)) for x in d[k].astype('float64').ravel()) + '\\n') "
                    "for k in ('a', 'b', 'c')]\"";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(out);
  for (const Tensor& t : {a, b, c}) {
    std::string line;
    REQUIRE(std::getline(in, line));
    std::istringstream ls(line);
    std::vector<double> got;
    double v;
    while (ls >> v) got.push_back(v);
    REQUIRE(got == tgt::values(t));
  }
  std::remove(path.c_str());
  std::remove(out.c_str());
}

}  // namespace test_checkpoint
