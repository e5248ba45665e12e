// Choice of the CUDA kernels behind the bf16 / f16 attention forward and backward,
// overridable so that tests and benchmarks can run both on the same inputs.
#pragma once

#include <cstdint>

namespace tg::ops::attn {

/// Mma: the mma.sync kernel (sm_80+, every option). Wgmma: the Hopper warpgroup-MMA kernel
/// wherever it applies (compute capability 9.0, D = Dv of 64 or 128), the mma.sync one
/// elsewhere. Auto: the environment variable TG_ATTENTION_FWD (`mma` or `wgmma`) when set,
/// else the library's default (kDefaultFwdKernel).
enum class FwdKernel { Auto, Mma, Wgmma };

/// What Auto means without TG_ATTENTION_FWD: the Hopper kernel, 10-44% faster than the
/// mma.sync one on an H200 (bench_attention, both run in one session).
constexpr FwdKernel kDefaultFwdKernel = FwdKernel::Wgmma;

/// Forces the kernel of later forwards (process-wide; Auto restores the default).
void set_fwd_kernel(FwdKernel k);

/// The choice in effect, Auto resolved: Mma or Wgmma. Throws tg::ValueError naming
/// TG_ATTENTION_FWD when it holds anything but `mma` or `wgmma`.
FwdKernel fwd_kernel();

/// Schedule of the Hopper forward's steps (without the general transform). Serial: a
/// warpgroup computes S = Q Kᵀ, its softmax, then O += P V, each waiting on the one before.
/// Overlap: tile j's S product and tile j-1's P V are issued together and tile j's softmax
/// runs while P V is on the tensor cores (two products in flight per warpgroup; at D 128
/// one CTA an SM, by its registers). Auto: the environment variable
/// TG_ATTENTION_FWD_SCHEDULE (`serial` or `overlap`) when set, else kDefaultFwdSchedule.
enum class FwdSchedule { Auto, Serial, Overlap };

/// What Auto means without TG_ATTENTION_FWD_SCHEDULE. Overlap measured (H100, H200): D 64 within
/// 3% of Serial, D 128 22-26% slower forward (one CTA an SM by its registers, not two).
constexpr FwdSchedule kDefaultFwdSchedule = FwdSchedule::Serial;

/// Forces the schedule of later Hopper forwards (process-wide; Auto restores the default).
void set_fwd_schedule(FwdSchedule s);

/// The schedule in effect, Auto resolved: Serial or Overlap. Throws tg::ValueError naming
/// TG_ATTENTION_FWD_SCHEDULE when it holds anything but `serial` or `overlap`.
FwdSchedule fwd_schedule();

/// How the Hopper forward's plain serial steps (no general transform, 64-key tiles) bound
/// their probabilities. Max: each tile's row maxima (the reference moves by more than
/// kMaxSlack only). Sums: whole tiles take P against the kept references directly and check
/// each lane's partial row sums instead (at most 2^kMaxSlack: no reference would move, and the
/// result is Max's); a warp whose sums exceed that (a reference would move, P overflowed, NaN)
/// recomputes its rows' scores by mma.sync and takes the maxima. Masked tiles and a row's first
/// scores keep the maxima. Auto: the environment variable TG_ATTENTION_FWD_SOFTMAX (`max` or
/// `sums`) when set, else default_fwd_softmax of the head dim.
enum class FwdSoftmax { Auto, Max, Sums };

/// What Auto means without TG_ATTENTION_FWD_SOFTMAX at head dim d. Sums measured against Max in
/// one process (H100, 7 rounds, medians): forward 1.04-1.07x at D 64 on every plain pattern;
/// at D 128 0.94-1.03x (its two-warpgroup kernel spills 68 bytes), so Max there.
constexpr FwdSoftmax default_fwd_softmax(std::int64_t d) { return d == 64 ? FwdSoftmax::Sums : FwdSoftmax::Max; }

/// Forces the softmax of later Hopper forwards (process-wide; Auto restores the default).
void set_fwd_softmax(FwdSoftmax s);

/// The choice in effect at head dim d, Auto resolved: Max or Sums. Throws tg::ValueError
/// naming TG_ATTENTION_FWD_SOFTMAX when it holds anything but `max` or `sums`.
FwdSoftmax fwd_softmax(std::int64_t d);

/// Key tiles of the Hopper forward's 128-row query tiles (without the general transform):
/// K64 (64 keys) or K128 (one m64n128 S product a warpgroup, half the steps; one CTA an SM
/// by its registers). Auto: the environment variable TG_ATTENTION_FWD_KEYS (`64` or `128`)
/// when set, else kDefaultFwdKeys.
enum class FwdKeys { Auto, K64, K128 };

/// What Auto means without TG_ATTENTION_FWD_KEYS. K128 measured (H100, H200): 3-27% slower forward
/// on dense, causal, window and variable patterns at both head dims.
constexpr FwdKeys kDefaultFwdKeys = FwdKeys::K64;

/// Forces the key tiles of later Hopper forwards (process-wide; Auto restores the default).
void set_fwd_keys(FwdKeys k);

/// The setting in effect, Auto resolved: K64 or K128. Throws tg::ValueError naming
/// TG_ATTENTION_FWD_KEYS when it holds anything but `64` or `128`.
FwdKeys fwd_keys();

/// Query tiles of the Hopper forward with key tiles of 128 at D 64 (plain scores): R128 or
/// R192 (three warpgroups, 12 warps an SM). Auto: the environment variable
/// TG_ATTENTION_FWD_ROWS (`128` or `192`) when set, else kDefaultFwdRows.
enum class FwdRows { Auto, R128, R192 };

/// What Auto means without TG_ATTENTION_FWD_ROWS. R192 measured (H100, H200): with 128-key tiles
/// 9-15% faster forward on a dense pattern, 11-24% slower on window and variable ones; the
/// 64-row tiles D 64 takes by default are as fast on dense and faster on the others.
constexpr FwdRows kDefaultFwdRows = FwdRows::R128;

/// Forces the query tiles of later Hopper forwards with 128-key tiles (process-wide; Auto
/// restores the default).
void set_fwd_rows(FwdRows r);

/// The setting in effect, Auto resolved: R128 or R192. Throws tg::ValueError naming
/// TG_ATTENTION_FWD_ROWS when it holds anything but `128` or `192`.
FwdRows fwd_rows();

/// The backward's kv pass. Mma: the mma.sync kernel (every option). Wgmma: the Hopper
/// kernel wherever it applies (compute capability 9.0, D = Dv of 64 or 128, dQ by atomics,
/// i.e. not deterministic), mma.sync elsewhere. Auto: the
/// environment variable TG_ATTENTION_BWD (`mma` or `wgmma`) when set, else
/// kDefaultBwdKernel.
enum class BwdKernel { Auto, Mma, Wgmma };

/// What Auto means without TG_ATTENTION_BWD: the Hopper kv pass (TMA stages, dQ by TMA
/// reductions), faster forward + backward than the mma.sync one on an H200
/// (bench/RESULTS.md); both accumulate dQ atomically, so determinism is unchanged (deterministic mode takes
/// the mma.sync kv pass and the q pass).
constexpr BwdKernel kDefaultBwdKernel = BwdKernel::Wgmma;

/// Forces the kv-pass kernel of later backwards (process-wide; Auto restores the default).
void set_bwd_kernel(BwdKernel k);

/// The choice in effect, Auto resolved. Throws tg::ValueError naming TG_ATTENTION_BWD when
/// it holds anything but `mma` or `wgmma`.
BwdKernel bwd_kernel();

/// How the Hopper kv pass at D 128 on 128-key tiles (without the general transform) splits
/// dQ = dS K between its two warpgroups. Keys: each computes all D columns over its own 64
/// keys (two f32 partials a step reduced into the workspace). Columns: each computes half
/// the columns over all 128 keys from both warpgroups' dSᵀ (double-buffered, one CTA
/// barrier a step; on either BwdStep): half the reduction traffic and 32 fewer accumulator
/// registers. Auto: the environment variable TG_ATTENTION_BWD_DQ (`keys` or `columns`) when
/// set, else kDefaultBwdDq.
enum class BwdDq { Auto, Keys, Columns };

/// What Auto means without TG_ATTENTION_BWD_DQ. Columns measured within the run-to-run spread
/// of Keys (H200: +4% causal, -1% window; H100: -5 to -8% causal and dense).
constexpr BwdDq kDefaultBwdDq = BwdDq::Keys;

/// Forces the split of later Hopper kv passes (process-wide; Auto restores the default).
void set_bwd_dq(BwdDq s);

/// The split in effect, Auto resolved: Keys or Columns. Throws tg::ValueError naming
/// TG_ATTENTION_BWD_DQ when it holds anything but `keys` or `columns`.
BwdDq bwd_dq();

/// Who issues the Hopper kv pass's copies on 128-key tiles with plain scores (no dropout).
/// Uniform: the two computing warpgroups themselves (up to 255 registers a thread), dQ split
/// as BwdDq says, steps ordered as BwdStep says. Producer: warp specialisation as in
/// FlashAttention 3: a third warpgroup at 24 registers refills three query stages and adds the
/// dQ tiles to the workspace while the computing ones run at 240, on the pipelined step; dQ by
/// columns at D 128 (dQ by keys needs 255 registers there), by keys at D 64, where the
/// producer also makes 128-key tiles the choice wherever 64-key tiles save no work (BwdDq and
/// BwdStep do not apply; TileHeight does). Lists: Producer at D 128; at D 64 the producer where
/// producer_pays_at_d64 says so from the problem's kv lists, else Uniform (also wherever the
/// rule is not evaluated: a forced TileHeight, D != Dv, the general transform, dropout). Auto:
/// the environment variable TG_ATTENTION_BWD_WARPS (`uniform` or `producer`) when set, else
/// default_bwd_warps(D).
enum class BwdWarps { Auto, Uniform, Producer, Lists };

/// What Auto means without TG_ATTENTION_BWD_WARPS at head dim d. D 128: Producer, measured
/// against Uniform (dQ by keys, pipelined) in the same process (H100, 7 rounds, medians):
/// backward 1.13x dense, 1.10x causal, 1.08x window, 1.10x variable blocks; other patterns
/// keep their kernels (bench/RESULTS.md, twenty-third session). D 64: Lists. The producer
/// (with K and V in registers) was 1.05x on dense and causal but 0.94-0.95x on window and
/// variable blocks (twenty-fourth session); Lists took it on dense (backward 1.08x) and causal
/// (1.06x) and kept the uniform kernel on the window, random blocks and variable blocks (H100,
/// 7 rounds, twenty-sixth session).
constexpr BwdWarps default_bwd_warps(std::int64_t d) { return d == 128 ? BwdWarps::Producer : BwdWarps::Lists; }

/// Whether the producer kv pass at D 64 is expected to beat the uniform one on 64-key tiles, from
/// the kv lists of both: the 128-key tiles' area (wide_entries x 64 x 128) within 2% of the
/// 64-key tiles' (narrow_entries x 64 x 64), and no 128-key entry that checks the pattern element
/// by element (wide_pattern_checked: entries with kCheckPattern; the 64-key tiles may need none
/// where blocks are multiples of 64 long). Fitted to the bench's patterns (bench/RESULTS.md,
/// twenty-fifth session): true for dense and causal, false for the causal window (5.9% more
/// area) and for variable blocks (3% of entries checked). False without entries.
bool producer_pays_at_d64(std::int64_t wide_entries, std::int64_t narrow_entries, std::int64_t wide_pattern_checked);

/// Forces the split of work of later Hopper kv passes (process-wide; Auto restores the
/// default).
void set_bwd_warps(BwdWarps w);

/// The choice in effect at head dim d, Auto resolved: Uniform, Producer or (forced) Lists. Throws
/// tg::ValueError naming TG_ATTENTION_BWD_WARPS when it holds anything but `uniform` or
/// `producer`.
BwdWarps bwd_warps(std::int64_t d);

/// Where the producer warpgroup's kv pass at D 64 reads K and V as the A operands of Sᵀ and dPᵀ.
/// Shared: shared memory. Registers: fragments loaded once a pass (32 registers a thread), half
/// those products' shared-memory traffic. Auto: the environment variable TG_ATTENTION_BWD_OPERANDS
/// (`shared` or `registers`) when set, else kDefaultBwdOperands.
enum class BwdOperands { Auto, Shared, Registers };

/// What Auto means without TG_ATTENTION_BWD_OPERANDS: Registers, measured against Shared in the
/// same rounds (H100, 5 rounds, medians of the backward against the D 64 default): 1.048x
/// against 1.040x dense, 1.050x against 0.993x causal, 0.950x against 0.912x window, 0.941x
/// against 0.890x variable blocks (bench/RESULTS.md, twenty-fourth session).
constexpr BwdOperands kDefaultBwdOperands = BwdOperands::Registers;

/// Forces the operands of later D 64 producer kv passes (process-wide; Auto restores the default).
void set_bwd_operands(BwdOperands o);

/// The choice in effect, Auto resolved: Shared or Registers. Throws tg::ValueError naming
/// TG_ATTENTION_BWD_OPERANDS when it holds anything but `shared` or `registers`.
BwdOperands bwd_operands();

/// Order of the Hopper kv pass's products within a step (plain scores; dQ by keys or columns). Serial:
/// Sᵀ and dPᵀ waited together, dK issued before dQ, every product waited at the step's end.
/// Pipelined: Pᵀ computed and dV issued while dPᵀ runs; dK issued after dQ and left running
/// through dQ's stores (waited before the step's stage is released). Auto: the environment variable
/// TG_ATTENTION_BWD_STEP (`serial` or `pipelined`) when set, else kDefaultBwdStep.
enum class BwdStep { Auto, Serial, Pipelined };

/// What Auto means without TG_ATTENTION_BWD_STEP. Pipelined, measured against Serial in the same
/// process (H100, 15 rounds, medians): backward 1.02-1.03x (D 64) and 1.04x (D 128) on causal and
/// window, 1.03x on variable blocks, 1.00-1.02x on dense and random (dQ by keys). The general
/// transform (bias, soft cap, dropout, masks) keeps the serial step.
constexpr BwdStep kDefaultBwdStep = BwdStep::Pipelined;

/// Forces the step order of later Hopper kv passes (process-wide; Auto restores the default).
void set_bwd_step(BwdStep s);

/// The order in effect, Auto resolved: Serial or Pipelined. Throws tg::ValueError naming
/// TG_ATTENTION_BWD_STEP when it holds anything but `serial` or `pipelined`.
BwdStep bwd_step();

/// Where the Hopper kv pass at D 128 on 64-key tiles (plain scores without dropout, the pipelined
/// step) stages each step's dQ for its TMA reductions into the f32 workspace. Tile: a 32 KiB tile of
/// its own (138 KiB a CTA: one CTA of four warps an SM). Stage: the step's Q and dO tiles once the
/// products that read them are done (106 KiB: two CTAs an SM, so that one's scalar work, waits and
/// start-up run under the other's products); the stage is then refilled only after the reductions
/// have read it. Dropout keeps the tile (its staged kernel has not run on a GPU yet). Auto: the
/// environment variable TG_ATTENTION_BWD_DQ_STAGING (`tile` or `stage`) when set, else
/// kDefaultBwdDqStaging.
enum class BwdDqStaging { Auto, Tile, Stage };

/// What Auto means without TG_ATTENTION_BWD_DQ_STAGING: Stage, measured against Tile in the same
/// process (H100, 5 rounds): random 10% of 64-blocks at D 128 fwd+bwd 1.155x [1.132, 1.173], the
/// kv pass 583 -> 458 µs (ncu); the patterns on 128-key tiles do not run it (bench/RESULTS.md,
/// forty-fourth session).
constexpr BwdDqStaging kDefaultBwdDqStaging = BwdDqStaging::Stage;

/// Forces the staging of later D 128 64-key kv passes (process-wide; Auto restores the default).
void set_bwd_dq_staging(BwdDqStaging s);

/// The staging in effect, Auto resolved: Tile or Stage. Throws tg::ValueError naming
/// TG_ATTENTION_BWD_DQ_STAGING when it holds anything but `tile` or `stage`.
BwdDqStaging bwd_dq_staging();

/// Which Hopper kernels run dropout without a bias or soft cap (scale > 0, decisions drawn
/// ahead: sk a multiple of 8). General: the general transform's kernels (every option;
/// the kv pass on the serial step, two CTAs an SM at D 64). Plain: the plain-score kernels
/// with dropout compiled in (the forward's whole tiles without selects, the pipelined kv
/// step, three CTAs an SM at D 64). Auto: the environment variable TG_ATTENTION_DROPOUT
/// (`general` or `plain`) when set, else kDefaultDropoutKernels.
enum class DropoutKernels { Auto, General, Plain };

/// What Auto means without TG_ATTENTION_DROPOUT: Plain, measured faster on an H100 (causal
/// dropout 0.1, fwd+bwd 1.14x at D 64, 1.05x at D 128; bench/RESULTS.md).
constexpr DropoutKernels kDefaultDropoutKernels = DropoutKernels::Plain;

/// Forces the kernels of later dropout calls (process-wide; Auto restores the default).
void set_dropout_kernels(DropoutKernels k);

/// The choice in effect, Auto resolved: General or Plain. Throws tg::ValueError naming
/// TG_ATTENTION_DROPOUT when it holds anything but `general` or `plain`.
DropoutKernels dropout_kernels();

/// The order in which the CUDA forwards' CTAs take their items (one item a CTA: a query tile's
/// key tiles). Rows: by row, the longest lists first within a row, so that a row's tiles run
/// together and share its K / V in L2. Bands: the rows cut into bands of consecutive rows, each
/// of at least kLaunchBandWaves items per SM but of no more rows than keep their K and V within
/// half the L2 cache, the longest lists first within a band: where lists differ in length
/// (causal), the last items to start are the shortest ones of many rows, not one row's, so
/// that the grid ends evenly. The kv passes' column lists keep the order by row: bands there
/// measured 1.28-1.36x slower backwards on causal patterns (their Q, dO and f32 dQ rows
/// leave L2; their own order is KvOrder). Auto: the environment variable TG_ATTENTION_ORDER
/// (`rows` or `bands`) when set, else kDefaultLaunchOrder.
enum class LaunchOrder { Auto, Rows, Bands };

/// What Auto means without TG_ATTENTION_ORDER. Measured against Rows (H100, 7 rounds in one
/// process, bench/RESULTS.md 12-06 thirty-first session): the forward 1.05-1.11x on causal,
/// window, variable block-causal, dropout and soft-cap patterns at D 64 and 128, dense even,
/// random 10% 1.02x at D 64 and 0.94-0.96x at D 128 (its rows' K / V reuse in L2 counts more
/// there than the end of the grid). One band of every row (no L2 bound) lost 16% on random at
/// D 128; bands within a third of the L2 gained nothing over a half. (A greedy list schedule
/// of the causal forward's items, lengths 2..64 key tiles in every row, 264 CTAs at once at
/// D 128, ends 1.15x after the mean CTA by rows, 1.03x in these bands, as on dense:
/// bench/attention_lists.)
constexpr LaunchOrder kDefaultLaunchOrder = LaunchOrder::Bands;

/// Items of a band per SM of the device (Bands).
constexpr int kLaunchBandWaves = 8;

/// Forces the launch order of later calls' tile lists (process-wide; Auto restores the default).
void set_launch_order(LaunchOrder o);

/// The order in effect, Auto resolved: Rows or Bands. Throws tg::ValueError naming
/// TG_ATTENTION_ORDER when it holds anything but `rows` or `bands`.
LaunchOrder launch_order();

/// The order of the kv passes' items (a key tile's query tiles). Rows: by kv row, the longest
/// lists first within a row (LaunchOrder's Rows). Tail: the same, but the last rows holding
/// kKvTailWaves items per SM in one band, longest lists first, so that the grid ends on short
/// lists (a greedy list schedule of the causal kv pass, 132 CTAs at once: 1.07x the mean CTA
/// by rows, 1.01x with the tail; bench/attention_lists). Auto: the environment variable TG_ATTENTION_KV_ORDER (`rows`
/// or `tail`) when set, else kDefaultKvOrder.
enum class KvOrder { Auto, Rows, Tail };

/// What Auto means without TG_ATTENTION_KV_ORDER. Tail measured against Rows (H100, 7 rounds
/// in one process): the backward 1.03-1.06x on causal, dropout and soft-cap patterns at D 64
/// and 128, 1.00-1.03x on window, random and variable blocks, dense even; per kernel (ncu),
/// the causal kv pass 1392 -> 1344 µs at D 128, 872 -> 836 µs at D 64.
constexpr KvOrder kDefaultKvOrder = KvOrder::Tail;

/// Items of the kv passes' last band per SM of the device (Tail).
constexpr int kKvTailWaves = 2;

/// Forces the kv passes' order of later calls' tile lists (process-wide; Auto restores the default).
void set_kv_order(KvOrder o);

/// The order in effect, Auto resolved: Rows or Tail. Throws tg::ValueError naming
/// TG_ATTENTION_KV_ORDER when it holds anything but `rows` or `tail`.
KvOrder kv_order();

/// How the backward's kernels follow each other: the delta pass, the Hopper kv pass and the dQ
/// conversion. Programmatic: programmatic dependent launches (ops/cuda_pdl.cuh), so that each is
/// dispatched onto the SMs the previous one's last CTAs leave, the kv pass loading its K and V
/// before it waits for the delta pass's outputs. Plain: ordinary launches. Auto: the environment
/// variable TG_ATTENTION_PDL (`off` or `on`) when set, else kDefaultLaunchOverlap.
enum class LaunchOverlap { Auto, Plain, Programmatic };

/// What Auto means without TG_ATTENTION_PDL. Programmatic against Plain (H200, 25 rounds in one
/// process, bench/RESULTS.md 12-06 thirty-fifth session): the backward 0.999-1.012x over dense,
/// causal, window, variable-block, dropout and soft-cap patterns at D 64 and 128, a median of
/// about 1.003x; what it saves is the dispatch of two kernels and the kv pass's K / V loads.
constexpr LaunchOverlap kDefaultLaunchOverlap = LaunchOverlap::Programmatic;

/// Forces how later backward calls launch (process-wide; Auto restores the default).
void set_launch_overlap(LaunchOverlap o);

/// The setting in effect, Auto resolved: Plain or Programmatic. Throws tg::ValueError naming
/// TG_ATTENTION_PDL when it holds anything but `off` or `on`.
LaunchOverlap launch_overlap();

/// How the producer kv pass at D 64 (BwdWarps) computes dQ = dS K. Keys: each computing
/// warpgroup computes all 64 columns over its own 64 keys and hands its f32 tile to the
/// reduction thread every step (two 16 KiB reductions a step). Turns: the warpgroups store
/// their dSᵀ into a buffer of two (one barrier between them a step) and take turns computing
/// the whole dQ over all 128 keys, the one of step s's parity on step s: one reduction a step,
/// half the L2 traffic of the dQ stream, which made that kernel L2-bound (bench/RESULTS.md,
/// thirty-sixth session: L2 throughput 70.8%). Auto: the environment variable
/// TG_ATTENTION_BWD_DQ_TURNS (`off` or `on`) when set, else kDefaultProducerDq.
enum class ProducerDq { Auto, Keys, Turns };

/// What Auto means without TG_ATTENTION_BWD_DQ_TURNS: Turns (H100, thirty-eighth session, 17
/// rounds: backward 1.037x dense, 1.021x causal, 1.012x block-causal, 1.009x window at D 64, where
/// the producer runs; ncu: the causal kv pass 988 µs against 1.06 ms, L2 throughput 53% against 71%).
constexpr ProducerDq kDefaultProducerDq = ProducerDq::Turns;

/// Forces the setting of later D 64 producer kv passes (process-wide; Auto restores the default).
void set_producer_dq(ProducerDq s);

/// The setting in effect, Auto resolved: Keys or Turns. Throws tg::ValueError naming
/// TG_ATTENTION_BWD_DQ_TURNS when it holds anything but `off` or `on`.
ProducerDq producer_dq();

/// Heights of the tensor-core kernels' tiles: the Hopper forward's query tiles and the kv
/// passes' key tiles, 128 (Full) or 64 (Half, patterns sparse at 64 granularity: a 128 tile
/// steps through the union of two blocks' lists). Auto: the environment variable
/// TG_ATTENTION_TILES (`full` or `half`) when set, else chosen per problem from its tile
/// lists (Half where its lists hold at most 3/4 of the Full lists' work), except at D 64
/// without the general transform (kv pass) and at D 64 with 64-key tiles (Hopper forward),
/// which take Half for every pattern (measured faster there).
enum class TileHeight { Auto, Full, Half };

/// Forces the tile height of later calls (process-wide; Auto restores the per-problem
/// choice). For benchmarks and tests.
void set_tile_height(TileHeight h);

/// The setting in effect, the environment applied: Full, Half, or Auto (choose per
/// problem). Throws tg::ValueError naming TG_ATTENTION_TILES when it holds anything but
/// `full` or `half`.
TileHeight tile_height();

/// Kernel paths the CUDA backend counts as it launches them, so that tests check which one ran.
enum class Path {
  WgmmaFwd,           ///< forwards run by the Hopper kernel
  WgmmaFwdNarrow,     ///< of those, the ones with 64-row query tiles
  WgmmaFwdOverlap,    ///< Hopper forwards on the overlapped schedule (FwdSchedule)
  WgmmaFwdSums,       ///< Hopper forwards bounding P by row sums (FwdSoftmax::Sums)
  WgmmaFwdWideKeys,   ///< Hopper forwards on key tiles of 128 (FwdKeys)
  WgmmaFwdTall,       ///< Hopper forwards on 192-row query tiles (FwdRows)
  WgmmaBwd,           ///< backwards whose kv pass ran the Hopper kernel
  NarrowKv,           ///< backwards whose kv pass (either kernel) ran on 64-key tiles
  WgmmaBwdDqColumns,  ///< Hopper kv passes with dQ by columns (BwdDq)
  WgmmaBwdPipelined,  ///< Hopper kv passes with the pipelined step (BwdStep)
  WgmmaBwdProducer,   ///< Hopper kv passes with the producer warpgroup (BwdWarps)
  WgmmaBwdRegKV,      ///< of those, the ones with K and V as register operands (BwdOperands)
  DropoutDrawn,       ///< dropout decisions drawn ahead of a Hopper forward or kv pass
  DropoutKept,        ///< Hopper forwards that handed their decisions to the backward
  DropoutRead,        ///< Hopper kv passes that read the forward's decisions
  DropoutPlainFwd,    ///< Hopper forwards with dropout on the plain-score kernel (DropoutKernels)
  DropoutPlainBwd,    ///< Hopper kv passes with dropout on the plain-score kernel
  ProgrammaticBwd,    ///< backwards launched programmatically (LaunchOverlap)
  ProducerDqTurns,    ///< D 64 producer kv passes whose warpgroups take turns at dQ (ProducerDq)
  WgmmaBwdDqInStage,  ///< D 128 64-key Hopper kv passes staging dQ in the step's stage (BwdDqStaging)
  DqPass,             ///< backwards whose dQ ran as a pass of its own (no atomics: deterministic, f32, ...)
  kCount
};

/// Launches of `path` since the process started.
std::int64_t launches(Path path);

/// Counts one launch of `path` (called by the CUDA backend).
void note_launch(Path path);

}  // namespace tg::ops::attn
