// Fused single-pass update rules for XLA:CPU, called through JAX's FFI (jax.ffi.ffi_call).
//
// One handler, `TrainlabFusedUpdate`, runs one update rule over many leaves in one call. Per
// element it reads the gradient, the rule's state and (in the "apply" form) the parameter ONCE and
// writes the new state and the new parameter (apply form, research.optim.fused.update_and_apply)
// or the delta (delta form, TRAINLAB_FUSED=delta) ONCE, where XLA:CPU emits one loop per output
// buffer and so reads Adam's p, g, m, v several times.
//
// The formulas are those of research/optim/rules.py, operation for operation, in the leaf's
// precision (float32 or float64); the scalars (learning rate, betas, ...) arrive as buffers already
// rounded to that precision by the Python side, e.g. `one_minus_beta1 = 1 - beta1` computed in JAX
// exactly as the pure rule computes it. Rounding matches XLA:CPU's to the bit: XLA lets LLVM
// contract a multiply feeding an add into one FMA (`AllowFPOpFusion::Fast`: "increases precision")
// when the CPU has FMA, and LLVM fuses the add's FIRST multiplied operand: `b1 * m + c1 * g`
// becomes fma(b1, m, c1 * g), `mu * v - lr * g` fma(mu, v, -(lr * g)), `c + g * g` fma(g, g, c).
// The kernels spell out exactly those FMAs (MulAdd) and are otherwise compiled with
// -ffp-contract=off; without FMA hardware (or with the `contract` attribute 0, for XLA limited to
// an ISA without FMA) they round each operation separately, as XLA then does.
//
// Call frame (attributes `rule`: name, `apply`: 0 or 1, `contract`: 0 or 1; buffers of one dtype):
//   args: S scalar buffers, then per leaf: [p (apply form only), g, state_1 .. state_K]
//   rets: per leaf: [p' (apply form) or delta (delta form, unless the delta IS state_1), state'..]
// Under jax.vmap (vmap_method="broadcast_all") every buffer gains the leading member axes: a
// scalar buffer then holds one value per member and a leaf of N elements holds N / members
// consecutive elements per member (row-major), which is how the kernel pairs them.
//
// Work is cut into chunks of kChunk elements over all leaves, claimed from an atomic counter by the
// calling thread and by tasks scheduled on XLA's intra-op thread pool (ffi::ThreadPool). The caller
// never waits for a chunk nobody has claimed, so the call finishes even when the pool runs nothing
// in parallel (a pool of one thread, or every pool thread busy).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kMaxScalars = 6;
constexpr int kMaxIn = 4;   // p, g, two state buffers
constexpr int kMaxOut = 3;  // p' or delta, two state buffers
constexpr int64_t kChunk = 1 << 15;

#if defined(__clang__)
#define TRAINLAB_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define TRAINLAB_IVDEP _Pragma("GCC ivdep")
#else
#define TRAINLAB_IVDEP
#endif

#if defined(__GNUC__)
#define TRAINLAB_INLINE inline __attribute__((always_inline))
#else
#define TRAINLAB_INLINE inline
#endif

// The FMA variant of every loop is compiled for AVX2 + FMA on x86 (chosen at run time, so the
// library itself still runs on any x86-64); other FMA architectures (aarch64) have it built in.
#if defined(__x86_64__) || defined(__i386__)
#define TRAINLAB_FMA_TARGET __attribute__((target("avx2,fma")))
#else
#define TRAINLAB_FMA_TARGET
#endif

bool CpuHasFma() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(__aarch64__)
  return true;
#else
  return false;
#endif
}

// a * b + c, rounded once (as XLA's contracted multiply-add) when kFma, else twice.
template <bool kFma, typename T>
TRAINLAB_INLINE T MulAdd(T a, T b, T c) {
  if constexpr (kFma) {
    return std::fma(a, b, c);
  } else {
    return a * b + c;
  }
}

// The rules. Each `Run` updates elements [0, n) of one member's segment: `in`/`out` point at the
// segment's first element, `s` holds that member's scalars. Reads come from `in` and writes go to
// `out`; an aliased buffer (in place) has in[k] == out[j], which is safe because every element is
// read before it is written and no element depends on another (hence the ivdep pragmas).
// kApply: out[0] = p + delta (in[0] is p); otherwise out[0] = delta.

