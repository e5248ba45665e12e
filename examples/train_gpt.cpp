// tilegrad-train: trains a character-level GPT with block-sparse attention from a plain
// C++ loop. By default on the license texts every Debian/Ubuntu system ships in
// /usr/share/common-licenses. Run with --help for the flags.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <set>
#include <string>

#include "gpt/model.h"

namespace fs = std::filesystem;

namespace {

struct Args {
  std::string data = "/usr/share/common-licenses";
  std::string device = "auto";
  std::int64_t steps = -1, batch = -1, ctx = -1, layers = -1, d_model = -1, heads = -1, block = -1;
  double lr = -1, dropout = -1, attn_dropout = 0, mlp_density = 1, ema = 0, temperature = 0.8, top_p = 1.0;
  std::int64_t top_k = 0;
  std::int64_t mlp_block = -1;
  std::int64_t eval_every = -1, eval_batches = 8, sample_len = 400, profile = 0;
  std::uint64_t seed = 1234;
  std::string csv = "train_loss.csv", checkpoint = "gpt.safetensors", prompt = "The ";
  std::string dtype = "auto", pos = "learned", norm = "layer", mlp = "gelu";
  int tf32 = -1;
  bool resume = false, quiet = false, sync_loss = false, recompute = false, master_weights = false;
};

const char* kHelp = R"(tilegrad-train: train a character-level GPT with block-sparse attention.

Usage: tilegrad-train [flags]
  --data PATH         text file or folder of text files (default /usr/share/common-licenses)
  --device D          auto | cpu | cuda | cuda:N (default auto: the GPU when present)
  --steps N           optimisation steps (default CPU 800, GPU 2000)
  --batch N           sequences per step (default CPU 16, GPU 16)
  --ctx N             context length in characters (default CPU 128, GPU 1024)
  --layers N          transformer blocks (default CPU 2, GPU 6)
  --d-model N         model width (default CPU 128, GPU 384)
  --heads N           attention heads (default CPU 4, GPU 6)
  --block N           attention block size, 32 or 64 (default 32 on CPU, 64 on GPU)
  --lr X              peak learning rate, warm-up + cosine (default 3e-3 CPU, 1e-3 GPU)
  --dropout P         residual dropout: on the attention and MLP outputs before they
                      join the residual stream (there is no embedding dropout), as in
                      bench/gpt_torch.py (default 0 on CPU, 0.1 on GPU)
  --attn-dropout P    dropout on the attention probabilities inside flash attention
                      (MultiHeadAttention's dropout; default 0 on CPU and GPU)
  --mlp-density D     fraction of weight blocks each MLP layer keeps (default 1: dense);
                      below 1 the MLP is block-sparse (nn::BlockSparseLinear, a random
                      layout per weight): fewer parameters and FLOPs
  --mlp-block N       block size of the block-sparse MLP weights (default 32 on CPU,
                      64 on GPU; divides --d-model)
  --pos KIND          position encoding: learned (a table added to the token
                      embeddings, as in GPT-2; default) | rope (rotary embeddings of
                      each head's queries and keys, tg::rope: relative positions)
  --norm KIND         pre-norm of each block and the final one: layer (LayerNorm;
                      default) | rms (RMSNorm, as in LLaMA)
  --mlp KIND          gelu (d -> 4d -> d with GELU; default) | swiglu (a gated MLP
                      of hidden ~8d/3 without biases, nn::SwiGLU, as in LLaMA)
  --recompute         activation checkpointing: keep only each transformer block's
                      input for backward and run the block again there (less memory
                      for one more forward of the blocks per step)
  --master-weights    with --dtype bf16 / f16, AdamW updates f32 copies of the weights
                      (updates below a 16-bit step are not lost); off by default, as in
                      the PyTorch twin (bench/gpt_torch.py), whose weights are bf16 too
  --ema DECAY         keep an exponential moving average of the weights (e.g. 0.999)
                      and report its held-out loss next to the last weights' at the end
  --dtype T           parameter and activation dtype: f32 | bf16 | f16 (default f32 on
                      CPU, bf16 on GPU, where attention runs on tensor cores; AdamW
                      keeps its moments in f32 either way; f16 trains with dynamic loss
                      scaling, optim::GradScaler, which reads one number a step)
  --tf32 on|off       let f32 matmuls use TF32 tensor cores on the GPU (default on)
  --eval-every N      evaluate on the held-out 10% every N steps (default steps/10)
  --eval-batches N    batches per evaluation (default 8)
  --csv PATH          loss curve output (default train_loss.csv)
  --checkpoint PATH   checkpoint file, safetensors (default gpt.safetensors)
  --resume            continue from --checkpoint (model, optimizer, step); with --steps
                      at or below the checkpoint's step, only evaluate and sample
  --sample-len N      characters to generate at the end (default 400)
  --prompt TEXT       start of the generated sample (default "The ")
  --temperature T     sampling temperature (default 0.8; 0: always the most likely)
  --top-k K           sample among the K most likely characters only (default 0: all)
  --top-p P           nucleus sampling: the fewest most likely characters holding P of
                      the probability (default 1: all)
  --seed N            data order and initialisation seed (default 1234)
  --profile N         time every kernel of N training steps (after 10 warm-up steps)
                      and print where the time goes, largest first
  --quiet             no progress bar
  --sync-loss         read each step's loss before queuing the next step (loss.item():
                      the host waits for the GPU every step), to compare with the default
  --help              this text
)";

// The flags that shape the model, as recorded in checkpoints.
std::string config_flags(const gpt::Config& c, const std::string& dtype) {
  std::ostringstream os;
  os << "--layers " << c.layers << " --d-model " << c.d_model << " --heads " << c.heads << " --ctx " << c.ctx
     << " --block " << c.block << " --mlp-density " << c.mlp_density;
  if (c.mlp_density < 1.0) os << " --mlp-block " << c.mlp_block;
  if (c.rope) os << " --pos rope";  // the defaults are left out: older checkpoints still match
  if (c.rms_norm) os << " --norm rms";
  if (c.swiglu) os << " --mlp swiglu";
  os << " --dtype " << dtype;
  return os.str();
}

// "MLP: dense", or the block-sparse MLP's block size and the first layer's kept blocks.
std::string mlp_summary(const gpt::GPT& model) {
  if (!model.blocks.empty() && model.blocks[0]->swiglu)
    return "MLP: SwiGLU, hidden " + std::to_string(model.blocks[0]->swiglu->hidden);
  if (model.blocks.empty() || !model.blocks[0]->sparse_fc) return "MLP: dense";
  const tg::Layout& l = model.blocks[0]->sparse_fc->layout();
  std::ostringstream os;
  os << "MLP: block-sparse, blocks of " << l.block_size() << "; the first d -> 4d weight keeps " << l.n_blocks()
     << " of " << l.block_rows() * l.block_cols() << " blocks";
  return os.str();
}

Args parse(int argc, char** argv) {
  Args a;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw tg::ValueError(std::string("tilegrad-train: ") + argv[i] + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    if (f == "--help" || f == "-h") {
      std::cout << kHelp;
      std::exit(0);
    } else if (f == "--data") a.data = need(i);
    else if (f == "--device") a.device = need(i);
    else if (f == "--steps") a.steps = std::stoll(need(i));
    else if (f == "--batch") a.batch = std::stoll(need(i));
    else if (f == "--ctx") a.ctx = std::stoll(need(i));
    else if (f == "--layers") a.layers = std::stoll(need(i));
    else if (f == "--d-model") a.d_model = std::stoll(need(i));
    else if (f == "--heads") a.heads = std::stoll(need(i));
    else if (f == "--block") a.block = std::stoll(need(i));
    else if (f == "--lr") a.lr = std::stod(need(i));
    else if (f == "--dropout") a.dropout = std::stod(need(i));
    else if (f == "--attn-dropout") a.attn_dropout = std::stod(need(i));
    else if (f == "--mlp-density") a.mlp_density = std::stod(need(i));
    else if (f == "--mlp-block") a.mlp_block = std::stoll(need(i));
    else if (f == "--recompute") a.recompute = true;
    else if (f == "--pos") a.pos = need(i);
    else if (f == "--norm") a.norm = need(i);
    else if (f == "--mlp") a.mlp = need(i);
    else if (f == "--ema") a.ema = std::stod(need(i));
    else if (f == "--master-weights") a.master_weights = true;
    else if (f == "--eval-every") a.eval_every = std::stoll(need(i));
    else if (f == "--dtype") a.dtype = need(i);
    else if (f == "--tf32") {
      const std::string v = need(i);
      if (v != "on" && v != "off") throw tg::ValueError("tilegrad-train: --tf32 takes on or off, got " + v);
      a.tf32 = v == "on";
    }
    else if (f == "--eval-batches") a.eval_batches = std::stoll(need(i));
    else if (f == "--csv") a.csv = need(i);
    else if (f == "--checkpoint") a.checkpoint = need(i);
    else if (f == "--resume") a.resume = true;
    else if (f == "--sample-len") a.sample_len = std::stoll(need(i));
    else if (f == "--prompt") a.prompt = need(i);
    else if (f == "--temperature") a.temperature = std::stod(need(i));
    else if (f == "--top-k") a.top_k = std::stoll(need(i));
    else if (f == "--top-p") a.top_p = std::stod(need(i));
    else if (f == "--seed") a.seed = std::stoull(need(i));
    else if (f == "--quiet") a.quiet = true;
    else if (f == "--sync-loss") a.sync_loss = true;
    else if (f == "--profile") a.profile = std::stoll(need(i));
    else throw tg::ValueError("tilegrad-train: unknown flag " + f + " (see --help)");
  }
  return a;
}

std::string read_corpus(const std::string& path) {
  std::string text;
  std::vector<fs::path> files;
  if (fs::is_directory(path)) {
    // Each file once: links to a file already listed (common-licenses has GPL -> GPL-3,
    // ...) would put the same text twice into the training data.
    std::set<fs::path> seen;
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.is_regular_file() && seen.insert(fs::canonical(e.path())).second) files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw tg::Error("tilegrad-train: cannot read " + f.string());
    text += std::string(std::istreambuf_iterator<char>(in), {});
    text += "\n";
  }
  if (text.size() < 4096) throw tg::Error("tilegrad-train: the corpus at " + path + " is too small (< 4 KiB)");
  return text;
}

