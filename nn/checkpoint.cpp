#include "nn/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "ops/copy/copy.h"

namespace tg::nn {

namespace {

const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

DType from_st_dtype(const std::string& s, const std::string& path) {
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::boolean}) {
    if (s == st_dtype(t)) return t;
  }
  TG_THROW(DTypeError, "load_tensors: ", path, ": unsupported safetensors dtype \"", s, "\"");
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
      continue;
    }
    o += c;
  }
  return o;
}

// A small parser for the subset of JSON safetensors headers use: objects, arrays,
// strings and non-negative integers.
struct Json {
  enum Kind { Obj, Arr, Str, Num } kind = Num;
  std::vector<std::pair<std::string, Json>> obj;
  std::vector<Json> arr;
  std::string str;
  std::uint64_t num = 0;
};

class Parser {
 public:
  Parser(const std::string& s, const std::string& path) : s_(s), path_(path) {}
  Json parse() {
    Json v = value();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const char* what) {
    TG_THROW(Error, "load_tensors: ", path_, ": malformed header (", what, " at byte ", i_, ")");
  }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail("unexpected character");
    ++i_;
  }
  std::string string() {
    expect('"');
    std::string o;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      char c = s_[i_++];
      if (c == '"') return o;
      if (c == '\\') {
        if (i_ >= s_.size()) fail("bad escape");
        char e = s_[i_++];
        if (e == 'u') {
          if (i_ + 4 > s_.size()) fail("bad escape");
          o += static_cast<char>(std::stoi(s_.substr(i_, 4), nullptr, 16));
          i_ += 4;
        } else {
          o += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        }
      } else {
        o += c;
      }
    }
  }
  Json value() {
    Json v;
    char c = peek();
    if (c == '{') {
      v.kind = Json::Obj;
      ++i_;
      if (peek() == '}') {
        ++i_;
        return v;
      }
      while (true) {
        std::string k = string();
        expect(':');
        v.obj.emplace_back(k, value());
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::Arr;
      ++i_;
      if (peek() == ']') {
        ++i_;
        return v;
      }
      while (true) {
        v.arr.push_back(value());
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::Str;
      v.str = string();
      return v;
    }
    if (!std::isdigit(static_cast<unsigned char>(c))) fail("expected a value");
    v.kind = Json::Num;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) v.num = v.num * 10 + (s_[i_++] - '0');
    return v;
  }
  const std::string& s_;
  const std::string& path_;
  std::size_t i_ = 0;
};

const Json* field(const Json& o, const char* k) {
  for (const auto& [key, v] : o.obj)
    if (key == k) return &v;
  return nullptr;
}

}  // namespace

void save_tensors(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& path,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> host;
  std::ostringstream h;
  h << "{";
  std::uint64_t offset = 0;
  bool first = true;
  if (!metadata.empty()) {
    h << "\"__metadata__\":{";
    bool f = true;
    for (const auto& [k, v] : metadata) {
      h << (f ? "" : ",") << "\"" << json_escape(k) << "\":\"" << json_escape(v) << "\"";
      f = false;
    }
    h << "}";
    first = false;
  }
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    if (!names.insert(name).second) TG_THROW(ValueError, "save_tensors: duplicate tensor name \"", name, "\"");
    Tensor c = t.detach().to(Device::cpu());
    host.push_back(c);
    h << (first ? "" : ",") << "\"" << json_escape(name) << "\":{\"dtype\":\"" << st_dtype(c.dtype())
      << "\",\"shape\":[";
    for (int d = 0; d < c.dim(); ++d) h << (d ? "," : "") << c.size(d);
    h << "],\"data_offsets\":[" << offset << "," << offset + c.nbytes() << "]}";
    offset += c.nbytes();
    first = false;
  }
  h << "}";
  std::string header = h.str();
  header.append((8 - header.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  std::ofstream f(path, std::ios::binary);
  if (!f) TG_THROW(Error, "save_tensors: cannot open \"", path, "\" for writing");
  std::uint64_t n = header.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const Tensor& c : host) f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  if (!f) TG_THROW(Error, "save_tensors: write to \"", path, "\" failed");
}