struct Sgd {  // s: -lr.  delta = -lr * g
  static constexpr int kScalars = 1, kStates = 0;
  static constexpr bool kDeltaIsState = false;
  template <typename T, bool kApply, bool kFma>
  static TRAINLAB_INLINE void Run(int64_t n, const T* s, const T* const* in, T* const* out) {
    const T neg_lr = s[0];
    const T* g = in[kApply ? 1 : 0];
    T* o = out[0];
    if constexpr (kApply) {
      const T* p = in[0];
      TRAINLAB_IVDEP for (int64_t i = 0; i < n; ++i) o[i] = MulAdd<kFma>(neg_lr, g[i], p[i]);
    } else {
      TRAINLAB_IVDEP for (int64_t i = 0; i < n; ++i) o[i] = neg_lr * g[i];
    }
  }
};

struct Momentum {  // s: mu, lr.  v = mu * v - lr * g; delta = v  (also Nesterov's look-ahead form)
  static constexpr int kScalars = 2, kStates = 1;
  static constexpr bool kDeltaIsState = true;
  template <typename T, bool kApply, bool kFma>
  static TRAINLAB_INLINE void Run(int64_t n, const T* s, const T* const* in, T* const* out) {
    const T mu = s[0], lr = s[1];
    if constexpr (kApply) {
      const T *p = in[0], *g = in[1], *v = in[2];
      T *po = out[0], *vo = out[1];
      TRAINLAB_IVDEP for (int64_t i = 0; i < n; ++i) {
        const T vi = MulAdd<kFma>(mu, v[i], -(lr * g[i]));
        vo[i] = vi;
        po[i] = p[i] + vi;
      }
    } else {
      const T *g = in[0], *v = in[1];
      T* vo = out[0];
      TRAINLAB_IVDEP for (int64_t i = 0; i < n; ++i) vo[i] = MulAdd<kFma>(mu, v[i], -(lr * g[i]));
    }
  }
};

struct Nesterov {  // s: mu, lr.  v = mu * v - lr * g; delta = mu * v - lr * g (with the new v)
  static constexpr int kScalars = 2, kStates = 1;
  static constexpr bool kDeltaIsState = false;
  template <typename T, bool kApply, bool kFma>
  static TRAINLAB_INLINE void Run(int64_t n, const T* s, const T* const* in, T* const* out) {
    const T mu = s[0], lr = s[1];
    const T *g = in[kApply ? 1 : 0], *v = in[kApply ? 2 : 1];
    T *o = out[0], *vo = out[1];
    const T* p = kApply ? in[0] : nullptr;
    TRAINLAB_IVDEP for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i];
      const T lr_g = lr * gi;
      const T vi = MulAdd<kFma>(mu, v[i], -lr_g);
      const T delta = MulAdd<kFma>(mu, vi, -lr_g);
      vo[i] = vi;
      if constexpr (kApply) {
        o[i] = p[i] + delta;
      } else {
        o[i] = delta;
      }
    }
  }
};

struct Adagrad {  // s: -lr, eps.  c = c + g * g; delta = -lr * g / (sqrt(c) + eps)
  static constexpr int kScalars = 2, kStates = 1;
  static constexpr bool kDeltaIsState = false;
  template <typename T, bool kApply, bool kFma>
  static TRAINLAB_INLINE void Run(int64_t n, const T* s, const T* const* in, T* const* out) {
    const T neg_lr = s[0], eps = s[1];
    const T *g = in[kApply ? 1 : 0], *c = in[kApply ? 2 : 1];
    T *o = out[0], *co = out[1];
    const T* p = kApply ? in[0] : nullptr;
    TRAINLAB_IVDEP for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i];
      const T ci = MulAdd<kFma>(gi, gi, c[i]);
      const T delta = neg_lr * gi / (std::sqrt(ci) + eps);
      co[i] = ci;
      if constexpr (kApply) {
        o[i] = p[i] + delta;
      } else {
        o[i] = delta;
      }
    }
  }
};