// Batches of random windows [B, T+1] from `data` (Philox: reproducible).
struct Batcher {
  const std::vector<std::int64_t>& data;
  std::uint64_t seed;
  std::uint64_t draw = 0;
  void next(std::int64_t B, std::int64_t T, tg::Device dev, tg::Tensor& x, tg::Tensor& y) {
    std::vector<std::int64_t> xs(static_cast<std::size_t>(B * T)), ys(xs.size());
    const std::uint64_t span = data.size() - static_cast<std::size_t>(T) - 1;
    for (std::int64_t b = 0; b < B; ++b) {
      std::uint64_t start = tg::philox::bits(seed, draw, static_cast<std::uint64_t>(b)) % span;
      for (std::int64_t t = 0; t < T; ++t) {
        xs[static_cast<std::size_t>(b * T + t)] = data[start + static_cast<std::size_t>(t)];
        ys[static_cast<std::size_t>(b * T + t)] = data[start + static_cast<std::size_t>(t) + 1];
      }
    }
    ++draw;
    x = tg::from_vector(xs, {B, T}, {.dtype = tg::DType::i64, .device = dev});
    y = tg::from_vector(ys, {B * T}, {.dtype = tg::DType::i64, .device = dev});
  }
};

double evaluate(gpt::GPT& model, Batcher& val, std::int64_t B, std::int64_t T, std::int64_t batches) {
  tg::NoGradGuard ng;
  model.eval();
  double total = 0;
  for (std::int64_t i = 0; i < batches; ++i) {
    tg::Tensor x, y;
    val.next(B, T, model.cfg.device, x, y);
    total += tg::cross_entropy(tg::reshape(model.forward(x), {B * T, model.cfg.vocab}), y).item<double>();
  }
  model.train();
  return total / static_cast<double>(batches);
}