std::vector<std::pair<std::string, Tensor>> load_tensors(const std::string& path,
                                                         std::map<std::string, std::string>* metadata) {
  std::ifstream f(path, std::ios::binary);
  if (!f) TG_THROW(Error, "load_tensors: cannot open \"", path, "\"");
  f.seekg(0, std::ios::end);
  const std::uint64_t size = static_cast<std::uint64_t>(f.tellg());
  f.seekg(0);
  unsigned char len[8];
  if (size < 8 || !f.read(reinterpret_cast<char*>(len), 8)) TG_THROW(Error, "load_tensors: ", path, ": file too short");
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(len[i]) << (8 * i);
  if (n > size - 8) TG_THROW(Error, "load_tensors: ", path, ": header length ", n, " exceeds the file size ", size);
  std::string header(n, '\0');
  f.read(header.data(), static_cast<std::streamsize>(n));
  Json root = Parser(header, path).parse();
  if (root.kind != Json::Obj) TG_THROW(Error, "load_tensors: ", path, ": header is not a JSON object");
  const std::uint64_t data_begin = 8 + n, data_size = size - data_begin;
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, v] : root.obj) {
    if (name == "__metadata__") {
      if (metadata)
        for (const auto& [k, s] : v.obj) (*metadata)[k] = s.str;
      continue;
    }
    const Json *dt = field(v, "dtype"), *shape = field(v, "shape"), *offs = field(v, "data_offsets");
    if (!dt || !shape || !offs || offs->arr.size() != 2) {
      TG_THROW(Error, "load_tensors: ", path, ": entry \"", name, "\" lacks dtype, shape or data_offsets");
    }
    DType t = from_st_dtype(dt->str, path);
    std::vector<std::int64_t> dims;
    for (const auto& d : shape->arr) dims.push_back(static_cast<std::int64_t>(d.num));
    Tensor c = empty(Shape(dims), {.dtype = t});
    std::uint64_t b = offs->arr[0].num, e = offs->arr[1].num;
    if (e < b || e > data_size || e - b != c.nbytes()) {
      TG_THROW(Error, "load_tensors: ", path, ": entry \"", name, "\" has data_offsets [", b, ", ", e,
               "] inconsistent with its shape ", c.shape(), " ", t, " or the data size ", data_size);
    }
    f.seekg(static_cast<std::streamoff>(data_begin + b));
    f.read(static_cast<char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
    if (!f) TG_THROW(Error, "load_tensors: ", path, ": read of \"", name, "\" failed");
    out.emplace_back(name, c);
  }
  return out;
}

void save(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata) {
  auto all = module.named_parameters();
  for (auto& b : module.named_buffers()) all.push_back(b);
  save_tensors(all, path, metadata);
}

void load(Module& module, const std::string& path, bool strict) {
  auto file = load_tensors(path);
  std::map<std::string, Tensor> by_name(file.begin(), file.end());
  auto all = module.named_parameters();
  for (auto& b : module.named_buffers()) all.push_back(b);
  std::vector<std::string> missing, unexpected;
  std::set<std::string> used;
  for (auto& [name, t] : all) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.shape() != t.shape()) {
      TG_THROW(ShapeError, "load: ", path, ": tensor \"", name, "\" has shape ", it->second.shape(),
               " in the file but ", t.shape(), " in the module");
    }
    used.insert(name);
  }
  for (auto& [name, t] : file)
    if (!used.count(name)) unexpected.push_back(name);
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::ostringstream os;
    os << "load: " << path << ": ";
    if (!missing.empty()) {
      os << "missing from the file:";
      for (auto& m : missing) os << " " << m;
    }
    if (!unexpected.empty()) {
      os << (missing.empty() ? "" : "; ") << "in the file but not in the module:";
      for (auto& u : unexpected) os << " " << u;
    }
    throw ValueError(os.str());
  }
  for (auto& [name, t] : all) {
    auto it = by_name.find(name);
    if (it == by_name.end()) continue;
    Tensor src = to_device(to_dtype(it->second, t.dtype()), t.device());
    copy_bytes(t, src);
  }
  module.on_loaded();
}

}  // namespace tg::nn