struct Rmsprop {  // s: decay, 1 - decay, -lr, eps.
  // c = decay * c + (1 - decay) * g * g; delta = -lr * g / (sqrt(c) + eps)
  static constexpr int kScalars = 4, kStates = 1;
  static constexpr bool kDeltaIsState = false;
  template <typename T, bool kApply, bool kFma>
  static TRAINLAB_INLINE void Run(int64_t n, const T* s, const T* const* in, T* const* out) {
    const T decay = s[0], one_minus_decay = s[1], neg_lr = s[2], eps = s[3];
    const T *g = in[kApply ? 1 : 0], *c = in[kApply ? 2 : 1];
    T *o = out[0], *co = out[1];
    const T* p = kApply ? in[0] : nullptr;
    TRAINLAB_IVDEP for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i];
      const T ci = MulAdd<kFma>(decay, c[i], one_minus_decay * gi * gi);
      const T delta = neg_lr * gi / (std::sqrt(ci) + eps);
      co[i] = ci;
      if constexpr (kApply) {
        o[i] = p[i] + delta;
      } else {
        o[i] = delta;
      }
    }
  }
};

struct Adam {  // s: b1, 1 - b1, b2, 1 - b2, -step_size, eps_hat (bias corrections folded in).
  // m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g;
  // delta = -step_size * m / (sqrt(v) + eps_hat)
  static constexpr int kScalars = 6, kStates = 2;
  static constexpr bool kDeltaIsState = false;
  template <typename T, bool kApply, bool kFma>
  static TRAINLAB_INLINE void Run(int64_t n, const T* s, const T* const* in, T* const* out) {
    const T b1 = s[0], one_minus_b1 = s[1], b2 = s[2], one_minus_b2 = s[3];
    const T neg_step = s[4], eps_hat = s[5];
    const T *g = in[kApply ? 1 : 0], *m = in[kApply ? 2 : 1], *v = in[kApply ? 3 : 2];
    T *o = out[0], *mo = out[1], *vo = out[2];
    const T* p = kApply ? in[0] : nullptr;
    TRAINLAB_IVDEP for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i];
      const T mi = MulAdd<kFma>(b1, m[i], one_minus_b1 * gi);
      const T vi = MulAdd<kFma>(b2, v[i], one_minus_b2 * gi * gi);
      const T delta = neg_step * mi / (std::sqrt(vi) + eps_hat);
      mo[i] = mi;
      vo[i] = vi;
      if constexpr (kApply) {
        o[i] = p[i] + delta;
      } else {
        o[i] = delta;
      }
    }
  }
};

// One leaf's buffers and how many elements each member owns.
template <typename T>
struct Leaf {
  const T* in[kMaxIn];
  T* out[kMaxOut];
  int64_t size;
  int64_t member_size;  // elements per member: size / members
};

struct Chunk {
  int32_t leaf;
  int64_t begin, end;
};

// Shared by the calling thread and the pool tasks; a task that starts after the call returned
// finds no chunk left and touches nothing but this (kept alive by its shared_ptr).
struct Progress {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
};

// One member's segment of one leaf, rounded as XLA rounds (see MulAdd): two instantiations per
// rule, the FMA one compiled for the FMA instruction set.
template <typename T>
using SegmentFn = void (*)(int64_t n, const T* s, const T* const* in, T* const* out);

template <typename Rule, typename T, bool kApply>
TRAINLAB_FMA_TARGET void RunSegmentFma(int64_t n, const T* s, const T* const* in, T* const* out) {
  Rule::template Run<T, kApply, true>(n, s, in, out);
}

template <typename Rule, typename T, bool kApply>
void RunSegmentSeparate(int64_t n, const T* s, const T* const* in, T* const* out) {
  Rule::template Run<T, kApply, false>(n, s, in, out);
}

template <typename Rule, typename T, bool kApply>
struct Job {
  std::vector<Leaf<T>> leaves;
  std::vector<Chunk> chunks;
  SegmentFn<T> run_segment;
  // scalars[k][member]; `scalar_count[k]` is 1 (shared by all members) or the member count
  const T* scalars[kMaxScalars];
  int64_t scalar_count[kMaxScalars];