std::string sample(gpt::GPT& model, const std::vector<unsigned char>& vocab, const std::map<unsigned char, std::int64_t>& index,
                   const std::string& prompt, std::int64_t n, tg::nn::SamplingOptions how) {
  tg::NoGradGuard ng;
  model.eval();
  std::vector<std::int64_t> ctx;
  for (unsigned char ch : prompt) {
    auto it = index.find(ch);
    if (it != index.end()) ctx.push_back(it->second);
  }
  if (ctx.empty()) ctx.push_back(0);
  std::string out = prompt;
  // Generation with a KV cache per layer: each new character runs through the model alone
  // against the cached keys and values. When the context is full, the cache restarts from
  // the last half of it (positions from 0 again).
  std::vector<tg::nn::KVCache> caches;
  std::int64_t cached = 0;  // positions in the caches
  auto restart = [&](std::int64_t keep) {
    const auto T = std::min<std::int64_t>(static_cast<std::int64_t>(ctx.size()), std::max<std::int64_t>(1, keep));
    caches.clear();
    cached = T;
    std::vector<std::int64_t> window(ctx.end() - T, ctx.end());
    tg::Tensor x = tg::from_vector(window, {1, T}, {.dtype = tg::DType::i64, .device = model.cfg.device});
    return tg::slice(model.forward_cached(x, caches), 1, T - 1, T);  // [1, 1, V]
  };
  tg::Tensor logits = restart(model.cfg.ctx);
  for (std::int64_t i = 0; i < n; ++i) {
    how.offset = static_cast<std::uint64_t>(i);
    const auto pick = static_cast<std::size_t>(tg::nn::sample_tokens(logits, how).item<std::int64_t>());
    ctx.push_back(static_cast<std::int64_t>(pick));
    out += static_cast<char>(vocab[pick]);
    if (i + 1 == n) break;
    if (cached >= model.cfg.ctx) {
      logits = restart(model.cfg.ctx / 2);
    } else {
      ++cached;
      tg::Tensor x = tg::from_vector(std::vector<std::int64_t>{ctx.back()}, {1, 1},
                                     {.dtype = tg::DType::i64, .device = model.cfg.device});
      logits = model.forward_cached(x, caches);
    }
  }
  model.train();
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  Args a = parse(argc, argv);
  tg::Device dev = a.device == "auto" ? tg::default_device() : tg::Device::parse(a.device);
  const bool gpu = dev.is_cuda();
  auto pick = [](auto v, auto cpu_default, auto gpu_default, bool g) { return v >= 0 ? v : (g ? gpu_default : cpu_default); };

  std::string text = read_corpus(a.data);
  std::vector<unsigned char> vocab;
  {
    std::vector<bool> seen(256, false);
    for (unsigned char ch : text) seen[ch] = true;
    for (int ch = 0; ch < 256; ++ch)
      if (seen[static_cast<std::size_t>(ch)]) vocab.push_back(static_cast<unsigned char>(ch));
  }
  std::map<unsigned char, std::int64_t> index;
  for (std::size_t i = 0; i < vocab.size(); ++i) index[vocab[i]] = static_cast<std::int64_t>(i);
  std::vector<std::int64_t> all(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) all[i] = index[static_cast<unsigned char>(text[i])];
  const std::size_t split = all.size() * 9 / 10;
  std::vector<std::int64_t> train_data(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(split));
  std::vector<std::int64_t> val_data(all.begin() + static_cast<std::ptrdiff_t>(split), all.end());

  gpt::Config cfg;
  cfg.vocab = static_cast<std::int64_t>(vocab.size());
  cfg.ctx = pick(a.ctx, 128, 1024, gpu);
  cfg.layers = pick(a.layers, 2, 6, gpu);
  cfg.d_model = pick(a.d_model, 128, 384, gpu);
  cfg.heads = pick(a.heads, 4, 6, gpu);
  cfg.block = pick(a.block, 32, 64, gpu);
  cfg.dropout = pick(a.dropout, 0.0, 0.1, gpu);
  cfg.attn_dropout = a.attn_dropout;
  cfg.mlp_density = a.mlp_density;
  cfg.mlp_block = pick(a.mlp_block, 32, 64, gpu);
  cfg.recompute = a.recompute;
  if (a.pos != "learned" && a.pos != "rope") throw tg::ValueError("tilegrad-train: --pos takes learned or rope, got " + a.pos);
  if (a.norm != "layer" && a.norm != "rms") throw tg::ValueError("tilegrad-train: --norm takes layer or rms, got " + a.norm);
  cfg.rope = a.pos == "rope";
  cfg.rms_norm = a.norm == "rms";
  if (a.mlp != "gelu" && a.mlp != "swiglu") throw tg::ValueError("tilegrad-train: --mlp takes gelu or swiglu, got " + a.mlp);
  cfg.swiglu = a.mlp == "swiglu";
  if (cfg.swiglu && a.mlp_density < 1.0) throw tg::ValueError("tilegrad-train: --mlp swiglu is dense; drop --mlp-density");
  cfg.window_blocks = gpu ? 4 : 2;
  cfg.device = dev;
  const std::string dtype = a.dtype == "auto" ? (gpu ? "bf16" : "f32") : a.dtype;
  if (dtype != "f32" && dtype != "bf16" && dtype != "f16") {
    throw tg::ValueError("tilegrad-train: --dtype takes f32, bf16 or f16, got " + dtype);
  }
  cfg.dtype = dtype == "bf16" ? tg::DType::bf16 : dtype == "f16" ? tg::DType::f16 : tg::DType::f32;
  tg::set_allow_tf32(a.tf32 != 0);
  const std::int64_t steps = pick(a.steps, 800, 2000, gpu), B = pick(a.batch, 16, 16, gpu), T = cfg.ctx;
  const double lr = pick(a.lr, 3e-3, 1e-3, gpu);
  const tg::nn::SamplingOptions sampling{.temperature = a.temperature, .top_k = a.top_k, .top_p = a.top_p,
                                         .seed = a.seed};
  (void)tg::nn::sample_tokens(tg::zeros({2}), sampling);  // bad sampling flags fail now, not after training
  const std::int64_t eval_every = a.eval_every > 0 ? a.eval_every : std::max<std::int64_t>(1, steps / 10);
  if (cfg.heads <= 0 || cfg.d_model <= 0 || cfg.d_model % cfg.heads)
    throw tg::ValueError("tilegrad-train: --d-model must be a positive multiple of --heads, got --d-model " +
                         std::to_string(cfg.d_model) + " and --heads " + std::to_string(cfg.heads));
  auto check_p = [](const char* flag, double p) {
    if (!(p >= 0.0 && p < 1.0)) {
      std::ostringstream m;
      m << "tilegrad-train: " << flag << " must be in [0, 1), got " << p;
      throw tg::ValueError(m.str());
    }
  };
  check_p("--dropout", cfg.dropout);
  check_p("--attn-dropout", cfg.attn_dropout);
  if (!(cfg.mlp_density > 0.0 && cfg.mlp_density <= 1.0)) {
    std::ostringstream m;
    m << "tilegrad-train: --mlp-density must be in (0, 1], got " << cfg.mlp_density;
    throw tg::ValueError(m.str());
  }
  if (cfg.mlp_density < 1.0) {
    // Block-sparse products tile by powers of two, at least 16 on CUDA (tg::matmul).
    const std::int64_t mb = cfg.mlp_block;
    if (mb < 1 || (mb & (mb - 1)) || cfg.d_model % mb || (gpu && mb < 16))
      throw tg::ValueError("tilegrad-train: --mlp-block must be a power of two" + std::string(gpu ? " >= 16" : "") +
                           " dividing --d-model " + std::to_string(cfg.d_model) + ", got " + std::to_string(mb));
  }
  if (gpu) {
    // The CUDA attention kernels (ops/attention/cuda.cu, check_head_dims): 16-bit inputs run
    // on tensor-core kernels compiled for head dims 32, 64 and 128 only; f32 takes any head
    // dim up to 128. Said here, with the flags, rather than from deep inside the first step.
    const std::int64_t hd = cfg.d_model / cfg.heads;
    const std::string given = "got --d-model " + std::to_string(cfg.d_model) + " / --heads " +
                              std::to_string(cfg.heads) + " = " + std::to_string(hd);
    if (cfg.dtype != tg::DType::f32 && hd != 32 && hd != 64 && hd != 128)
      throw tg::ValueError("tilegrad-train: on CUDA with --dtype " + dtype +
                           " the attention head dim (--d-model / --heads) must be 32, 64 or 128, " + given +
                           " (change --d-model or --heads, or use --dtype f32)");
    if (cfg.dtype == tg::DType::f32 && hd > 128)
      throw tg::ValueError("tilegrad-train: on CUDA with --dtype f32 the attention head dim (--d-model / --heads) must be "
                           "at most 128, " + given + " (change --d-model or --heads)");
  }
  if (static_cast<std::int64_t>(val_data.size()) <= T + 1) throw tg::ValueError("tilegrad-train: corpus too small for --ctx");

  gpt::GPT model(cfg);
  tg::optim::AdamW opt(model.parameters(), {.lr = lr,
                                            .beta1 = 0.9,
                                            .beta2 = 0.95,
                                            .eps = 1e-8,
                                            .weight_decay = 0.1,
                                            .master_weights = a.master_weights});
  std::int64_t start_step = 0;
  std::vector<std::pair<std::string, tg::Tensor>> scaler_state;  // f16's loss scale, when resumed
  std::vector<std::pair<std::string, tg::Tensor>> ema_state;     // the weights' average, when resumed
  if (a.resume) {
    std::map<std::string, std::string> meta;
    auto tensors = tg::nn::load_tensors(a.checkpoint, &meta);
    std::vector<std::pair<std::string, tg::Tensor>> opt_state;
    for (auto& [n, t] : tensors) {
      if (n.rfind("optim.", 0) == 0) opt_state.emplace_back(n.substr(6), t);
      if (n.rfind("scaler.", 0) == 0) scaler_state.emplace_back(n.substr(7), t);
      if (n.rfind("ema.", 0) == 0) ema_state.emplace_back(n.substr(4), t);
    }
    try {
      tg::nn::load(model, a.checkpoint, /*strict=*/false);
    } catch (const tg::ShapeError& e) {
      // The usual cause: other model flags than the run that wrote the checkpoint.
      const auto it = meta.find("config");
      throw tg::ValueError(std::string(e.what()) + "; the checkpoint was written with " +
                           (it != meta.end() ? it->second : std::string("unknown flags")) + ", this run has " +
                           config_flags(cfg, dtype));
    }
    opt.load_state(opt_state);
    start_step = std::stoll(meta.at("step"));
    std::cout << "resumed from " << a.checkpoint << " at step " << start_step << "\n";
  }

  std::cout << "tilegrad-train on " << dev << ": " << text.size() << " characters from " << a.data << ", vocabulary "
            << cfg.vocab << "\n"
            << "model: " << cfg.layers << " layers, d_model " << cfg.d_model << ", " << cfg.heads << " heads, context "
            << T << ", " << model.num_parameters() << " parameters, " << tg::dtype_name(cfg.dtype)
            << (gpu && cfg.dtype == tg::DType::f32 && tg::allow_tf32() ? " (TF32 matmuls)" : "") << "\n"
            << "attention pattern (block " << cfg.block << "): " << gpt::attention_pattern(cfg, T) << "\n"
            << mlp_summary(model) << (cfg.recompute ? "; activation checkpointing per block" : "") << "\n"
            << "training " << steps << " steps of " << B << " x " << T << " tokens, peak lr " << lr << "\n";

  Batcher train{train_data, a.seed}, val{val_data, a.seed + 1};
  train.draw = static_cast<std::uint64_t>(start_step);
  std::ofstream csv(a.csv, a.resume ? std::ios::app : std::ios::trunc);
  if (!a.resume) csv << "step,train_loss,val_loss,lr,tokens_per_s\n";
  // The bar redraws in place on a terminal; in a log it prints a line at each evaluation.
  std::optional<tg::ProgressBar> bar;
  if (!a.quiet) {
    bar.emplace(steps, tg::ProgressOptions{.unit = "tok", .units_per_step = static_cast<double>(B * T)});
  }
  auto t0 = std::chrono::steady_clock::now();
  double ema = 0, val_loss = NAN, tok_s = 0;
  std::vector<double> step_s;  // training step times (between loss reads), evaluation excluded
  std::uint64_t allocs_after_first = 0;
  // Profiled steps: after ten warm-up steps (or as many as the run has), so that pool
  // growth and first-call table builds do not count.
  const std::int64_t prof_begin = std::min(start_step + 10, steps), prof_end = std::min(prof_begin + a.profile, steps);
  std::unique_ptr<tg::Profiler> profiler;
  std::optional<tg::Profile> profile;
  auto last_read = t0;
  auto eval_due = [&](std::int64_t s) { return (s + 1) % eval_every == 0 || s + 1 == steps; };
  // Step s's loss, read once step s + 1 is queued: reading it at once (loss.item()) would
  // make the host wait for the GPU to finish step s before it queues any of step s + 1,
  // and the GPU would idle while the first kernels of each step are launched.
  auto report = [&](std::int64_t s, double l, double s_lr) {
    ema = s == start_step ? l : 0.95 * ema + 0.05 * l;
    if (s == start_step && gpu) allocs_after_first = tg::memory_stats(dev).device_allocs;
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    if (s < prof_begin || s >= prof_end) step_s.push_back(std::chrono::duration<double>(now - last_read).count());
    last_read = now;
    tok_s = static_cast<double>((s - start_step + 1) * B * T) / elapsed;
    const bool eval_now = eval_due(s);
    if (eval_now) val_loss = evaluate(model, val, B, T, a.eval_batches);
    if (eval_now || s == start_step) csv << s + 1 << "," << l << "," << val_loss << "," << s_lr << "," << tok_s << "\n";
    if (bar) {
      bar->update(s + 1, {{"loss", ema}, {"val", val_loss}});
      if (eval_now) bar->print_line();
    }
  };
  // f16 training needs loss scaling (bf16 and f32 do not).
  std::unique_ptr<tg::optim::GradScaler> scaler;
  std::int64_t skipped = 0;
  if (cfg.dtype == tg::DType::f16) {
    scaler = std::make_unique<tg::optim::GradScaler>();
    if (!scaler_state.empty()) scaler->load_state(scaler_state);
  }
  std::unique_ptr<tg::optim::ExponentialMovingAverage> weights_ema;
  if (a.ema > 0) {
    weights_ema = std::make_unique<tg::optim::ExponentialMovingAverage>(model.parameters(), a.ema);
    if (!ema_state.empty()) weights_ema->load_state(ema_state);
  }
  tg::PendingItem pending;  // the previous step's loss, on its way to the host
  bool has_pending = false;
  double pending_lr = 0;
  for (std::int64_t step = start_step; step < steps; ++step) {
    if (step == prof_begin && prof_end > prof_begin) profiler = std::make_unique<tg::Profiler>();
    double cur_lr = tg::optim::warmup_cosine_lr(step, std::min<std::int64_t>(100, steps / 10), steps, lr, lr * 0.1);
    opt.set_lr(cur_lr);
    tg::Tensor x, y;
    train.next(B, T, dev, x, y);
    tg::Tensor loss = tg::cross_entropy(tg::reshape(model.forward(x), {B * T, cfg.vocab}), y);
    opt.zero_grad();
    if (scaler) {
      // f16: the loss scaled so that small gradients do not underflow; a step with an
      // overflow is skipped (reading one number back: the host waits for the GPU here).
      scaler->scale(loss).backward();
      scaler->clip_grad_norm_(opt, 1.0);
      skipped += scaler->step(opt) ? 0 : 1;
      scaler->update();
    } else {
      loss.backward();
      tg::optim::clip_grad_norm_(opt.params(), 1.0);  // the norm stays on the device: no wait
      opt.step();
    }
    if (weights_ema) weights_ema->update();
    tg::PendingItem current = loss.item_async();
    if (profiler && step + 1 == prof_end) {
      profile = profiler->stop();
      profiler.reset();
    }
    if (has_pending) report(step - 1, pending.get<double>(), pending_lr);
    // An evaluation step reads its loss at once: the evaluation must see this step's
    // weights, not the next step's.
    has_pending = !eval_due(step) && !a.sync_loss;
    if (has_pending) {
      pending = current;
      pending_lr = cur_lr;
    } else {
      report(step, current.get<double>(), cur_lr);
    }
  }
  if (has_pending) report(steps - 1, pending.get<double>(), pending_lr);
  if (bar) bar->close();

  if (start_step >= steps) {
    // Nothing to train (--resume at or past --steps): evaluate and sample the checkpoint.
    Batcher held_out{val_data, a.seed + 1};
    std::cout << "the checkpoint is at step " << start_step << " of " << steps
              << ": no training; held-out loss " << evaluate(model, held_out, B, T, a.eval_batches)
              << " nats/char\n\n--- sample ---\n"
              << sample(model, vocab, index, a.prompt, a.sample_len, sampling) << "\n--------------\n";
    return 0;
  }
  std::map<std::string, std::string> meta{
      {"step", std::to_string(steps)}, {"format", "pt"}, {"config", config_flags(cfg, dtype)}};
  auto all_tensors = model.named_parameters();
  for (auto& b : model.named_buffers()) all_tensors.push_back(b);  // the sparse MLP's layouts
  for (auto& [n, t] : opt.state()) all_tensors.emplace_back("optim." + n, t);
  if (scaler)
    for (auto& [n, t] : scaler->state()) all_tensors.emplace_back("scaler." + n, t);
  if (weights_ema)
    for (auto& [n, t] : weights_ema->state()) all_tensors.emplace_back("ema." + n, t);
  tg::nn::save_tensors(all_tensors, a.checkpoint, meta);

  std::cout << "held-out loss: " << val_loss << " nats/char\n";
  if (weights_ema) {
    // Both on the same held-out batches.
    Batcher last_val{val_data, a.seed + 2}, ema_val{val_data, a.seed + 2};
    const double last = evaluate(model, last_val, B, T, a.eval_batches);
    double averaged;
    {
      tg::optim::ExponentialMovingAverage::Swap swap(*weights_ema);
      averaged = evaluate(model, ema_val, B, T, a.eval_batches);
    }
    std::cout << "held-out loss of the weights' moving average (decay " << a.ema << "): " << averaged
              << " nats/char (last weights on the same batches: " << last << ")\n";
  }
  if (scaler) {
    std::cout << "f16 loss scale " << scaler->get_scale() << ", " << skipped
              << " step(s) skipped for inf / NaN gradients\n";
  }
  std::cout << "throughput: " << tok_s << " tokens/s overall";
  if (step_s.size() > 10) {
    // Steady state: the median step after the first ten (pool warm-up, pattern tables).
    std::vector<double> steady(step_s.begin() + 10, step_s.end());
    std::nth_element(steady.begin(), steady.begin() + static_cast<std::ptrdiff_t>(steady.size() / 2), steady.end());
    const double med = steady[steady.size() / 2];
    std::cout << ", " << static_cast<double>(B * T) / med << " tokens/s steady state (median step " << med * 1e3
              << " ms)";
  }
  std::cout << "\n";
  if (profile) {
    std::cout << "profile of " << (prof_end - prof_begin) << " training steps (kernels by device time):\n"
              << profile->table(25);
  }
  if (gpu) {
    tg::MemoryStats s = tg::memory_stats(dev);
    std::cout << "memory pool: " << s << "\n"
              << "device allocations after the first step: " << (s.device_allocs - allocs_after_first) << "\n";
  }
  std::cout << "loss curve: " << a.csv << ", checkpoint: " << a.checkpoint << "\n\n--- sample ---\n"
            << sample(model, vocab, index, a.prompt, a.sample_len, sampling) << "\n--------------\n";
  return 0;
} catch (const tg::Error& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