  void RunChunk(const Chunk& chunk) const {
    const Leaf<T>& leaf = leaves[chunk.leaf];
    int64_t i = chunk.begin;
    while (i < chunk.end) {
      // A chunk may straddle members (small leaves under vmap): run one member's segment at a time.
      const int64_t member = i / leaf.member_size;
      const int64_t segment_end = std::min(chunk.end, (member + 1) * leaf.member_size);
      T s[kMaxScalars];
      for (int k = 0; k < Rule::kScalars; ++k) {
        s[k] = scalars[k][scalar_count[k] == 1 ? 0 : member];
      }
      const T* in[kMaxIn];
      T* out[kMaxOut];
      for (int k = 0; k < kMaxIn; ++k) in[k] = leaf.in[k] ? leaf.in[k] + i : nullptr;
      for (int k = 0; k < kMaxOut; ++k) out[k] = leaf.out[k] ? leaf.out[k] + i : nullptr;
      run_segment(segment_end - i, s, in, out);
      i = segment_end;
    }
  }

  // Claims chunks until none is left; returns how many this thread ran.
  int64_t Work(Progress& progress) const {
    const int64_t total = static_cast<int64_t>(chunks.size());
    int64_t ran = 0;
    for (int64_t c = progress.next.fetch_add(1); c < total; c = progress.next.fetch_add(1)) {
      RunChunk(chunks[c]);
      ++ran;
    }
    return ran;
  }
};

template <typename Rule, typename T, bool kApply>
void RunParallel(std::shared_ptr<const Job<Rule, T, kApply>> job, ffi::ThreadPool& pool) {
  const int64_t total = static_cast<int64_t>(job->chunks.size());
  if (total == 0) return;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), total) - 1;
  if (helpers <= 0) {
    Progress progress;
    job->Work(progress);
    return;
  }
  auto progress = std::make_shared<Progress>();
  auto finish = [](Progress& p, int64_t ran, int64_t total) {
    if (ran > 0 && p.done.fetch_add(ran) + ran == total) {
      std::lock_guard<std::mutex> lock(p.mutex);
      p.finished.notify_all();
    }
  };
  for (int64_t h = 0; h < helpers; ++h) {
    pool.Schedule([job, progress, finish, total]() {
      finish(*progress, job->Work(*progress), total);
    });
  }
  finish(*progress, job->Work(*progress), total);
  // Every chunk is claimed by now; wait for the ones other threads are still running.
  std::unique_lock<std::mutex> lock(progress->mutex);
  progress->finished.wait(lock, [&] { return progress->done.load() == total; });
}

ffi::Error Invalid(std::string_view what, int64_t value = -1) {
  std::string message = "trainlab fused update: " + std::string(what);
  if (value >= 0) message += " " + std::to_string(value);
  return ffi::Error::InvalidArgument(message);
}

template <typename Rule, typename T, bool kApply>
ffi::Error RunRule(ffi::ThreadPool& pool, bool contract, ffi::RemainingArgs args,
                   ffi::RemainingRets rets) {
  constexpr int kIn = (kApply ? 2 : 1) + Rule::kStates;
  constexpr int kOut = (kApply || !Rule::kDeltaIsState ? 1 : 0) + Rule::kStates;
  constexpr ffi::DataType kType =
      std::is_same_v<T, float> ? ffi::DataType::F32 : ffi::DataType::F64;
  const int64_t num_args = static_cast<int64_t>(args.size());
  const int64_t num_rets = static_cast<int64_t>(rets.size());
  if (num_args < Rule::kScalars || (num_args - Rule::kScalars) % kIn != 0) {
    return Invalid("bad argument count", num_args);
  }
  const int64_t num_leaves = (num_args - Rule::kScalars) / kIn;
  if (num_rets != num_leaves * kOut) {
    return Invalid("bad result count", num_rets);
  }

  auto job = std::make_shared<Job<Rule, T, kApply>>();
  static const bool has_fma = CpuHasFma();
  job->run_segment = contract && has_fma ? &RunSegmentFma<Rule, T, kApply>
                                         : &RunSegmentSeparate<Rule, T, kApply>;
  int64_t members = 1;
  for (int k = 0; k < Rule::kScalars; ++k) {
    auto scalar = args.get<ffi::AnyBuffer>(k);
    if (!scalar.has_value()) return scalar.error();
    if (scalar->element_type() != kType) {
      return Invalid("a scalar's dtype differs from the leaves'");
    }
    job->scalars[k] = reinterpret_cast<const T*>(scalar->untyped_data());
    job->scalar_count[k] = static_cast<int64_t>(scalar->element_count());
    members = std::max(members, job->scalar_count[k]);
  }
  for (int k = 0; k < Rule::kScalars; ++k) {
    if (job->scalar_count[k] != 1 && job->scalar_count[k] != members) {
      return Invalid("the scalars disagree on the member count");
    }
  }

  job->leaves.reserve(num_leaves);
  for (int64_t l = 0; l < num_leaves; ++l) {
    Leaf<T> leaf{};
    int64_t size = -1;
    for (int k = 0; k < kIn; ++k) {
      auto buffer = args.get<ffi::AnyBuffer>(Rule::kScalars + l * kIn + k);
      if (!buffer.has_value()) return buffer.error();
      if (buffer->element_type() != kType) {
        return Invalid("a buffer of another dtype at leaf", l);
      }
      const int64_t count = static_cast<int64_t>(buffer->element_count());
      if (size >= 0 && count != size) {
        return Invalid("buffers of different sizes at leaf", l);
      }
      size = count;
      leaf.in[k] = reinterpret_cast<const T*>(buffer->untyped_data());
    }
    for (int k = 0; k < kOut; ++k) {
      auto buffer = rets.get<ffi::AnyBuffer>(l * kOut + k);
      if (!buffer.has_value()) return buffer.error();
      if ((*buffer)->element_type() != kType ||
          static_cast<int64_t>((*buffer)->element_count()) != size) {
        return Invalid("a result of another dtype or size at leaf", l);
      }
      leaf.out[k] = reinterpret_cast<T*>((*buffer)->untyped_data());
    }
    if (size % members != 0) {
      return Invalid("a size not a multiple of the member count at leaf", l);
    }
    leaf.size = size;
    leaf.member_size = size / members;
    job->leaves.push_back(leaf);
  }

  for (int64_t l = 0; l < num_leaves; ++l) {
    for (int64_t begin = 0; begin < job->leaves[l].size; begin += kChunk) {
      job->chunks.push_back(
          {static_cast<int32_t>(l), begin, std::min(job->leaves[l].size, begin + kChunk)});
    }
  }
  RunParallel<Rule, T, kApply>(job, pool);
  return ffi::Error::Success();
}

template <typename Rule>
ffi::Error Dispatch(ffi::ThreadPool& pool, bool apply, bool contract, ffi::RemainingArgs args,
                    ffi::RemainingRets rets) {
  if (args.size() <= static_cast<size_t>(Rule::kScalars)) {
    return Rule::kScalars == 0 || args.size() == static_cast<size_t>(Rule::kScalars)
               ? ffi::Error::Success()  // no leaves
               : Invalid("too few arguments");
  }
  auto first = args.get<ffi::AnyBuffer>(0);
  if (!first.has_value()) return first.error();
  switch (first->element_type()) {
    case ffi::DataType::F32:
      return apply ? RunRule<Rule, float, true>(pool, contract, args, rets)
                   : RunRule<Rule, float, false>(pool, contract, args, rets);
    case ffi::DataType::F64:
      return apply ? RunRule<Rule, double, true>(pool, contract, args, rets)
                   : RunRule<Rule, double, false>(pool, contract, args, rets);
    default:
      return Invalid("only float32 and float64 buffers");
  }
}

ffi::Error FusedUpdate(ffi::ThreadPool pool, std::string_view rule, int64_t apply,
                       int64_t contract, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  const bool in_place = apply != 0, fma = contract != 0;
  if (rule == "sgd") return Dispatch<Sgd>(pool, in_place, fma, args, rets);
  if (rule == "momentum") return Dispatch<Momentum>(pool, in_place, fma, args, rets);
  if (rule == "nesterov") return Dispatch<Nesterov>(pool, in_place, fma, args, rets);
  if (rule == "adagrad") return Dispatch<Adagrad>(pool, in_place, fma, args, rets);
  if (rule == "rmsprop") return Dispatch<Rmsprop>(pool, in_place, fma, args, rets);
  if (rule == "adam") return Dispatch<Adam>(pool, in_place, fma, args, rets);
  return Invalid("unknown rule " + std::string(rule));
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TrainlabFusedUpdate, FusedUpdate,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Attr<std::string_view>("rule")
                                  .Attr<int64_t>("apply")
                                  .Attr<int64_t>("contract")
                                  .RemainingArgs()
                                  .RemainingRets());

// Bumped when the call frame above changes; the Python side refuses a library of another version
// (a stale build from an older checkout) and falls back to pure JAX.
extern "C" int64_t TrainlabFusedAbiVersion() { return 2; }
